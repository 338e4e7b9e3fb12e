"""The `plan` config node's schema (defaults: conf/plan/default.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import MISSING


@dataclass
class PlanConfig:
    gpu: str = MISSING  # auto | cpu | a name in harness.plan.gpus.GPUS
    gpu_memory_gb: Optional[float] = MISSING  # GiB per device; overrides the table
    world_size: Optional[int] = MISSING  # processes of one trial; null: launcher tasks_per_node x nodes, else 1
    mfu: float = MISSING  # assumed model FLOP utilisation
    reserve_gb: float = MISSING  # GPU: CUDA context, NCCL, allocator fragmentation (GiB per GPU)
    vllm_overhead_gb: float = MISSING  # GPU: vLLM's own activations and sampler inside its share (GiB)
    cpu_baseline_gb: float = MISSING  # CPU: resident memory of the runtime itself (GiB)
    prompt_tokens: Optional[int] = MISSING  # prompt length assumed; null: trainer.max_prompt_tokens
    check: bool = MISSING  # the SLURM launcher refuses a sweep whose trials don't fit (false: submit anyway)


def register_schema(cs) -> None:
    """Store the schema as `schema/plan` (conf/plan/default.yaml names it in its defaults list)."""
    cs.store(group="schema", name="plan", node=PlanConfig)
