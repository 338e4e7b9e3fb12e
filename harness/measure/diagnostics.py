"""Per-step diagnostics, registered by name: `trainer.diagnostics: [momentum_grad_cosine, ...]`.

Each diagnostic sees one optimizer step through three hooks and returns its metrics for the step:
- `before(ctx)`: after the gradients are final (clipped), before the step;
- `block(ctx, old, new, initial)`: only for diagnostics with `needs_old = True`: while the step
  runs, one flat block of one parameter's local values at a time: before the update (`old`), after
  it (`new`) and at the start of training (`initial`, in the dtype the baseline is kept in);
- `after(ctx) -> dict`: after the step; partial sums go through `ctx.all_reduce` so that, under
  sharding, results are global (a cosine from the global dot products, counts summed over shards).

Cost: every diagnostic reads the model in blocks of `trainer.diagnostics_block_numel` entries
(64 Ki by default: a block of each operand stays in the CPU's L2 cache while all the diagnostics
read it), so each pass over the model costs one trip through memory rather than one per operation.
`perf/diagnostics_s` is what they add to the step; `python -m harness.bench.optimizers` prints it
as a share of the step.

No diagnostic keeps a copy of the model. `observed_step` runs the optimizer over one chunk of
parameters at a time (parameters without a gradient are skipped by every torch optimizer), so only
one chunk's old values exist at once (`trainer.diagnostics_chunk_numel` entries). torch optimizers
update each parameter from its own gradient and state, so the chunked step gives bit-identical
weights to one step over all (tested); an optimizer that couples parameters within a step cannot
be chunked: leave the `needs_old` diagnostics out for it.

Counts compare bf16 values by bit pattern (the XOR of their int16 views: four times faster than
a float comparison on CPU) and fp32 values through their difference (`new - old` is zero exactly
when they are equal, for finite values). Both equal `!=` except for +0 against -0 in bf16, which counts
as a change; non-finite weights end the trial before any count matters.

The summary (harness.summary) averages every numeric key a diagnostic returns over the steps,
without knowing them one by one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Optional

import torch
from torch import Tensor

from harness.distributed.reduce import local_tensor as _local
from harness.measure.optim_diag import MOMENTUM_KEYS, _combine, _first_state, second_moment_stats
from harness.registry import Registry

DIAGNOSTICS: Registry = Registry("trainer.diagnostics")


def _identity(values: list[float]) -> list[float]:
    return values


def _single(obj: Any) -> list[Any]:
    return [obj]


@dataclass
class StepContext:
    optimizer: torch.optim.Optimizer
    initial: Mapping[str, Tensor]  # the baseline weights (local shards), any dtype that holds them exactly
    all_reduce: Callable[[list[float]], list[float]] = _identity  # sum over ranks
    all_gather: Callable[[Any], list[Any]] = _single  # every rank's object, in rank order
    block_numel: int = 0  # entries per block in each pass over the model; Diagnostics.step sets it


class Diagnostic:
    needs_old = False

    def before(self, ctx: StepContext) -> None:
        pass

    def block(self, ctx: StepContext, old: Tensor, new: Tensor, initial: Tensor) -> None:
        pass

    def after(self, ctx: StepContext) -> dict[str, Optional[float]]:
        return {}


@DIAGNOSTICS.register("momentum_grad_cosine")
class MomentumGradCosine(Diagnostic):
    """`optim/momentum_grad_cosine`: cosine between the momentum buffer (history up to the previous
    step) and the gradient about to be applied, over all parameters; None without momentum."""

    def before(self, ctx: StepContext) -> None:
        parts: list[Tensor] = []  # each [3]: <m, g>, ||m||^2, ||g||^2 of one block
        for group in ctx.optimizer.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                m = _first_state(ctx.optimizer.state.get(p, {}), MOMENTUM_KEYS)
                if m is None:
                    continue
                m32, g32 = _local(m).detach().float().reshape(-1), _local(p.grad).detach().float().reshape(-1)
                for mb, gb in zip(m32.split(ctx.block_numel), g32.split(ctx.block_numel)):
                    # torch.sum's cascade summation: ~1e-7 relative, where a BLAS dot over a block is ~1e-5
                    parts.append(torch.stack([(mb * gb).sum(), mb.square().sum(), gb.square().sum()]))
        sums = torch.stack(parts).double().sum(0).tolist() if parts else [0.0, 0.0, 0.0]
        self._sums = [*sums, 1.0 if parts else 0.0]

    def after(self, ctx: StepContext) -> dict[str, Optional[float]]:
        dot, mm, gg, have = ctx.all_reduce(self._sums)
        if not have or mm == 0.0 or gg == 0.0:
            return {"optim/momentum_grad_cosine": None}
        return {"optim/momentum_grad_cosine": dot / (math.sqrt(mm) * math.sqrt(gg))}


@DIAGNOSTICS.register("second_moment")
class SecondMoment(Diagnostic):
    """`optim/second_moment_{mean,std,cv,log10_mean,log10_std}`: the spread of Adam's (or RMSProp's)
    second-moment estimate after the step; None for optimizers without one."""

    keys = ("mean", "std", "cv", "log10_mean", "log10_std")

    def after(self, ctx: StepContext) -> dict[str, Optional[float]]:
        local = second_moment_stats(_LocalStateView(ctx.optimizer), ctx.block_numel)
        parts = ctx.all_gather(None if local is None else
                               (local["numel"], local["mean"], local["std"] ** 2 * local["numel"],
                                local["log10_mean"], local["log10_std"] ** 2 * local["numel"]))
        parts = [p for p in parts if p is not None]
        if not parts:
            return {f"optim/second_moment_{k}": None for k in self.keys}
        n, mean, m2 = _combine([(p[0], p[1], p[2]) for p in parts])
        _, lmean, lm2 = _combine([(p[0], p[3], p[4]) for p in parts])
        std = math.sqrt(max(m2, 0.0) / n)
        return {"optim/second_moment_mean": mean, "optim/second_moment_std": std,
                "optim/second_moment_cv": std / mean if mean > 0 else None,
                "optim/second_moment_log10_mean": lmean, "optim/second_moment_log10_std": math.sqrt(max(lm2, 0.0) / n)}


class _LocalStateView:
    """An optimizer seen through its local shards (what second_moment_stats reads)."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.param_groups = optimizer.param_groups
        self.state = {p: {k: (_local(v) if isinstance(v, Tensor) else v) for k, v in s.items()}
                      for p, s in optimizer.state.items()}


