"""Check every config value before any work: one line naming the key and the allowed values.

`validate(cfg)` raises ConfigError; the entry point prints its message alone (no traceback) and
exits with status 2. Types were already checked by the schemas (harness.config) at compose time.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import torch

from harness.algo.grpo import KL_ESTIMATORS, LOSS_AGG


from harness.errors import ConfigError, check as _check  # noqa: F401 - ConfigError re-exported


def optimizer_class(cfg_opt: Any) -> type:
    target = cfg_opt.get("_target_")
    _check(isinstance(target, str) and "." in target, "optimizer._target_", target,
           "must name an optimizer class, e.g. torch.optim.SGD")
    mod, _, name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError):
        raise ConfigError(f"optimizer._target_={target!r}: cannot import it "
                          "(allowed: any torch.optim class, e.g. torch.optim.SGD, or an importable optimizer)") from None
    _check(inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer), "optimizer._target_", target,
           "must be a torch.optim.Optimizer subclass")
    return cls


def optimizer_kwargs(cfg_opt: Any) -> dict:
    return {k: (list(v) if hasattr(v, "__len__") and not isinstance(v, str) else v)
            for k, v in cfg_opt.items() if not k.startswith("_") and k != "name"}


def validate_optimizer(cfg_opt: Any) -> None:
    cls = optimizer_class(cfg_opt)
    kwargs = optimizer_kwargs(cfg_opt)
    lr = kwargs.get("lr")
    _check(isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr > 0, "optimizer.lr", lr,
           "must be a number > 0")
    if "momentum" in kwargs:
        m = kwargs["momentum"]
        _check(isinstance(m, (int, float)) and 0 <= m < 1, "optimizer.momentum", m, "must be in [0, 1)")
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "params"}
    for k in kwargs:
        _check(k in accepted, f"optimizer.{k}", kwargs[k],
               f"is not an argument of {cls.__name__}; allowed: {', '.join(sorted(accepted))}")
    try:  # the class's own checks (e.g. nesterov needs momentum) on a dummy parameter
        cls([torch.nn.Parameter(torch.zeros(1))], **kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"optimizer ({cls.__name__}): {e}") from None


def validate_trainer(t: Any) -> None:
    for key in ("steps", "prompts_per_step", "max_new_tokens", "max_prompt_tokens", "micro_batch_size",
                "eval_batch_size", "eval_max_new_tokens"):
        _check(t[key] >= 1, f"trainer.{key}", t[key], "must be >= 1")
    _check(t.group_size >= 2, "trainer.group_size", t.group_size,
           "must be >= 2 (GRPO normalises rewards within a group)")
    _check(t.temperature > 0, "trainer.temperature", t.temperature, "must be > 0 for sampling (eval is greedy)")
    _check(0 < t.top_p <= 1, "trainer.top_p", t.top_p, "must be in (0, 1]")
    _check(t.clip_ratio > 0, "trainer.clip_ratio", t.clip_ratio, "must be > 0")
    _check(t.kl_coef >= 0, "trainer.kl_coef", t.kl_coef, "must be >= 0 (0 turns the KL term off)")
    _check(t.kl_estimator in KL_ESTIMATORS, "trainer.kl_estimator", t.kl_estimator,
           f"allowed values are {sorted(KL_ESTIMATORS)}")
    _check(t.loss_agg in LOSS_AGG, "trainer.loss_agg", t.loss_agg, f"allowed values are {list(LOSS_AGG)}")
    _check(t.grad_clip >= 0, "trainer.grad_clip", t.grad_clip, "must be >= 0 (0 turns clipping off)")
    _check(t.max_consecutive_skips >= 0, "trainer.max_consecutive_skips", t.max_consecutive_skips, "must be >= 0")
    _check(t.eval_every >= 0, "trainer.eval_every", t.eval_every, "must be >= 0 (0: eval only before and after)")
    _check(0 < t.rank_energy <= 1, "trainer.rank_energy", t.rank_energy, "must be in (0, 1]")
    _check(t.checkpoint_every >= 0, "trainer.checkpoint_every", t.checkpoint_every, "must be >= 0 (0: only on signal)")
    _check(t.log_completions >= 0, "trainer.log_completions", t.log_completions, "must be >= 0")


def validate_task(task: Any) -> None:
    from harness.tasks import VERIFIERS

    _check(task.name in VERIFIERS, "task.name", task.name, f"allowed values are {sorted(VERIFIERS)}")
    _check(task.verify_timeout_s > 0, "task.verify_timeout_s", task.verify_timeout_s, "must be > 0")
    _check("{question}" in task.prompt_template, "task.prompt_template", task.prompt_template,
           "must contain {question}")
    _check(task.num_eval >= 1, "task.num_eval", task.num_eval, "must be >= 1")
    if task.name == "arithmetic":
        _check(task.num_train >= 1, "task.num_train", task.num_train, "must be >= 1")
        _check(task.min_value <= task.max_value, "task.max_value", task.max_value,
               f"must be >= task.min_value={task.min_value}")
        bad = [o for o in task.ops if o not in ("+", "-", "*")]
        _check(bool(task.ops) and not bad, "task.ops", list(task.ops), "allowed values are ['+', '-', '*']")
    if task.name == "math":
        _check(bool(task.path), "task.path", task.path, "must name a .jsonl/.parquet file or a dataset")


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
    from harness.models import validate as validate_model

    validate_model(cfg.model)
    validate_optimizer(cfg.optimizer)
    validate_trainer(cfg.trainer)
    validate_task(cfg.task)
    _check(cfg.rollout.backend in ("hf", "vllm"), "rollout.backend", cfg.rollout.backend, "allowed values are hf, vllm")
    if cfg.rollout.backend == "vllm":
        from harness.rollout.vllm_check import require_vllm

        try:
            require_vllm()
        except Exception as e:  # noqa: BLE001 - its message is the one line to show
            raise ConfigError(str(e)) from None
    _check(cfg.logger.backend in ("none", "wandb"), "logger.backend", cfg.logger.backend, "allowed values are none, wandb")
    if cfg.logger.backend == "wandb":
        _check(cfg.logger.wandb.mode in ("offline", "online", "disabled"), "logger.wandb.mode",
               cfg.logger.wandb.mode, "allowed values are offline, online, disabled")
    _check(cfg.seed >= 0, "seed", cfg.seed, "must be >= 0")
    _check(isinstance(cfg.threads, int) and cfg.threads >= 0, "threads", cfg.threads, "must be >= 0 (0 = torch's default)")
    _check(isinstance(cfg.malloc_retain, bool), "malloc_retain", cfg.malloc_retain, "allowed values are true, false")
    return validate_device(cfg.device)
