"""Check every config value before any work: one line naming the key and the allowed values.

`validate(cfg)` raises ConfigError; the entry point prints its message alone (no traceback) and
exits with status 2. Types were already checked by the schemas (harness.config) at compose time.
A variant picked by name (task, rollout backend, KL estimator, loss aggregation, diagnostic,
logger, distributed strategy) is checked by its registry: the name, then the entry's own checks.
"""

from __future__ import annotations

from typing import Any

import torch

from harness.algo.grpo import KL_ESTIMATORS, LOSS_AGG
from harness.errors import ConfigError, check as _check  # noqa: F401 - ConfigError re-exported


def validate_trainer(t: Any) -> None:
    from harness.measure.diagnostics import validate_names
    from harness.objectives import OBJECTIVES
    from harness.reference import INITIAL_WEIGHTS

    OBJECTIVES.validate(t.objective, t)
    for key in ("steps", "prompts_per_step", "max_new_tokens", "max_prompt_tokens", "micro_batch_size",
                "eval_batch_size", "eval_max_new_tokens", "diagnostics_chunk_numel",
                "diagnostics_block_numel"):
        _check(t[key] >= 1, f"trainer.{key}", t[key], "must be >= 1")
    _check(0 <= t.min_new_tokens <= t.max_new_tokens, "trainer.min_new_tokens", t.min_new_tokens,
           f"must be in [0, trainer.max_new_tokens={t.max_new_tokens}]")
    _check(t.group_size >= 2, "trainer.group_size", t.group_size,
           "must be >= 2 (GRPO normalises rewards within a group)")
    _check(t.temperature > 0, "trainer.temperature", t.temperature, "must be > 0 for sampling (eval is greedy)")
    _check(0 < t.top_p <= 1, "trainer.top_p", t.top_p, "must be in (0, 1]")
    _check(t.clip_ratio > 0, "trainer.clip_ratio", t.clip_ratio, "must be > 0")
    _check(t.kl_coef >= 0, "trainer.kl_coef", t.kl_coef, "must be >= 0 (0 turns the KL term off)")
    KL_ESTIMATORS.validate(t.kl_estimator)
    LOSS_AGG.validate(t.loss_agg)
    validate_names(t.diagnostics)
    _check(t.grad_clip >= 0, "trainer.grad_clip", t.grad_clip, "must be >= 0 (0 turns clipping off)")
    _check(t.max_consecutive_skips >= 0, "trainer.max_consecutive_skips", t.max_consecutive_skips, "must be >= 0")
    _check(t.eval_every >= 0, "trainer.eval_every", t.eval_every, "must be >= 0 (0: eval only before and after)")
    _check(t.initial_weights in INITIAL_WEIGHTS, "trainer.initial_weights", t.initial_weights,
           f"allowed values are {', '.join(INITIAL_WEIGHTS)}")
    _check(0 < t.rank_energy <= 1, "trainer.rank_energy", t.rank_energy, "must be in (0, 1]")
    _check(t.checkpoint_every >= 0, "trainer.checkpoint_every", t.checkpoint_every, "must be >= 0 (0: only on signal)")
    _check(t.log_completions >= 0, "trainer.log_completions", t.log_completions, "must be >= 0")


def validate_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device={device!r}: allowed values are auto, cpu, cuda, cuda:N") from None
    _check(dev.type in ("cpu", "cuda"), "device", device, "allowed values are auto, cpu, cuda, cuda:N")
    _check(dev.type != "cuda" or torch.cuda.is_available(), "device", device, "CUDA is not available here")
    return dev


def validate(cfg: Any) -> torch.device:
    """All checks, cheapest first. Returns the torch device to use."""
    from harness.loggers import LOGGERS
    from harness.models import validate as validate_model
    from harness.optim import validate_optimizer
    from harness.parallel import STRATEGIES
    from harness.prune import validate_prune
    from harness.rollout import ROLLOUTS
    from harness.tasks import TASKS

    try:
        validate_model(cfg.model)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    validate_optimizer(cfg.optimizer)
    validate_trainer(cfg.trainer)
    TASKS.validate(cfg.task.name, cfg.task)
    ROLLOUTS.validate(cfg.rollout.backend, cfg.rollout)
    LOGGERS.validate(cfg.logger.backend, cfg.logger)
    STRATEGIES.validate(cfg.distributed.strategy, cfg)
    validate_prune(cfg.prune)
    _check(cfg.seed >= 0, "seed", cfg.seed, "must be >= 0")
    _check(isinstance(cfg.threads, int) and cfg.threads >= 0, "threads", cfg.threads, "must be >= 0 (0 = torch's default)")
    _check(isinstance(cfg.malloc_retain, bool), "malloc_retain", cfg.malloc_retain, "allowed values are true, false")
    return validate_device(cfg.device)