@DIAGNOSTICS.register("update_norm")
class UpdateNorm(Diagnostic):
    """`optim/update_norm`: ||w_after - w_before|| over all parameters (fp32)."""

    needs_old = True

    def before(self, ctx: StepContext) -> None:
        self._parts: list[Tensor] = []

    def block(self, ctx, old, new, initial) -> None:
        self._parts.append(torch.linalg.vector_norm(new.float() - old.float()))  # fp32, cascade-summed

    def after(self, ctx: StepContext) -> dict[str, Optional[float]]:
        sq = float(torch.stack(self._parts).double().square().sum()) if self._parts else 0.0
        return {"optim/update_norm": math.sqrt(ctx.all_reduce([sq])[0])}


@DIAGNOSTICS.register("step_sparsity")
class StepSparsity(Diagnostic):
    """The weights this step changed, and those changed since the start, in fp32 and after casting to
    bf16 (the paper's measure): `sparsity/step_changed_fraction_{bf16,fp32}` and
    `sparsity/changed_fraction_{bf16,fp32}`. Counts are exact integers summed over shards."""

    needs_old = True

    def before(self, ctx: StepContext) -> None:
        self._parts: list[Tensor] = []  # each [4]: step bf16, step fp32, total bf16, total fp32 of one block
        self._numel = 0

    def block(self, ctx, old, new, initial) -> None:
        nb = _bf16_bits(new)
        self._parts.append(torch.stack([
            torch.count_nonzero(nb ^ _bf16_bits(old)), _count_nonzero_fast(new.float() - old.float()),
            torch.count_nonzero(nb ^ _bf16_bits(initial)), _count_nonzero_fast(new.float() - initial.float()),
        ]))
        self._numel += new.numel()

    def after(self, ctx: StepContext) -> dict[str, Optional[float]]:
        counts = torch.stack(self._parts).sum(0).tolist() if self._parts else [0, 0, 0, 0]
        sb, sf, tb, tf, numel = ctx.all_reduce([float(x) for x in (*counts, self._numel)])
        frac = (lambda x: x / numel) if numel else (lambda x: None)
        return {"sparsity/step_changed_fraction_bf16": frac(sb), "sparsity/step_changed_fraction_fp32": frac(sf),
                "sparsity/changed_fraction_bf16": frac(tb), "sparsity/changed_fraction_fp32": frac(tf)}


