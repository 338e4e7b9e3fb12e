"""The planner's arithmetic: pure functions from shapes and settings to bytes, FLOPs and seconds.

Memory is per device (GPU, or the CPU process), in three phases whose peaks are checked:
- rollout: the persistent tensors (weights, optimizer state, reference) + the generation engine
  (the rollout backend's own terms: its plan, harness.rollout.plan, in `x.rollout`);
- update, forward/backward of one micro-batch: + gradients + activations + logits (+ FSDP2's
  gathered parameters and unsharded gradients, or autocast's bf16 weight copies without FSDP2);
- update, optimizer step: + gradients + the step's temporaries.
FSDP2 shards weights, gradients, optimizer state and the reference over the world size.

Activation factors (bytes saved for backward per token, per hidden unit, per decoder layer) were
measured on transformers' Llama and Qwen3 layers (SDPA attention) with
torch.autograd.graph.saved_tensors_hooks, full sequences, intermediate_size = 2.67 or 3 x hidden:
  fp32 weights + bf16 autocast (fp32 residual stream): Llama 68.7, Qwen3 81.2;
  bf16 weights (FSDP2's gathered parameters):          Llama 42.7, Qwen3 55.2;
  with gradient checkpointing each layer keeps only its input (4 or 2 bytes), plus one layer's
  full activations while it is recomputed.
The part proportional to intermediate_size is 8 bytes per unit; the rest scales with hidden.
Logits: token_logprobs computes them in chunks, but autograd keeps every chunk's fp32 logits for
the backward: 8 B (autocast) or 4 B (bf16) per completion token per vocabulary entry.
Attention scores are not counted (flash / memory-efficient SDPA kernels on GPU).

FLOPs: 6 x params x tokens for forward + backward (x 4/3 with checkpointing: the forward runs
twice), 2 x params x tokens for the reference forward; the rollout's from its backend's plan (2 x
params for each generated or prefilled token);
attention's own FLOPs are left out (small at these lengths next to the weights).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

GIB = 1024 ** 3
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# bytes per token per hidden unit per layer, without the intermediate_size part (8 B per unit)
ACT_PER_HIDDEN = {("autocast", False): 68.7 - 8 * 1536 / 576, ("autocast", True): 81.2 - 8 * 3.0,
                  ("bf16", False): 42.7 - 8 * 1536 / 576, ("bf16", True): 55.2 - 8 * 3.0}
LOGIT_BYTES = {"autocast": 8, "bf16": 4}


@dataclass(frozen=True)
class Inputs:
    # model
    params: int
    layer_params: int
    root_params: int
    matmul_params: int
    largest_tensor: int
    vocab: int
    hidden: int
    intermediate: int
    layers: int
    kv_dim: int
    qk_norm: bool
    param_bytes: int  # master weights (model.param_dtype)
    compute_bytes: int  # model.dtype
    reference_bytes: int  # the kept initial weights per param (2 when the published weights are bf16 and compute is bf16; 0 read back from the checkpoint)
    optimizer_bytes: float  # state of the whole model
    optimizer_foreach: bool  # a step over all tensors at once (CUDA Adam/AdamW): one state-sized temporary
    # run
    world: int
    fsdp: bool
    checkpointing: bool
    autocast: bool  # compute dtype differs from the weights' (no FSDP2): bf16 weight copies, fp32 residual
    device_kind: str  # cuda | cpu
    prompts_per_step: int
    group_size: int
    prompt_tokens: int
    new_tokens: int
    micro_batch: int  # sequences per forward/backward
    kl: bool
    diag_chunk: int  # entries of old weights a diagnostic keeps during the step (0: none)
    # rollout: the backend's plan (harness.rollout.plan.RolloutPlan, its registry entry's `plan`)
    rollout: Any
    # device
    memory_bytes: float = 0.0
    reserve_bytes: float = 0.0  # GPU context etc., or the CPU runtime's baseline RSS
    peak_flops: Optional[float] = None
    mfu: float = 0.4


@dataclass
class Phase:
    name: str
    terms: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.terms.values())

    def biggest(self) -> tuple[str, float]:
        return max(self.terms.items(), key=lambda kv: kv[1])


def persistent(x: Inputs) -> dict[str, float]:
    """Weights, optimizer state and reference per device: sharded by FSDP2 over the world size."""
    w = x.world if x.fsdp else 1
    return {"parameters": x.params * x.param_bytes / w,
            "optimizer state": x.optimizer_bytes / w,
            "reference weights": x.params * x.reference_bytes / w}


def gradients(x: Inputs) -> float:
    return x.params * x.param_bytes / (x.world if x.fsdp else 1)


def micro_batch_tokens(x: Inputs) -> tuple[int, int]:
    """(tokens through the decoder, completion tokens) of one micro-batch, at the longest lengths.
    Without checkpointing the trainer runs each prompt once per group (shared KV prefix)."""
    seqs = max(x.micro_batch, x.group_size)  # whole groups
    completion = seqs * x.new_tokens
    if x.checkpointing:
        return seqs * (x.prompt_tokens + x.new_tokens), completion
    return (seqs // x.group_size) * x.prompt_tokens + completion, completion


def activations(x: Inputs) -> float:
    """Bytes saved for backward by the decoder layers for one micro-batch."""
    path = "autocast" if x.autocast else "bf16"
    per_token_layer = ACT_PER_HIDDEN[(path, x.qk_norm)] * x.hidden + 8 * x.intermediate  # bytes
    tokens, _ = micro_batch_tokens(x)
    if x.checkpointing:
        resid = 4 if x.autocast else 2
        return tokens * x.hidden * resid * x.layers + tokens * per_token_layer  # inputs + one recomputed layer
    seqs = max(x.micro_batch, x.group_size)
    shared_kv = seqs * x.prompt_tokens * 2 * x.kv_dim * x.compute_bytes * x.layers  # the prefix's K/V per completion
    return tokens * per_token_layer * x.layers + shared_kv


def logits(x: Inputs) -> float:
    _, completion = micro_batch_tokens(x)
    return completion * x.vocab * LOGIT_BYTES["autocast" if x.autocast else "bf16"]


def forward_backward_extra(x: Inputs) -> dict[str, float]:
    """What lives only while a micro-batch runs: FSDP2's gathered weights or autocast's copies."""
    if x.fsdp:
        gathered = (x.root_params + 2 * x.layer_params) * x.compute_bytes  # root group + a layer and its prefetch
        unsharded_grads = (x.root_params + x.layer_params) * 4  # before reduce-scatter (reduce dtype fp32)
        return {"FSDP2 gathered weights and unsharded gradients": gathered + unsharded_grads}
    if x.autocast:
        return {"autocast bf16 weight copies": x.matmul_params * x.compute_bytes}
    return {}


def step_temporaries(x: Inputs) -> float:
    w = x.world if x.fsdp else 1
    if x.optimizer_foreach and x.device_kind == "cuda":
        return x.params * x.param_bytes / w
    return x.largest_tensor * x.param_bytes / w


def engine(x: Inputs) -> dict[str, float]:
    """The generation engine's memory per device during the rollout (the backend's plan says)."""
    return x.rollout.engine(x)


def phases(x: Inputs) -> list[Phase]:
    base = {**persistent(x), ("runtime baseline" if x.device_kind == "cpu" else "reserve (CUDA context, NCCL, fragmentation)"): x.reserve_bytes}
    held = x.rollout.held_in_update(x)  # e.g. a vLLM engine that does not sleep
    rollout = Phase("rollout", {**base, **engine(x)})
    fb = Phase("update: forward/backward", {**base, **held, "gradients": gradients(x),
                                            "activations" + (" (checkpointed)" if x.checkpointing else ""): activations(x),
                                            "logits (fp32, kept for backward)": logits(x), **forward_backward_extra(x)})
    step_terms = {**base, **held, "gradients": gradients(x), "optimizer step temporaries": step_temporaries(x)}
    if x.diag_chunk:
        step_terms["diagnostics (old weights, one chunk)"] = x.diag_chunk * x.param_bytes
    return [rollout, fb, Phase("update: optimizer step", step_terms)]


@dataclass(frozen=True)
class Flops:
    train_tokens: int  # through the decoder per step, all ranks
    generated_tokens: int
    prompt_tokens: int
    update: float
    reference: float
    rollout: float

    @property
    def total(self) -> float:
        return self.update + self.reference + self.rollout


def step_flops(x: Inputs) -> Flops:
    P, G = x.prompts_per_step, x.group_size
    generated = P * G * x.new_tokens
    prompts = P * x.prompt_tokens
    train = P * G * (x.prompt_tokens + x.new_tokens) if x.checkpointing else prompts + generated
    update = 6 * x.params * train * (4 / 3 if x.checkpointing else 1)
    reference = 2 * x.params * train if x.kl else 0.0
    return Flops(train, generated, prompts, update, reference, x.rollout.flops(x))


def step_seconds(x: Inputs, flops: Flops) -> Optional[float]:
    """At x.mfu of the devices' bf16 peak; None without a FLOP/s figure. Decoding is memory-bound:
    the rollout share of this estimate is optimistic."""
    if not x.peak_flops:
        return None
    return flops.total / (x.world * x.peak_flops * x.mfu)


def fit(x: Inputs) -> tuple[bool, Phase, list[Phase]]:
    """(fits, the phase with the highest peak, all phases); the rollout backend's plan can refuse a
    trial whose peaks fit (vLLM: a KV cache too small for rollout.max_model_len)."""
    ps = phases(x)
    worst = max(ps, key=lambda p: p.total)
    ok = worst.total <= x.memory_bytes and x.rollout.problem(x) is None
    return ok, worst, ps
