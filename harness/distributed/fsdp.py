"""FSDP2 on a Hugging Face causal LM, in one place: `apply_fsdp2(model, cfg_dist, mesh, ...)`.

    torchrun --nproc-per-node 2 -m harness model=tiny distributed=fsdp2

Layout (as torchtitan's, adapted to how the harness calls the model):
- `fully_shard` on each decoder layer (`model.get_decoder().layers`), resharded after forward
  when `distributed.reshard_after_forward` (ZeRO-3; false keeps them gathered until backward);
- one group `fully_shard([decoder, lm_head])` for what is left: the embedding, the final norm and
  the head. Tied embeddings (lm_head.weight IS embed_tokens.weight, as in SmolLM2 and the tiny
  model) are one parameter in one group, so they stay tied. This group is not resharded after
  forward: the head is used right after the decoder and first in backward;
- `fully_shard(model)` as the root (no parameters of its own), lazily initialised here, at once.

Why the group and the early root init: harness.algo.logprobs does not call `model(...)`; it calls
the decoder (`model.model`, once or twice with the shared-prefix KV cache) and then the head
(`lm_head`, once per chunk of rows). The root's forward hooks never fire on that path, so
parameters owned by the root would stay sharded and the embedding would fail. With the group,
the decoder's and the head's own hooks gather them; with the root initialised now, every FSDP
state shares the root's context, so whichever state first runs backward queues the final
callback that reduce-scatters every group, including one whose inputs needed no gradient. (If
the decoder ran first instead, it would claim the root role and a later `model(...)` would fail.)
`model(...)` (generation) works as well.

Gradients are SUMMED over ranks (`set_gradient_divide_factor(1.0)` with
`set_force_sum_reduction_for_comms(True)` on every FSDP module: a plain ReduceOp.SUM, which gloo
supports, where the factor alone asks for PREMUL_SUM, which it does not), not averaged: the harness divides its loss by the global token count, so the sum of the ranks'
gradients is the gradient of the global loss. Mixed precision: parameters are gathered in
`compute_dtype`, gradients reduced in `distributed.reduce_dtype`, and the sharded master weights
keep the dtype the model was loaded in (model.param_dtype, float32 by default).

After forwards without a backward (rollouts, evaluation under no_grad), call `reshard(model)`:
the group above then still holds its gathered parameters, and `model.parameters()` would return
the gathered tensors instead of the shards. `with gathered(model): model.generate(...)` gathers
everything once for a block of forwards and puts it all back after.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import nn


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a Hugging Face causal LM (decoder.layers / .h / .blocks)."""
    decoder = model.get_decoder()
    for name in ("layers", "h", "blocks"):
        layers = getattr(decoder, name, None)
        if isinstance(layers, nn.ModuleList) and len(layers) > 0:
            return list(layers)
    raise ValueError(f"{type(model).__name__}: no decoder layers found (looked for "
                     f"{type(decoder).__name__}.layers, .h, .blocks)")


def fsdp_modules(model: nn.Module) -> list[nn.Module]:
    """Every module fully_shard was applied to (each group once), root last."""
    from torch.distributed.fsdp import FSDPModule

    seen, out = set(), []
    for m in model.modules():
        if isinstance(m, FSDPModule):
            state = id(m._get_fsdp_state())
            if state not in seen:
                seen.add(state)
                out.append(m)
    return out[1:] + out[:1]


def reshard(model: nn.Module) -> None:
    """Free every gathered parameter and put the shards back (after no-grad forwards)."""
    for m in fsdp_modules(model):
        m.reshard()


@contextlib.contextmanager
def gathered(model: nn.Module) -> Iterator[None]:
    """All parameters gathered for the whole block (e.g. `generate`: no collective per decode step,
    which ranks generating different numbers of tokens could not line up), then resharded, each
    group's reshard_after_forward restored. Holds a whole unsharded copy of the model per rank."""
    mods = fsdp_modules(model)
    for m in mods:
        m.set_reshard_after_forward(False, recurse=False)  # recurse=True would reach the nested layers
        m.unshard()
    try:
        yield
    finally:
        for m in mods:
            m.reshard()
            m.set_reshard_after_forward(getattr(m, _RESHARD_ATTR, False), recurse=False)


_RESHARD_ATTR = "harness_reshard_after_forward"  # the setting apply_fsdp2 chose for a group


def apply_fsdp2(model: nn.Module, cfg_dist: Any, mesh: Any, compute_dtype: torch.dtype,
                gradient_checkpointing: bool) -> nn.Module:
    """Shard `model` in place over `mesh` with FSDP2 and return it.

    cfg_dist: the `distributed` node (reshard_after_forward, cpu_offload, reduce_dtype).
    mesh: a 1-D DeviceMesh over all ranks (DistEnv.mesh). compute_dtype: the dtype parameters are
    gathered in for forward/backward (model.dtype). gradient_checkpointing: recompute each decoder
    layer's activations in backward (Hugging Face's per-layer checkpointing, non-reentrant; it
    composes with FSDP2 because the recomputation goes through the layer's hooks). Call before
    building the optimizer: the parameters become sharded DTensors.
    """
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    decoder, head = model.get_decoder(), model.get_output_embeddings()
    embed = model.get_input_embeddings()
    tied = head is not None and head.weight is embed.weight
    layers = decoder_layers(model)
    if gradient_checkpointing and not getattr(model, "is_gradient_checkpointing", False):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    mp = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=getattr(torch, cfg_dist.reduce_dtype))
    offload = CPUOffloadPolicy(pin_memory=mesh.device_type == "cuda") if cfg_dist.cpu_offload else OffloadPolicy()
    common = {"mesh": mesh, "mp_policy": mp, "offload_policy": offload}
    for layer in layers:
        fully_shard(layer, reshard_after_forward=bool(cfg_dist.reshard_after_forward), **common)
        setattr(layer, _RESHARD_ATTR, bool(cfg_dist.reshard_after_forward))
    fully_shard([decoder, head] if head is not None else decoder, reshard_after_forward=False, **common)
    fully_shard(model, reshard_after_forward=False, **common)
    for m in fsdp_modules(model):
        m.set_gradient_divide_factor(1.0)  # sum over ranks: the loss is already divided by the global count
        m.set_force_sum_reduction_for_comms(True)  # plain SUM (gloo has no PREMUL_SUM; NCCL zero-copy)
    model._get_fsdp_state()._lazy_init()  # make `model` the root now, whichever submodule runs first
    if tied and head.weight is not model.get_input_embeddings().weight:
        raise RuntimeError("apply_fsdp2 untied lm_head.weight from the input embedding")
    return model
