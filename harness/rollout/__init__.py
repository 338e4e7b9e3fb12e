"""Rollout backends by name (`rollout.backend`): each registers how it is built and checked.

    python -m harness rollout=hf      transformers generate() on the policy's own weights
    python -m harness rollout=vllm    a colocated vLLM engine, weights synced in place after each step

`build_rollout(cfg.rollout, ...)` gives an object with the `harness.rollout.base.Rollout` interface.
Each entry also brings its plan (`plan=`, harness.rollout.plan): the memory and FLOPs the planner
(harness.plan) counts for it, so a new backend is planned without the planner knowing its name.
"""

from __future__ import annotations

from typing import Any

import torch

from harness.errors import ConfigError, check
from harness.registry import Registry
from harness.rollout.plan import HFPlan, VLLMPlan

ROLLOUTS: Registry = Registry("rollout.backend")


GENERATION_DTYPES = ("bfloat16", "float16", "float32")


def _check_hf(cfg: Any) -> None:
    check(cfg.batch_size >= 0, "rollout.batch_size", cfg.batch_size, "must be >= 0 (0: the whole step at once)")
    check(cfg.generation_dtype is None or cfg.generation_dtype in GENERATION_DTYPES, "rollout.generation_dtype",
          cfg.generation_dtype, f"allowed values are null, {', '.join(GENERATION_DTYPES)}")


@ROLLOUTS.register("hf", validate=_check_hf, plan=HFPlan.from_config)
def _hf(cfg: Any, *, model: torch.nn.Module, tokenizer: Any, model_dir: str, compute_dtype: torch.dtype,
        seed: int, device: torch.device):
    from harness.rollout.hf import HFRollout

    gen_dtype = None if cfg.generation_dtype is None else getattr(torch, cfg.generation_dtype)
    return HFRollout(model, tokenizer.eos_token_id, tokenizer.pad_token_id, compute_dtype, cfg.batch_size,
                     share_prefill=cfg.share_prefill, generation_dtype=gen_dtype)


def _check_vllm(cfg: Any) -> None:
    from harness.rollout.vllm_check import require_vllm

    try:
        require_vllm()
    except ImportError as e:
        raise ConfigError(str(e)) from None


@ROLLOUTS.register("vllm", validate=_check_vllm, plan=VLLMPlan.from_config)
def _vllm(cfg: Any, *, model: torch.nn.Module, tokenizer: Any, model_dir: str, compute_dtype: torch.dtype,
          seed: int, device: torch.device):
    from harness.rollout.vllm import VLLMRollout

    return VLLMRollout(cfg, model_dir, seed, device, eos_token_id=tokenizer.eos_token_id)


def build_rollout(cfg: Any, **kwargs: Any):
    return ROLLOUTS.build(cfg.backend, cfg, **kwargs)
