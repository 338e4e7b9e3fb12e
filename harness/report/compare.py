"""Each method at its lr chosen on validation, compared with the baseline (AdamW) with intervals.

Selection: per variant (model, task, setting, optimizer, momentum, objective), the lr with the highest mean
over seeds of `eval/val_accuracy_final` (ties: higher mean `eval/val_accuracy_best`, then the
smaller lr). Results without validation keys (written before the validation split existed) fall
back to the test accuracy, and the table says so: that choice is biased upwards.
Reported at that lr: the TEST accuracy `eval/accuracy_final`, mean and 95% t interval over seeds.

Against the baseline at its own chosen lr, in the same (model, task, setting, objective):
- accuracy: paired two-level bootstrap of `eval/test_correct_final` over (seed, test problem),
  on the seeds both sides have (harness.report.stats.paired_bootstrap), in points; verdict
  against `margin_points` (stats.verdict);
- peak memory (`mem/peak_bytes`) and bf16 changed fraction (`sparsity/changed_fraction_bf16`):
  ratio of means over seeds, paired seed bootstrap (stats.ratio_bootstrap), verdict against
  `ratio_margin` (stats.ratio_verdict).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Optional

import numpy as np

from harness.metrics import SELECT_BY, SELECT_TIEBREAK, summary

from .stats import Interval, paired_bootstrap, ratio_bootstrap, ratio_verdict, t_interval, verdict

Row = dict[str, Any]
SELECT_KEY, SELECT_TIE_KEY = SELECT_BY, SELECT_TIEBREAK  # validation: eval/val_accuracy_final, _best
TEST_KEY = summary("eval/accuracy_final")
TEST_CORRECT_KEY = summary("eval/test_correct_final")
RATIO_KEYS = {"peak memory": summary("mem/peak_bytes"), "% changed bf16": summary("sparsity/changed_fraction_bf16")}


@dataclass(frozen=True)
class ReportOptions:
    """The report's statistics settings (python -m harness.report --help lists them as flags)."""

    baseline: str = "adamw"  # optimizer name every other method is compared with
    margin_points: float = 2.0  # accuracy difference verdict margin, in points
    ratio_margin: float = 0.10  # memory / sparsity ratio verdict margin (relative)
    bootstrap_resamples: int = 10_000
    bootstrap_seed: int = 0
    resample_seeds: bool = True  # two-level (seeds, then problems); False: problems within each seed only


DEFAULT_OBJECTIVE = "grpo"  # the objective of results written before `trainer.objective` existed


def objective_of(r: Row) -> str:
    """A row's or group's training objective (`trainer.objective`: grpo, rloo, sft). A result without
    it takes it from its overrides (`trainer.objective=X`, else `trainer=X`: conf/trainer/X.yaml
    names objective X), else it is from before objectives existed: grpo."""
    if r.get("objective"):
        return str(r["objective"])
    found = {}
    for item in r.get("overrides") or []:
        key, _, value = str(item).lstrip("+~").partition("=")
        if key in ("trainer.objective", "trainer") and value:
            found[key] = value
    return found.get("trainer.objective") or found.get("trainer") or DEFAULT_OBJECTIVE


def kind(objective: str) -> Optional[str]:
    """"RL", "SFT", or None for a name the objective registry does not know (harness.objectives.kind)."""
    from harness.objectives import kind as registered_kind

    return registered_kind(objective)


def objective_order(objective: str) -> tuple:
    """RL objectives first, then SFT, then unknown ones; by name within each."""
    return (("RL", "SFT").index(kind(objective)) if kind(objective) else 2, objective)


def variant(g: Row) -> tuple:
    """(model, task, setting, optimizer, momentum, objective): a group without its lr."""
    return (g["model"], g["task"], g.get("setting", ""), g["optimizer"], g["momentum"], objective_of(g))


def chosen_lr(groups: Iterable[Row]) -> dict[tuple, Row]:
    """Each variant's group at its lr chosen on validation (the module docstring's rule); the
    winner's "selected_on" is "validation" or "test" (no validation results in that variant)."""
    by_variant: dict[tuple, list[Row]] = {}
    for g in groups:
        by_variant.setdefault(variant(g), []).append(g)
    winners: dict[tuple, Row] = {}
    for v, members in by_variant.items():
        has_val = any(g.get("val_acc_final_mean") is not None for g in members)
        first, second = ("val_acc_final", "val_acc_best") if has_val else ("acc_final", "acc_best")

        def score(g: Row) -> tuple:
            a, b = g.get(f"{first}_mean"), g.get(f"{second}_mean")
            lr = -g["lr"] if isinstance(g["lr"], (int, float)) else -math.inf
            return (-math.inf if a is None else a, -math.inf if b is None else b, lr)

        best = max(members, key=score)
        best["selected_on"] = "validation" if has_val else "test"
        winners[v] = best
    return winners


