"""python -m pytest tests/test_stats.py -q

The report's interval estimates on hand-made data whose answer is known in closed form.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.report.stats import paired_bootstrap, ratio_bootstrap, ratio_verdict, t_interval, verdict

S, N = 3, 200


def _discordant(n_ab: int, n_ba: int, n_both: int) -> tuple[np.ndarray, np.ndarray]:
    """[S, N] scores: per seed n_ab problems only a solves, n_ba only b, n_both both; rest neither."""
    a, b = np.zeros((S, N)), np.zeros((S, N))
    for s in range(S):
        cells = np.random.default_rng(s).permutation(N)
        ab, ba, both = cells[:n_ab], cells[n_ab:n_ab + n_ba], cells[n_ab + n_ba:n_ab + n_ba + n_both]
        a[s, ab] = a[s, both] = 1
        b[s, ba] = b[s, both] = 1
    return a, b


def test_interval_holds_zero_when_the_methods_are_even():
    a, b = _discordant(40, 40, 60)  # 40 wins each way per seed: mean difference exactly 0
    ci = paired_bootstrap(a, b, n_resamples=4000, seed=0, resample_seeds=False)
    assert ci.estimate == 0.0 and ci.contains(0.0) and ci.n == S * N
    # var(d) = P(discordant) = 80/200 = 0.4: normal half-width 1.96 sqrt(0.4 / 600) = 0.0506
    half = 1.96 * math.sqrt(0.4 / (S * N))
    assert (ci.hi - ci.lo) / 2 == pytest.approx(half, rel=0.1)
    assert verdict(100 * ci.lo, 100 * ci.hi, margin=2.0) == "inconclusive"  # +-5 points reach past 2
    assert verdict(100 * ci.lo, 100 * ci.hi, margin=6.0) == "matches"


def test_interval_excludes_zero_when_one_method_wins():
    a, b = _discordant(100, 0, 100)  # a solves all that b solves plus 100 more: difference 0.5
    ci = paired_bootstrap(a, b, n_resamples=4000, seed=0, resample_seeds=False)
    assert ci.estimate == pytest.approx(0.5) and not ci.contains(0.0)
    half = 1.96 * math.sqrt(0.25 / (S * N))  # var(d) = 0.5 * 0.5
    assert ci.lo == pytest.approx(0.5 - half, abs=0.01) and ci.hi == pytest.approx(0.5 + half, abs=0.01)
    assert verdict(100 * ci.lo, 100 * ci.hi, margin=2.0) == "better"
    swapped = paired_bootstrap(b, a, n_resamples=4000, seed=0, resample_seeds=False)
    assert swapped.estimate == pytest.approx(-0.5) and verdict(100 * swapped.lo, 100 * swapped.hi, 2.0) == "worse"


def test_pairing_removes_shared_problem_difficulty():
    a, b = _discordant(0, 0, 100)  # identical scores on every problem: no difference, no noise
    ci = paired_bootstrap(a, b, n_resamples=500, seed=1)
    assert (ci.estimate, ci.lo, ci.hi) == (0.0, 0.0, 0.0)


def test_seed_level_resampling_has_a_closed_form():
    # per-seed mean differences +0.3, -0.3, 0 with no spread inside a seed. Resampling 3 seeds with
    # replacement: the mean is -0.3 with probability 1/27 = 3.7% > 2.5%, likewise +0.3, so the 95%
    # percentile interval is exactly [-0.3, +0.3]; problems alone (seeds fixed) give [0, 0].
    a = np.array([[0.3] * 10, [-0.3] * 10, [0.0] * 10])
    b = np.zeros_like(a)
    ci = paired_bootstrap(a, b, n_resamples=20_000, seed=0)
    assert ci.estimate == pytest.approx(0.0, abs=1e-12)
    assert ci.lo == pytest.approx(-0.3) and ci.hi == pytest.approx(0.3)
    fixed = paired_bootstrap(a, b, n_resamples=2000, seed=0, resample_seeds=False)
    assert fixed.lo == pytest.approx(0.0, abs=1e-12) and fixed.hi == pytest.approx(0.0, abs=1e-12)


def test_bootstrap_is_deterministic_given_its_seed():
    a, b = _discordant(50, 30, 50)
    one, two = paired_bootstrap(a, b, 3000, seed=7), paired_bootstrap(a, b, 3000, seed=7)
    assert one == two
    assert paired_bootstrap(a, b, 3000, seed=8) != one
    with pytest.raises(ValueError, match="one shape"):
        paired_bootstrap(a, b[:, :10])


def test_t_interval():
    ci = t_interval([1.0, 2.0, 3.0])  # s = 1, t_{0.975, 2} = 4.303
    assert ci.estimate == 2.0 and ci.hi - 2.0 == pytest.approx(4.303 / math.sqrt(3)) and ci.lo == pytest.approx(2 - 4.303 / math.sqrt(3))
    single = t_interval([0.5, None, float("nan")])
    assert single.estimate == 0.5 and single.lo is None and single.n == 1
    assert t_interval([]) is None
    clipped = t_interval([0.1, 0.9], bounds=(0.0, 1.0))  # +-12.706 * 0.566 / sqrt(2): far past [0, 1]
    assert (clipped.estimate, clipped.lo, clipped.hi) == (0.5, 0.0, 1.0)


def test_ratio_bootstrap_pairs_seeds():
    sgd, adam = [1.0, 2.0, 3.0], [2.0, 4.0, 6.0]  # every seed's ratio is 0.5: paired, no spread
    ci = ratio_bootstrap(sgd, adam, n_resamples=2000, seed=0)
    assert (ci.estimate, ci.lo, ci.hi) == (0.5, 0.5, 0.5)
    unpaired = ratio_bootstrap(sgd, adam, n_resamples=2000, seed=0, paired=False)
    assert unpaired.lo < 0.5 < unpaired.hi
    assert ratio_verdict(ci.lo, ci.hi, 0.1) == "lower"
    assert ratio_verdict(0.95, 1.05, 0.1) == "same" and ratio_verdict(1.2, 1.5, 0.1) == "higher"
    assert ratio_verdict(0.5, 1.5, 0.1) == "inconclusive"
    assert ratio_bootstrap([0.0, 0.0], [0.0, 0.0]) is None  # 0 / 0: no ratio
    zero = ratio_bootstrap([0.0, 0.0, 0.0], [1.0, 1.1, 0.9], n_resamples=100)  # SGD's optimizer state
    assert (zero.estimate, zero.lo, zero.hi) == (0.0, 0.0, 0.0)


def test_verdict_edges():
    assert verdict(-1.9, 1.9, 2.0) == "matches"
    assert verdict(0.5, 1.5, 2.0) == "matches"  # inside the margin wins over "better"
    assert verdict(0.5, 3.0, 2.0) == "better" and verdict(-3.0, -0.1, 2.0) == "worse"
    assert verdict(-3.0, 1.0, 2.0) == "inconclusive" and verdict(None, None, 2.0) == "inconclusive"


def test_eval_size_simulation_hits_its_accuracies_and_pairs():
    from harness.report.eval_size import simulate

    a, b = simulate(4000, (0.75, 0.6), rho=1.0, seed_sd=0.0, seeds=2, rng=np.random.default_rng(0))
    assert a.shape == b.shape == (2, 4000)
    assert a.mean() == pytest.approx(0.75, abs=0.03) and b.mean() == pytest.approx(0.6, abs=0.03)
    assert (b <= a).all()  # rho = 1: one difficulty, so whatever the weaker method solves the stronger does
