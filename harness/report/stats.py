"""Interval estimates for the report: pure functions on arrays, no I/O.

- `t_interval(values)`: mean and 95% Student-t interval over seeds (one value per seed).
- `paired_bootstrap(a, b, ...)`: mean difference a - b of per-problem scores [seeds, problems]
  with a percentile bootstrap interval. Each resample draws the seeds with replacement and then,
  within each drawn seed, its problems with replacement (a two-level bootstrap: the interval
  holds both the luck of which problems were drawn and training's seed-to-seed variation).
  Paired: the same drawn (seed, problem) cells are taken on both sides, so a problem both
  optimizers solve (or miss) adds no noise. `resample_seeds=False` keeps every seed and resamples
  problems only (stratified by seed: the trained models are taken as fixed).
- `difference_of_gaps(a1, b1, a2, b2, ...)`: (mean of a2 - b2) - (mean of a1 - b1), two paired
  gaps measured on separate trials (RL and SFT runs), with a percentile bootstrap interval: each
  resample draws each side as paired_bootstrap does (seeds, then problems within each seed, the
  same cells for a and b), the two sides independently of each other.
- `ratio_bootstrap(a, b, ...)`: mean(a) / mean(b) over seeds, the seeds resampled with
  replacement, paired by seed when both sides have the same seeds.
- `verdict(lo, hi, margin)` and `ratio_verdict(lo, hi, margin)`: the words for an interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

# two-sided 95% Student-t quantiles t_{0.975, df}, df = 1..30; above 30 the normal's 1.96 is within 2%
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
         2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
         2.052, 2.048, 2.045, 2.042)


@dataclass(frozen=True)
class Interval:
    estimate: float  # mean, mean difference or ratio
    lo: Optional[float]  # None when there is too little data for an interval (one seed)
    hi: Optional[float]
    n: int  # seeds (t_interval, ratio_bootstrap) or seed x problem cells (paired_bootstrap)

    def contains(self, x: float) -> bool:
        return self.lo is not None and self.hi is not None and self.lo <= x <= self.hi


def t975(df: int) -> float:
    return _T975[df - 1] if df <= len(_T975) else 1.96


def t_interval(values: Sequence[float], bounds: Optional[tuple[float, float]] = None) -> Optional[Interval]:
    """Mean and 95% t interval (mean ± t_{0.975, n-1} s / sqrt(n)) of the finite values, clipped
    to `bounds` if given (an accuracy's [0, 1]); with one value the interval is None; with none,
    the result is None."""
    xs = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if xs.size == 0:
        return None
    mean = float(xs.mean())
    if xs.size == 1:
        return Interval(mean, None, None, 1)
    half = t975(xs.size - 1) * float(xs.std(ddof=1)) / math.sqrt(xs.size)
    lo, hi = mean - half, mean + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return Interval(mean, lo, hi, int(xs.size))


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_resamples: int = 10_000, seed: int = 0,
                     level: float = 0.95, resample_seeds: bool = True, chunk: int = 1000) -> Interval:
    """Mean of a - b and its percentile bootstrap interval.

    a, b: [S, N] per-problem scores (0/1 or any float) of two methods; row s is seed s on both
    sides, column j the same test problem of that seed on both sides. Deterministic given `seed`
    (numpy's PCG64). Memory: chunk x S x N indices at a time.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 2 or a.size == 0:
        raise ValueError(f"paired_bootstrap needs two [seeds, problems] arrays of one shape, got {a.shape} and {b.shape}")
    if n_resamples < 1 or not 0 < level < 1:
        raise ValueError(f"n_resamples={n_resamples} must be >= 1 and level={level} in (0, 1)")
    d = a - b  # [S, N]
    means = _resampled_means(d, n_resamples, np.random.default_rng(seed), resample_seeds, chunk)  # [R]
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return Interval(float(d.mean()), float(lo), float(hi), int(d.size))


def _resampled_means(d: np.ndarray, n_resamples: int, rng: np.random.Generator, resample_seeds: bool,
                     chunk: int) -> np.ndarray:
    """[R] means of d [S, N] over two-level resamples: seeds with replacement (unless not
    resample_seeds), then each drawn seed's problems with replacement."""
    S, N = d.shape
    means = np.empty(n_resamples)  # [R]
    for start in range(0, n_resamples, chunk):
        r = min(chunk, n_resamples - start)
        rows = rng.integers(0, S, size=(r, S)) if resample_seeds else np.broadcast_to(np.arange(S), (r, S))  # [r, S]
        cols = rng.integers(0, N, size=(r, S, N))  # [r, S, N]
        means[start:start + r] = d[rows[:, :, None], cols].mean(axis=(1, 2))  # [r]
    return means


def difference_of_gaps(a1: np.ndarray, b1: np.ndarray, a2: np.ndarray, b2: np.ndarray, n_resamples: int = 10_000,
                       seed: int = 0, level: float = 0.95, resample_seeds: bool = True, chunk: int = 1000) -> Interval:
    """gap2 - gap1 with gap_k = mean(a_k - b_k), and its percentile bootstrap interval.

    a_k, b_k: [S_k, N_k] paired per-problem scores as in paired_bootstrap (e.g. SGD and AdamW in
    RL for k = 1, in SFT for k = 2). The two gaps come from separate training runs, so each
    resample draws side 1 and side 2 independently (each two-level and paired within itself, as
    paired_bootstrap), and takes the difference of their means. Deterministic given `seed`.
    n is the number of (seed, problem) cells on both sides.
    """
    ds = []
    for a, b in ((a1, b1), (a2, b2)):
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        if a.shape != b.shape or a.ndim != 2 or a.size == 0:
            raise ValueError(f"difference_of_gaps needs [seeds, problems] pairs of one shape, got {a.shape} and {b.shape}")
        ds.append(a - b)  # [S_k, N_k]
    if n_resamples < 1 or not 0 < level < 1:
        raise ValueError(f"n_resamples={n_resamples} must be >= 1 and level={level} in (0, 1)")
    rng = np.random.default_rng(seed)
    m1, m2 = (_resampled_means(d, n_resamples, rng, resample_seeds, chunk) for d in ds)  # [R] each
    alpha = (1 - level) / 2
    lo, hi = np.quantile(m2 - m1, [alpha, 1 - alpha])
    return Interval(float(ds[1].mean() - ds[0].mean()), float(lo), float(hi), int(ds[0].size + ds[1].size))


def ratio_bootstrap(a: Sequence[float], b: Sequence[float], n_resamples: int = 10_000, seed: int = 0,
                    level: float = 0.95, paired: bool = True) -> Optional[Interval]:
    """mean(a) / mean(b) and its percentile bootstrap interval over seeds. paired (a[i], b[i] from
    the same seed, equal lengths): one draw of seed indices for both sides; else each side is
    drawn on its own. None when mean(b) is 0 or a side is empty; no interval with one seed, or
    when some resample has mean(b) = 0."""
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if xa.size == 0 or xb.size == 0 or xb.mean() == 0:
        return None
    est = float(xa.mean() / xb.mean())
    if paired and xa.size != xb.size:
        raise ValueError(f"paired ratio needs one value per seed on both sides, got {xa.size} and {xb.size}")
    if max(xa.size, xb.size) == 1:
        return Interval(est, None, None, 1)
    rng = np.random.default_rng(seed)
    ia = rng.integers(0, xa.size, size=(n_resamples, xa.size))  # [R, Sa]
    ib = ia if paired else rng.integers(0, xb.size, size=(n_resamples, xb.size))  # [R, Sb]
    den = xb[ib].mean(axis=1)  # [R]
    if (den == 0).any():
        return Interval(est, None, None, int(xa.size))
    ratios = xa[ia].mean(axis=1) / den
    alpha = (1 - level) / 2
    lo, hi = np.quantile(ratios, [alpha, 1 - alpha])
    return Interval(est, float(lo), float(hi), int(xa.size))


def verdict(lo: Optional[float], hi: Optional[float], margin: float) -> str:
    """Words for a difference's interval [lo, hi] against a margin (same units), checked in order:
    "matches" the whole interval is inside [-margin, +margin];
    "better"  lo > 0 (and not inside the margin);
    "worse"   hi < 0 (and not inside the margin);
    "inconclusive" otherwise (the interval holds 0 and reaches past the margin), or no interval."""
    if lo is None or hi is None:
        return "inconclusive"
    if -margin <= lo and hi <= margin:
        return "matches"
    if lo > 0:
        return "better"
    if hi < 0:
        return "worse"
    return "inconclusive"


def ratio_verdict(lo: Optional[float], hi: Optional[float], margin: float) -> str:
    """Words for a ratio's interval against a relative margin m (0.1 = 10%), in order:
    "same" inside [1/(1+m), 1+m]; "lower" hi < 1; "higher" lo > 1; else "inconclusive"."""
    if lo is None or hi is None:
        return "inconclusive"
    if 1 / (1 + margin) <= lo and hi <= 1 + margin:
        return "same"
    if hi < 1:
        return "lower"
    if lo > 1:
        return "higher"
    return "inconclusive"
