"""Update sparsity and update rank: how much of the model did fine-tuning actually change?

The paper (arXiv 2602.07729) reports that SGD changes fewer than 0.02% of the parameters while
AdamW changes ~9%, and that SGD's total update has a much lower rank. Following the authors'
earlier code (arXiv 2505.11711), for every named parameter we take delta = final - initial and count

- `changed_fraction_bf16`: entries that differ after casting both weights to bf16 (the paper's
  headline; its "params unchanged" column is 1 minus this). In bf16 an update smaller than about
  |w|/256 rounds away, so this mixes the optimizer's effect with rounding;
- `changed_fraction_fp32`: entries of the fp32 master weights that differ at all (exact);
- `changed_fraction_tol1e-5`: entries with |delta| > tol (suffix follows `tol`, see `tol_key`);

overall, per module kind (`module_kind`), per transformer layer and averaged over layers, plus
why bf16 looks sparse (`decompose=True`):

- `rounded_away_fraction` (and `rounded_away_by_kind`): entries whose fp32 update is nonzero but
  smaller than half a bf16 step at the initial weight (`bf16_half_step`: half the spacing of bf16
  numbers just above |w|, 2^(E-8) for |w| = 1.f 2^E, i.e. |w|/512 to |w|/256): moved, but by less
  than bf16 can show. Next to it `moved_bf16_equal_fraction`, the exact count of entries that moved in fp32
  and are still equal in bf16 (changed_fraction_fp32 = changed_fraction_bf16 + this, exactly); the
  two differ only for weights that sit near a bf16 rounding boundary;
- `update_abs_median` (and per kind): the median over all coordinates of |final - initial| in
  fp32 (zeros included), from a log-spaced histogram summed tensor by tensor (`abs_histogram`:
  bins are fp32 bit patterns, 128 per octave; the median's bin is exact and the value is
  interpolated inside it, so it is within 0.8% of the exact median), so nothing is concatenated;

and
for every 2-D tensor the rank of its fp32 delta (smallest k whose top-k singular values hold
`rank_energy` of sum(sigma^2); by default from the eigenvalues of the Gram matrix, which are the
squared singular values, because svdvals is ~2x slower on CPU).

Usage (in the trainer):
    initial = snapshot(model)          # before the first update
    ...train...
    metrics = update_sparsity(initial, dict(model.named_parameters()))

Tensors are processed one at a time (no concatenation of a 1.7B-parameter model); counts are
accumulated in Python ints.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping

import torch
from torch import Tensor

KINDS = ("embed", "attention", "mlp", "norm", "head", "other")

_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|h|blocks)\.(\d+)\.")
_EMBED = {"embed_tokens", "wte", "wpe", "embed_positions", "word_embeddings",
          "position_embeddings", "token_type_embeddings", "tok_embeddings", "embeddings"}
_HEAD = {"lm_head", "embed_out"}
_ATTN = {"self_attn", "attn", "attention", "cross_attn", "q_proj", "k_proj", "v_proj", "o_proj",
         "qkv", "qkv_proj", "c_attn", "query", "key", "value", "wq", "wk", "wv", "wo"}
_MLP = {"mlp", "feed_forward", "ffn", "gate_proj", "up_proj", "down_proj", "gate_up_proj",
        "fc1", "fc2", "c_fc", "w1", "w2", "w3"}


def module_kind(name: str) -> str:
    """Classify a Hugging Face parameter name as embed / attention / mlp / norm / head / other.

    Norms are checked first, so norms inside attention (Qwen3's `self_attn.q_norm`) and
    `post_attention_layernorm` are "norm". Matching is on dot-separated name components.
    """
    parts = name.lower().split(".")
    if any("norm" in p or p.startswith("ln_") or p == "ln" for p in parts):
        return "norm"
    if any(p in _HEAD for p in parts) or parts[0] == "output":
        return "head"
    if any(p in _EMBED for p in parts):
        return "embed"
    if any(p in _ATTN for p in parts):
        return "attention"
    if any(p in _MLP for p in parts):
        return "mlp"
    return "other"


def layer_index(name: str) -> int | None:
    """Transformer layer of a parameter (`model.layers.3.mlp...` -> 3), None outside the layers."""
    m = _LAYER_RE.search(name)
    return int(m.group(1)) if m else None


def tol_key(tol: float) -> str:
    """Key suffix for a tolerance: 1e-5 -> "tol1e-5", 1e-3 -> "tol1e-3", 2.5e-4 -> "tol2.5e-4"."""
    mantissa, exponent = f"{tol:.6e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"tol{mantissa}e{int(exponent)}"


def snapshot(model: torch.nn.Module) -> dict[str, Tensor]:
    """Detached fp32 copies of `model.named_parameters()`, on each parameter's device."""
    return {n: p.detach().to(torch.float32, copy=True) for n, p in model.named_parameters()}


def update_rank(delta: Tensor, rank_energy: float = 0.99, method: str = "gram", in_place: bool = False) -> int | None:
    """Smallest k such that the top-k singular values of `delta` [m, n] hold >= `rank_energy` of
    sum(sigma^2). An all-zero delta has rank 0. Computed in float32 on the tensor's device.

    method "svd": torch.linalg.svdvals. method "gram" (default, ~2x faster on CPU): the
    eigenvalues of the smaller Gram matrix (D^T D [n, n] or D D^T [m, m]) are sigma^2 directly;
    their absolute error is ~1e-7 of the total energy, far below any threshold that matters.
    `in_place`: scale `delta` itself (an fp32 temporary the caller gives up) instead of a copy.
    """
    d = delta.detach().float()  # [m, n]
    if not torch.isfinite(d).all():
        return None  # a diverged update has no meaningful rank
    scale = d.abs().max()
    if scale.item() == 0.0:
        return 0
    d = d.div_(scale) if in_place else d / scale  # rank is scale-free; keeps D^T D from over/underflowing fp32
    if method == "svd":
        energy = torch.linalg.svdvals(d).double().square()  # [min(m, n)], descending
    elif method == "gram":
        precision = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")  # TF32 would cost ~1e-3 of the energy
        try:
            gram = d.T @ d if d.shape[0] >= d.shape[1] else d @ d.T  # [min(m, n), min(m, n)]
        finally:
            torch.set_float32_matmul_precision(precision)
        energy = torch.linalg.eigvalsh(gram).flip(0).double().clamp_min(0.0)  # descending
    else:
        raise ValueError(f"unknown rank method {method!r} (use 'svd' or 'gram')")
    total = energy.sum()
    if total.item() == 0.0:
        return 0
    cum = energy.cumsum(0) / total  # [min(m, n)], last ~1.0
    k = int((cum < rank_energy).sum().item()) + 1
    return min(k, energy.numel())


HIST_SHIFT = 16  # |update| histogram: bins are fp32 bit patterns >> 16, i.e. 2**7 = 128 bins per octave
HIST_BINS = 1 << (31 - HIST_SHIFT)  # every non-negative fp32 (sign bit cleared): 32768 bins


def bf16_half_step(w: Tensor) -> Tensor:
    """Half the spacing of bf16 numbers just above |w| (same shape, fp32): for |w| = 1.f * 2^E,
    bf16's 8 significant bits space numbers 2^(E-7) apart, so 2^(E-8); read off w's fp32 exponent
    bits (no log, no frexp). 0 where w is 0 or subnormal (every nonzero update of such a weight
    shows in bf16 down to bf16's own subnormals)."""
    exp_bits = w.float().view(torch.int32) & 0x7F800000  # [same shape] 2^E as an fp32 bit pattern
    half = (exp_bits - (8 << 23)).clamp_(min=0)  # 2^(E-8); below fp32's normal range -> 0
    return half.view(torch.float32)


def abs_histogram(delta: Tensor) -> Tensor:
    """Counts [HIST_BINS] (int64, on the CPU) of |delta| binned by fp32 bit pattern: bin j holds the
    values whose bits lie in [j << HIST_SHIFT, (j+1) << HIST_SHIFT), 128 log-spaced bins per octave
    (width <= 0.8%). Bin 0 holds the zeros (and values below 1.2e-38)."""
    return _histogram_of_bits(delta.detach().float().abs().view(torch.int32))


def _histogram_of_bits(abs_bits: Tensor) -> Tensor:
    """abs_histogram from |delta|'s fp32 bit patterns (int32, any shape)."""
    return torch.bincount((abs_bits >> HIST_SHIFT).flatten(), minlength=HIST_BINS).cpu()


def histogram_median(counts: Tensor) -> float | None:
    """Median of the values behind summed `abs_histogram` counts: 0.0 when bin 0 (zeros) holds at
    least half, else interpolated linearly inside the median's bin (exact to the bin's 0.8%)."""
    total = int(counts.sum())
    if total == 0:
        return None
    half = total / 2
    cum = torch.cumsum(counts.double(), 0)  # [HIST_BINS]
    j = int(torch.searchsorted(cum, torch.tensor([half], dtype=torch.float64)).item())
    if j == 0:
        return 0.0
    edges = torch.tensor([j << HIST_SHIFT, (j + 1) << HIST_SHIFT], dtype=torch.int32).view(torch.float32)
    inside = (half - float(cum[j - 1])) / max(float(counts[j]), 1.0)  # share of bin j below the median
    return float(edges[0] + inside * (edges[1] - edges[0]))


def _count_block(f: Tensor, i: Tensor, tol: float, counts: list[int], extra: list[int] | None,
                 hist: Tensor | None) -> None:
    """Add one flat block's counts: [changed_bf16, changed_fp32, changed_tol] to counts[:3] and,
    with `extra`, [rounded_away, moved_bf16_equal] to extra and its |update| histogram to hist."""
    f32, i32 = f.float(), i.float()
    delta = f32 - i32  # [block]
    c = torch.stack([  # count_nonzero: ~5x faster than bool .sum() on CPU
        torch.count_nonzero(f.to(torch.bfloat16) != i.to(torch.bfloat16)),
        torch.count_nonzero(f32 != i32),
        torch.count_nonzero(delta.abs() > tol),
    ]).tolist()
    for j in range(3):
        counts[j] += c[j]
    if extra is not None:
        # non-negative fp32 values order like their bit patterns: compare and bin as int32
        abs_bits = delta.abs().view(torch.int32)  # [block]
        half_bits = bf16_half_step(i32).view(torch.int32)
        extra[0] += int(torch.count_nonzero((abs_bits < half_bits) & (abs_bits != 0)))  # moved, < half a step
        extra[1] += c[1] - c[0]  # moved in fp32 but equal in bf16
        hist += _histogram_of_bits(abs_bits)


def _fractions(counts: list[int], numel: int, tkey: str) -> dict[str, float]:
    bf16, fp32, tol = (c / numel if numel else 0.0 for c in counts)
    return {"changed_fraction_bf16": bf16, "changed_fraction_fp32": fp32,
            f"changed_fraction_{tkey}": tol}


def update_sparsity(
    initial: Mapping[str, Tensor],
    final: Mapping[str, Tensor],
    tol: float = 1e-5,
    rank_energy: float = 0.99,
    compute_rank: bool = True,
    rank_method: str = "gram",
    decompose: bool = True,
    block: int = 1 << 20,
) -> dict:
    """Fraction of entries changed between two sets of named weights, overall and broken down.

    `initial` and `final` map the same names to tensors of the same shapes (fp32 master weights,
    any device; `initial` is moved to `final`'s device tensor by tensor). Raises ValueError naming
    the first key missing from either side or with mismatched shapes.

    Returns flat `sparsity/...` keys: changed_fraction_bf16 / _fp32 / _tol1e-5, numel, by_kind,
    by_layer, layer_mean and, when `compute_rank`, update_rank_by_matrix and its mean, median and
    mean fraction (None when there is no 2-D tensor); `rank_method` as in `update_rank`.
    With `decompose` (see the module docstring): rounded_away_fraction, moved_bf16_equal_fraction,
    update_abs_median, and rounded_away_by_kind {kind: {changed_fraction_bf16,
    changed_fraction_fp32, rounded_away_fraction, moved_bf16_equal_fraction, update_abs_median}}.
    Weights are compared in fp32 whatever their dtype (a bf16 `initial` is exact). The counts run
    over flat blocks of `block` entries, so the only whole-tensor temporary is the fp32 delta of a
    2-D tensor whose rank is computed (divided in place there).
    """
    for name, t in initial.items():
        if name not in final:
            raise ValueError(f"parameter {name!r} is in initial but not in final")
        if tuple(final[name].shape) != tuple(t.shape):
            raise ValueError(f"parameter {name!r} has shape {tuple(t.shape)} in initial but "
                             f"{tuple(final[name].shape)} in final")
    for name in final:
        if name not in initial:
            raise ValueError(f"parameter {name!r} is in final but not in initial")

    tkey = tol_key(tol)
    # counts per group: [changed_bf16, changed_fp32, changed_tol, numel]
    total = [0, 0, 0, 0]
    by_kind: dict[str, list[int]] = {}
    by_layer: dict[int, list[int]] = {}
    ranks: dict[str, dict] = {}
    # per kind and "all": [rounded_away, moved_bf16_equal], |update| histogram counts
    dec: dict[str, list] = {}
    for name, f in final.items():
        i = initial[name].to(f.device)
        with torch.no_grad():
            counts = [0, 0, 0, f.numel()]
            extra, hist = [0, 0], torch.zeros(HIST_BINS, dtype=torch.int64) if decompose else None
            for fb, ib in zip(f.detach().reshape(-1).split(block), i.detach().reshape(-1).split(block)):
                _count_block(fb, ib, tol, counts, extra if decompose else None, hist)
            if decompose:
                for key in ("all", module_kind(name)):
                    d = dec.setdefault(key, [[0, 0], torch.zeros(HIST_BINS, dtype=torch.int64)])
                    d[0] = [d[0][0] + extra[0], d[0][1] + extra[1]]
                    d[1] += hist
            if compute_rank and f.dim() == 2:
                delta = f.detach().float() - i.float()  # [m, n]: the one whole-tensor temporary
                k = update_rank(delta, rank_energy, rank_method, in_place=True)
                full = min(delta.shape)
                ranks[name] = {"rank": k, "full": full,
                               "fraction": None if k is None else (k / full if full else 0.0)}
                del delta
        groups = [total, by_kind.setdefault(module_kind(name), [0, 0, 0, 0])]
        layer = layer_index(name)
        if layer is not None:
            groups.append(by_layer.setdefault(layer, [0, 0, 0, 0]))
        for g in groups:
            for j in range(4):
                g[j] += counts[j]

    def summary(c: list[int]) -> dict:
        return {**_fractions(c[:3], c[3], tkey), "numel": c[3]}

    out: dict = {f"sparsity/{k}": v for k, v in _fractions(total[:3], total[3], tkey).items()}
    out["sparsity/numel"] = total[3]
    out["sparsity/by_kind"] = {k: summary(by_kind[k]) for k in KINDS if k in by_kind}
    layers = {str(i): summary(by_layer[i]) for i in sorted(by_layer)}
    out["sparsity/by_layer"] = layers
    frac_keys = ["changed_fraction_bf16", "changed_fraction_fp32", f"changed_fraction_{tkey}"]
    out["sparsity/layer_mean"] = {
        k: (statistics.fmean(v[k] for v in layers.values()) if layers else None) for k in frac_keys
    }
    if decompose:
        def split(key: str, c: list[int]) -> dict:
            (below, equal), hist = dec[key]
            n = c[3]
            return {"rounded_away_fraction": below / n if n else 0.0,
                    "moved_bf16_equal_fraction": equal / n if n else 0.0,
                    "update_abs_median": histogram_median(hist)}

        overall = split("all", total) if "all" in dec else {}
        for k, v in overall.items():
            out[f"sparsity/{k}"] = v
        out["sparsity/rounded_away_by_kind"] = {
            k: {"changed_fraction_bf16": by_kind[k][0] / by_kind[k][3] if by_kind[k][3] else 0.0,
                "changed_fraction_fp32": by_kind[k][1] / by_kind[k][3] if by_kind[k][3] else 0.0,
                **split(k, by_kind[k])}
            for k in KINDS if k in by_kind}
    if compute_rank:
        rs = [r["rank"] for r in ranks.values() if r["rank"] is not None]
        fs = [r["fraction"] for r in ranks.values() if r["fraction"] is not None]
        out["sparsity/update_rank_by_matrix"] = ranks
        out["sparsity/update_rank_mean"] = statistics.fmean(rs) if rs else None
        out["sparsity/update_rank_median"] = statistics.median(rs) if rs else None
        out["sparsity/update_rank_fraction_mean"] = statistics.fmean(fs) if fs else None
    return out


def bf16_grid_counts(params: Mapping[str, Tensor] | list[Tensor], block: int = 1 << 20) -> tuple[int, int]:
    """(entries that are bf16 numbers, all entries) over the tensors: a value is on the bf16 grid when
    casting it to bf16 and back gives it again. Published checkpoints (bf16) are all on it; the default
    model's dequantised GGUF values mostly are not, and a value off the grid, halfway between two bf16
    numbers, flips its bf16 value at any move (see docs: why bf16 looks sparse). Flat blocks of `block`."""
    on = total = 0
    tensors = params.values() if isinstance(params, Mapping) else params
    with torch.no_grad():
        for t in tensors:
            flat = t.detach().reshape(-1)
            for s in range(0, flat.numel(), block):
                part = flat[s:s + block]
                on += int((part.to(torch.bfloat16).to(part.dtype) == part).sum())
            total += flat.numel()
    return on, total
