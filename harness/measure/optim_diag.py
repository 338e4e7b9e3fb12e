"""Optimizer diagnostics from the paper's analysis of why Adam's machinery matters little in RL.

The paper reports that (a) the cosine similarity between the momentum buffer and the current
gradient is ~1.0 in SFT but ~0 in RL (momentum averages gradients that barely agree), and (b) the
spread of Adam's second-moment estimate is ~22x smaller in RL than in SFT (per-parameter learning
rates are nearly uniform, so Adam behaves like scaled SGD).

Call `momentum_grad_cosine` and `second_moment_stats` just BEFORE `optimizer.step()`, after the
gradients are final (clipped): the buffers then hold the history up to the previous step and
`p.grad` is the gradient about to be applied. `update_norm` compares weights after the step
with a copy taken before it.

Per-tensor partial results stay on the device and are synchronized once per call; they are
combined in float64.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

MOMENTUM_KEYS = ("exp_avg", "momentum_buffer")  # Adam/AdamW first moment; SGD momentum
SECOND_MOMENT_KEYS = ("exp_avg_sq", "square_avg")  # Adam/AdamW; RMSprop/Adagrad-like
_BLOCK = 1 << 16  # entries per block in second_moment_stats (trainer.diagnostics_block_numel in a trial)


def _params_with_grad(optimizer: torch.optim.Optimizer) -> Iterable[Tensor]:
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None:
                yield p


def _first_state(state: dict, keys: tuple[str, ...]) -> Tensor | None:
    for k in keys:
        v = state.get(k)
        if isinstance(v, Tensor):
            return v
    return None


def _rows(parts: list[Tensor]) -> list[list[float]]:
    """Per-tensor partial results to Python floats, with one device sync when all share a device."""
    if len({t.device for t in parts}) == 1:
        return torch.stack(parts).tolist()
    return [t.tolist() for t in parts]


def momentum_grad_cosine(optimizer: torch.optim.Optimizer) -> float | None:
    """Global cosine between the momentum buffer (Adam's exp_avg or SGD's momentum_buffer) and
    the current gradient: sum_p <m_p, g_p> / (||m|| ||g||) over params that have both.

    None when no parameter has a momentum buffer yet (first step, SGD without momentum,
    RMSprop without momentum) or either norm is 0. Note: RMSprop's momentum_buffer holds the
    preconditioned step, not a gradient average.
    """
    parts: list[Tensor] = []  # each [3]: <m, g>, ||m||^2, ||g||^2 of one tensor
    for p in _params_with_grad(optimizer):
        m = _first_state(optimizer.state.get(p, {}), MOMENTUM_KEYS)
        if m is None:
            continue
        m32, g32 = m.detach().float().reshape(-1), p.grad.detach().float().reshape(-1)  # [numel]
        parts.append(torch.stack([torch.dot(m32, g32), torch.dot(m32, m32),
                                  torch.dot(g32, g32)]).double())
    if not parts:
        return None
    rows = _rows(parts)  # [n_tensors, 3]
    dot, mm, gg = (math.fsum(col) for col in zip(*rows))
    if mm == 0.0 or gg == 0.0:
        return None
    return dot / (math.sqrt(mm) * math.sqrt(gg))


def _combine(parts: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    """Chan et al.'s parallel merge of (count, mean, sum of squared deviations)."""
    n, mean, m2 = 0.0, 0.0, 0.0
    for nb, mb, m2b in parts:
        if nb == 0:
            continue
        tot = n + nb
        d = mb - mean
        mean += d * nb / tot
        m2 += m2b + d * d * n * nb / tot
        n = tot
    return n, mean, m2


def second_moment_stats(optimizer: torch.optim.Optimizer, block: int = _BLOCK) -> dict | None:
    """Spread of the second-moment estimate v (Adam's exp_avg_sq, RMSprop's square_avg) over all
    entries of all parameters: {"mean", "std", "cv": std/mean, "log10_mean", "log10_std": std of
    log10(v + 1e-30), "numel"} (population std). None when no parameter has such state.

    Streaming: each tensor is read in blocks of `block` entries (cache-sized), each reduced in
    fp32 to (count, mean, M2) by two passes over the block, and the blocks are merged in float64
    (Chan's formula, `_combine`): no copy of the model, and about 10x cheaper than float64 throughout.
    """
    parts: list[Tensor] = []  # each [4]: mean, M2 of v and of log10(v + 1e-30) over one block
    sizes: list[int] = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            v = _first_state(optimizer.state.get(p, {}), SECOND_MOMENT_KEYS)
            if v is None or v.numel() == 0:
                continue
            for x in v.detach().float().reshape(-1).split(block):
                lx = torch.log10(x + 1e-30)  # [<=block]
                mx, ml = x.mean(), lx.mean()
                parts.append(torch.stack([mx, (x - mx).square().sum(), ml, (lx - ml).square().sum()]))
                sizes.append(x.numel())
    if not parts:
        return None
    rows = torch.stack(parts).double().tolist()  # [n_blocks, 4]
    n, mean, m2 = _combine([(size, r[0], r[1]) for size, r in zip(sizes, rows)])
    _, lmean, lm2 = _combine([(size, r[2], r[3]) for size, r in zip(sizes, rows)])
    std = math.sqrt(max(m2, 0.0) / n)
    return {
        "mean": mean,
        "std": std,
        "cv": std / mean if mean > 0 else None,
        "log10_mean": lmean,
        "log10_std": math.sqrt(max(lm2, 0.0) / n),
        "numel": int(n),
    }


def grad_global_norm(params: Iterable[Tensor]) -> float:
    """sqrt(sum ||p.grad||^2) over params that have a gradient (0.0 when none do)."""
    sq = [torch.linalg.vector_norm(p.grad.detach().float()).double().square().reshape(1)
          for p in params if p.grad is not None]
    return math.sqrt(math.fsum(r[0] for r in _rows(sq))) if sq else 0.0


def update_norm(before: list[Tensor], params: list[Tensor]) -> float:
    """sqrt(sum ||p - b||^2): size of the update between copies `before` and current `params`."""
    before, params = list(before), list(params)
    if len(before) != len(params):
        raise ValueError(f"{len(before)} tensors before the step but {len(params)} params")
    sq = [torch.linalg.vector_norm(p.detach().float() - b.to(p.device).float())
          .double().square().reshape(1) for b, p in zip(before, params)]
    return math.sqrt(math.fsum(r[0] for r in _rows(sq))) if sq else 0.0
