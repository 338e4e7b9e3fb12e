"""What a rollout backend costs, for the planner: its memory per device and its FLOPs per step.

    python -m harness.plan rollout=vllm plan.gpu=h100-80gb model=qwen3-1.7b

Each backend registers its plan with its builder (`ROLLOUTS.register(name, plan=...)`, harness.rollout),
so a new backend brings its own plan and the planner (harness.plan) never asks which backend it has.
`plan=` is a factory `(cfg.rollout, cfg.plan, device, max_positions) -> RolloutPlan`; the plan is a
frozen dataclass of the backend's own settings (so equal plans compare equal), and its methods read
the planner's inputs `x` (harness.plan.estimate.Inputs: the model's shapes, the run, the device).
This module imports nothing of the planner: the planner imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

GIB = 1024 ** 3


def kv_bytes_per_token(x: Any) -> float:
    """2 (K and V) x layers x kv_heads x head_dim x dtype bytes."""
    return 2 * x.layers * x.kv_dim * x.compute_bytes


def _gib(b: float) -> str:
    return f"{b / GIB:.2f} GiB"


@dataclass(frozen=True)
class RolloutPlan:
    """The defaults: generation with the policy's own weights, nothing held outside the rollout."""

    def engine(self, x: Any) -> dict[str, float]:
        """Memory terms of the generation engine during the rollout, per device."""
        return {}

    def held_in_update(self, x: Any) -> dict[str, float]:
        """Memory terms the engine keeps during the update (forward/backward and optimizer step)."""
        return {}

    def flops(self, x: Any) -> float:
        """Rollout FLOPs per step: 2 x params for each generated or prefilled token."""
        generated = x.prompts_per_step * x.group_size * x.new_tokens
        return 2 * x.params * (generated + x.prompts_per_step * x.prompt_tokens)

    def problem(self, x: Any) -> Optional[str]:
        """Why the trial cannot run although every phase's peak fits (one line), or None."""
        return None

    def notes(self, x: Any) -> list[str]:
        """Lines the plan's report adds about the engine."""
        return []


@dataclass(frozen=True)
class HFPlan(RolloutPlan):
    """rollout=hf: transformers generate() on the policy's weights: the KV cache and the last logits."""

    @classmethod
    def from_config(cls, cfg_rollout: Any, cfg_plan: Any, device: Any, max_positions: int) -> "HFPlan":
        return cls()

    def engine(self, x: Any) -> dict[str, float]:
        per_rank = max(1, x.prompts_per_step // x.world) * x.group_size
        kv = per_rank * (x.prompt_tokens + x.new_tokens) * 2 * x.kv_dim * x.layers * x.compute_bytes
        return {"generate KV cache": kv, "generate logits": per_rank * x.vocab * 4}


@dataclass(frozen=True)
class VLLMPlan(RolloutPlan):
    """rollout=vllm: a colocated engine. GPU: a share of memory (weights + KV cache + vLLM's own
    overhead), held during the update unless it sleeps; CPU: its weights + kv_cache_space_gb."""

    share_bytes: float  # GPU: gpu_memory_utilization x memory; CPU: the KV space
    tp: int  # tensor_parallel_size
    sleep: bool  # enable_sleep_mode on a GPU: freed during the update
    overhead_bytes: float  # GPU: vLLM's activations, sampler and graphs inside its share (plan.vllm_overhead_gb)
    max_model_len: int  # capped at the model's max_position_embeddings
    gpu: bool

    @classmethod
    def from_config(cls, cfg_rollout: Any, cfg_plan: Any, device: Any, max_positions: int) -> "VLLMPlan":
        gpu = device.kind == "cuda"
        share = float(cfg_rollout.gpu_memory_utilization) * device.memory_bytes if gpu \
            else float(cfg_rollout.kv_cache_space_gb) * GIB
        return cls(share_bytes=share, tp=int(cfg_rollout.get("tensor_parallel_size") or 1),
                   sleep=bool(cfg_rollout.get("enable_sleep_mode")) and gpu,
                   overhead_bytes=float(cfg_plan.vllm_overhead_gb) * GIB,
                   max_model_len=min(int(cfg_rollout.get("max_model_len") or 0), max_positions), gpu=gpu)

    def engine(self, x: Any) -> dict[str, float]:
        if self.gpu:
            return {"vLLM (weights + KV cache, gpu_memory_utilization)": self.share_bytes}
        return {"vLLM weights": x.params * x.compute_bytes, "vLLM KV cache (kv_cache_space_gb)": self.share_bytes}

    def held_in_update(self, x: Any) -> dict[str, float]:
        return {} if self.sleep else self.engine(x)

    def kv(self, x: Any) -> tuple[float, int]:
        """(KV cache bytes per GPU, tokens it holds) inside vLLM's share (GPU)."""
        weights = x.params * x.compute_bytes / self.tp
        kv = self.share_bytes - weights - self.overhead_bytes
        per_token = kv_bytes_per_token(x) / self.tp
        return kv, int(max(0.0, kv) // per_token)

    def problem(self, x: Any) -> Optional[str]:
        if not self.gpu:
            return None
        kv, tokens = self.kv(x)
        if tokens >= self.max_model_len:
            return None
        return (f"vLLM's KV cache holds {tokens} tokens ({max(kv, 0) / GIB:.1f} GiB), fewer than "
                f"rollout.max_model_len={self.max_model_len}; raise rollout.gpu_memory_utilization or "
                f"rollout.tensor_parallel_size")

    def notes(self, x: Any) -> list[str]:
        if not self.gpu:
            return []
        kv, tokens = self.kv(x)
        return [f"  vLLM per GPU: share {_gib(self.share_bytes)} = weights {_gib(x.params * x.compute_bytes / self.tp)} "
                f"(TP {self.tp}) + overhead {_gib(self.overhead_bytes)} + KV cache {_gib(max(kv, 0))} = {tokens} tokens "
                f"at {kv_bytes_per_token(x) / self.tp / 1024:.0f} KiB/token (max_model_len {self.max_model_len}); "
                f"sleep mode {'on: freed during the update' if self.sleep else 'off: held during the update'}"]
