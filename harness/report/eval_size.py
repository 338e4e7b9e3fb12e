"""How many test problems? The 95% interval of SGD - AdamW on simulated paired scores, by test size.

    python -m harness.report.eval_size                    # N = 32, 64, 128, 200; ~1 minute on a CPU
    python -m harness.report.eval_size --sizes 100 400 --reps 50

Each simulated trial pair scores N problems per seed on S seeds; two methods of accuracy p_a, p_b
solve problem j when a latent difficulty shared by both (correlation rho) plus their own noise is
below their threshold, and each seed shifts a method's accuracy by seed_sd (training's
seed-to-seed variation). Printed per setting: the discordance (share of cells where the methods
differ), the median half-width of the report's paired bootstrap interval, two-level (seeds, then
problems: the report's default) and problems-only, and 1.96 x the true spread of the estimate
over the repetitions (what a correct interval's half-width should be).
Binomial check: the half-width of one accuracy over S x N cells is 1.96 sqrt(p(1-p) / (S N));
of a paired difference with discordance q, about 1.96 sqrt(q / (S N)) with the models fixed.
"""

from __future__ import annotations

import argparse
from statistics import NormalDist

import numpy as np

from .stats import paired_bootstrap


def simulate(n: int, p: tuple[float, float], rho: float, seed_sd: float, seeds: int,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two [seeds, n] 0/1 score arrays, paired by seed and problem."""
    nd = NormalDist()
    a, b = np.zeros((seeds, n)), np.zeros((seeds, n))
    for s in range(seeds):
        shared = rng.standard_normal(n)  # [n] problem difficulty
        for out, acc in ((a, p[0]), (b, p[1])):
            latent = np.sqrt(rho) * shared + np.sqrt(1 - rho) * rng.standard_normal(n)  # [n]
            acc_s = float(np.clip(acc + seed_sd * rng.standard_normal(), 0.01, 0.99))
            out[s] = latent < nd.inv_cdf(acc_s)
    return a, b


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m harness.report.eval_size", description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128, 200])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--accuracy", type=float, nargs=2, default=[0.75, 0.72])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--resamples", type=int, default=2000)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    print("| N | rho | seed sd | discordance | two-level | problems only | 1.96 x true sd |")
    print("|---|---|---|---|---|---|---|")
    for rho in (0.0, 0.6):
        for seed_sd in (0.0, 0.03):
            for n in args.sizes:
                two, one, q, est = [], [], [], []
                for r in range(args.reps):
                    a, b = simulate(n, tuple(args.accuracy), rho, seed_sd, args.seeds, rng)
                    ci = paired_bootstrap(100 * a, 100 * b, args.resamples, seed=r)
                    c1 = paired_bootstrap(100 * a, 100 * b, args.resamples, seed=r, resample_seeds=False)
                    two.append((ci.hi - ci.lo) / 2)
                    one.append((c1.hi - c1.lo) / 2)
                    q.append(float((a != b).mean()))
                    est.append(ci.estimate)
                print(f"| {n} | {rho:.1f} | {100 * seed_sd:.0f} pts | {np.mean(q):.2f} | {np.median(two):.1f} | "
                      f"{np.median(one):.1f} | {1.96 * np.std(est):.1f} |")


if __name__ == "__main__":
    main()