def _by_seed(g: Row, key: str) -> dict[Any, Any]:
    return {m.get("seed"): m.get(key) for m in g["members"] if m.get(key) is not None}


def paired_scores(g: Row, base: Row) -> tuple[Optional[np.ndarray], Optional[np.ndarray], str]:
    """(g's, base's) per-problem test scores in points, [seeds, problems] each, on their common
    seeds (row s is the same seed on both sides), and the basis ("3 seeds x 40 problems");
    (None, None, reason) when the per-problem scores are missing or do not line up."""
    a, b = _by_seed(g, TEST_CORRECT_KEY), _by_seed(base, TEST_CORRECT_KEY)
    seeds = sorted((s for s in a if s in b), key=str)
    if not seeds:
        return None, None, f"no {TEST_CORRECT_KEY} on common seeds"
    lengths = {len(a[s]) for s in seeds} | {len(b[s]) for s in seeds}
    if len(lengths) != 1:
        return None, None, f"{TEST_CORRECT_KEY} lengths differ ({sorted(lengths)}): not the same test problems"
    xa = 100 * np.array([a[s] for s in seeds], dtype=float)  # [S, N]
    xb = 100 * np.array([b[s] for s in seeds], dtype=float)  # [S, N]
    return xa, xb, f"{len(seeds)} seeds x {xa.shape[1]} problems"


def accuracy_difference(g: Row, base: Row, opts: ReportOptions) -> tuple[Optional[Interval], str]:
    """Paired bootstrap of g - base on per-problem test scores over their common seeds, in
    points; (None, reason) when the per-problem scores are missing or do not line up."""
    xa, xb, basis = paired_scores(g, base)
    if xa is None or xb is None:
        return None, basis
    ci = paired_bootstrap(xa, xb, opts.bootstrap_resamples, opts.bootstrap_seed, resample_seeds=opts.resample_seeds)
    return ci, basis


def ratio(g: Row, base: Row, key: str, opts: ReportOptions) -> Optional[Interval]:
    """mean(g) / mean(base) of `key` over their common seeds, seeds resampled in pairs."""
    a, b = _by_seed(g, key), _by_seed(base, key)
    seeds = sorted((s for s in a if s in b and _finite(a[s]) and _finite(b[s])), key=str)
    if not seeds:
        return None
    return ratio_bootstrap([a[s] for s in seeds], [b[s] for s in seeds], opts.bootstrap_resamples,
                           opts.bootstrap_seed)


def comparisons(groups: list[Row], opts: ReportOptions) -> list[Row]:
    """One dict per chosen variant: "group", "test" (t interval of test accuracy), and, when a
    baseline exists in its (model, task, setting, objective), "baseline", "diff", "diff_basis",
    "diff_verdict", "ratios" {label: (Interval | None, verdict)}."""
    chosen = chosen_lr(groups)
    bases = {(v[0], v[1], v[2], v[5]): g for v, g in chosen.items() if v[3] == opts.baseline}
    out = []
    for v, g in chosen.items():
        c: Row = {"group": g, "test": t_interval([m.get(TEST_KEY) for m in g["members"]], bounds=(0.0, 1.0)),
                  "val": t_interval([m.get(SELECT_KEY) for m in g["members"]], bounds=(0.0, 1.0))}
        base = bases.get((v[0], v[1], v[2], v[5]))
        if base is not None and base is not g:
            c["baseline"] = base
            c["diff"], c["diff_basis"] = accuracy_difference(g, base, opts)
            c["diff_verdict"] = verdict(*(_bounds(c["diff"])), opts.margin_points)
            c["ratios"] = {}
            for label, key in RATIO_KEYS.items():
                r = ratio(g, base, key, opts)
                c["ratios"][label] = (r, ratio_verdict(*_bounds(r), opts.ratio_margin))
        out.append(c)
    return out


def _bounds(ci: Optional[Interval]) -> tuple[Optional[float], Optional[float]]:
    return (None, None) if ci is None else (ci.lo, ci.hi)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