def _bf16_bits(x: Tensor) -> Tensor:
    """The bit patterns of x rounded to bf16, as int16 (x itself when already bf16)."""
    return x.to(torch.bfloat16).view(torch.int16)


def _count_nonzero_fast(x: Tensor) -> Tensor:
    """torch.count_nonzero(x) for a float block, through bool bytes (about 1.5x faster on CPU)."""
    return x.bool().view(torch.uint8).sum(dtype=torch.int64)


@dataclass
class Diagnostics:
    """The diagnostics a trial asked for, run around each optimizer step."""

    names: list[str]
    chunk_numel: int  # trainer.diagnostics_chunk_numel
    block_numel: int  # trainer.diagnostics_block_numel
    items: list[Diagnostic] = field(init=False)

    def __post_init__(self) -> None:
        self.items = [DIAGNOSTICS.build(n) for n in self.names]

    def step(self, ctx: StepContext, named_params: list[tuple[str, Tensor]]) -> dict[str, Optional[float]]:
        """One optimizer step with every diagnostic observing it; returns their metrics."""
        t0 = time.perf_counter()
        ctx = replace(ctx, block_numel=self.block_numel)
        for d in self.items:
            d.before(ctx)
        watchers = [d for d in self.items if d.needs_old]
        if watchers:
            def observe(names: list[str], old: list[Tensor], new: list[Tensor]) -> None:
                for name, o, n in zip(names, old, new):
                    init = _local(ctx.initial[name]).reshape(-1)
                    o, n, b = o.reshape(-1), n.reshape(-1), ctx.block_numel
                    for s in range(0, n.numel(), b):
                        for d in watchers:
                            d.block(ctx, o[s:s + b], n[s:s + b], init[s:s + b])

            step_s = observed_step(ctx.optimizer, named_params, self.chunk_numel, observe)
        else:
            t1 = time.perf_counter()
            ctx.optimizer.step()
            step_s = time.perf_counter() - t1
        out: dict[str, Optional[float]] = {}
        for d in self.items:
            out.update(d.after(ctx))
        out["perf/optimizer_step_s"] = step_s
        out["perf/diagnostics_s"] = time.perf_counter() - t0 - step_s  # what the diagnostics add to the step
        return out


def validate_names(names: Any) -> None:
    for n in names:
        DIAGNOSTICS.entry(n)


def observed_step(optimizer: torch.optim.Optimizer, named_params: list[tuple[str, Tensor]], chunk_numel: int,
                  observe: Callable[[list[str], list[Tensor], list[Tensor]], Any]) -> float:
    """`optimizer.step()` a chunk of parameters at a time, calling `observe(names, old, new)` for each
    chunk with the local values before and after its update. Every gradient is restored afterwards.
    Returns the seconds spent in `optimizer.step()` itself."""
    with_grad = [(n, p) for n, p in named_params if p.grad is not None]
    grads = [p.grad for _, p in with_grad]
    chunks: list[list[int]] = [[]]
    size = 0
    for i, (_, p) in enumerate(with_grad):
        if chunks[-1] and size + p.numel() > chunk_numel:
            chunks.append([])
            size = 0
        chunks[-1].append(i)
        size += p.numel()
    step_s = 0.0
    try:
        for _, p in with_grad:
            p.grad = None
        for idx in chunks:
            if not idx:
                continue
            for i in idx:
                with_grad[i][1].grad = grads[i]
            old = [_local(with_grad[i][1]).detach().clone() for i in idx]
            t0 = time.perf_counter()
            optimizer.step()
            step_s += time.perf_counter() - t0
            for i in idx:
                with_grad[i][1].grad = None
            with torch.no_grad():
                observe([with_grad[i][0] for i in idx], old, [_local(with_grad[i][1]).detach() for i in idx])
            del old
    finally:
        for (_, p), g in zip(with_grad, grads):
            p.grad = g
    return step_s
