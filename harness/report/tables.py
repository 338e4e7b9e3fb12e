"""Aggregate report rows over seeds, pick each method's lr on validation, render markdown and CSV.

Groups are the "ok" rows sharing (model, task, setting, objective, optimizer, lr, momentum). The
objective is the trial's `trainer.objective` (grpo, rloo, sft; "grpo" for results from before it
existed), never part of the setting. The setting is the trial's other overrides that differ across
the sweep (e.g. `trainer.prompts_per_step=32`, `model.param_dtype=bfloat16`; "" when there are
none). A variant is a group without its lr, so SGD with and without momentum are two methods. Its
chosen lr maximises the mean VALIDATION accuracy (harness.report.compare.chosen_lr); the reported
accuracy is the TEST accuracy at that lr.

report.csv has one row per group, with these columns (means and stds over seeds; std uses
ddof=1 when n > 1, else 0; ci_lo/ci_hi: 95% t interval over seeds clipped to [0, 1], empty with one seed;
metrics to 12 significant digits; a metric no seed reported is empty):
    model, task, setting, objective, optimizer, lr, momentum  the group
    n, seeds                              trials (seeds) in the group, ";"-separated seeds
    chosen_lr                             1 if lr is its variant's lr chosen on validation, else 0
    val_acc_final_mean, _std, _ci_lo, _ci_hi   eval/val_accuracy_final (validation, fraction)
    acc_final_mean, _std, _ci_lo, _ci_hi  eval/accuracy_final (test split, fraction)
    val_acc_best_mean, _std               eval/val_accuracy_best
    acc_gain_mean, _std                   eval/accuracy_final - eval/accuracy_initial (test)
    opt_state_gb_mean, _std               mem/optimizer_state_bytes / 1e9
    peak_mem_gb_mean, _std                mem/peak_bytes / 1e9
    peak_kind                             mem/peak_kind (cpu_rss | cpu_rss_retained | cuda_max_allocated)
    changed_bf16_pct_mean, _std           100 * sparsity/changed_fraction_bf16 (% weights changed)
    changed_fp32_pct_mean, _std           100 * sparsity/changed_fraction_fp32
    changed_tol1e5_pct_mean, _std         100 * sparsity/changed_fraction_tol1e-5
    rounded_away_pct_mean, _std           100 * sparsity/rounded_away_fraction (moved in fp32, not in bf16)
    update_abs_median_mean, _std          sparsity/update_abs_median (median |final - initial|)
    update_rank_mean, update_rank_std     sparsity/update_rank_mean (effective rank of the update)
    step_s_mean, step_s_std               perf/step_s_mean (seconds per training step)
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from harness.metrics import summary

from .compare import RATIO_KEYS, ReportOptions, chosen_lr, comparisons, objective_of, variant  # noqa: F401 - re-exported
from .stats import t_interval

GROUP_KEYS = ("model", "task", "setting", "objective", "optimizer", "lr", "momentum")
CORE_OVERRIDES = ("optimizer", "optimizer.lr", "optimizer.momentum", "seed", "model", "task", "sweeps",
                  "trainer", "trainer.objective")  # trainer=sft picks the objective: its own group key
Row = dict[str, Any]


@dataclass(frozen=True)
class Metric:
    column: str  # csv prefix: <column>_mean, <column>_std
    header: str  # markdown header
    get: Callable[[Row], Any]  # value of one trial, or None
    fmt: Callable[[float], str]  # markdown formatting


def _key(name: str, scale: float = 1.0) -> Callable[[Row], Any]:
    summary(name)  # a public result key (harness/metrics.py), or KeyError at import

    def get(r: Row) -> float | None:
        x = _num(r.get(name))
        return None if x is None else x * scale

    return get


def _gain(r: Row) -> Any:
    final, initial = _num(r.get("eval/accuracy_final")), _num(r.get("eval/accuracy_initial"))
    return None if final is None or initial is None else final - initial


def sig3(x: float) -> str:
    """3 significant digits in fixed notation (0.0200, 8.70, 91.3, 100)."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    decimals = max(0, 2 - math.floor(math.log10(abs(x))))
    return f"{x:.{decimals}f}"


def _fixed(decimals: int) -> Callable[[float], str]:
    return lambda x: f"{x:.{decimals}f}"


METRICS = (
    Metric("val_acc_final", "val acc", _key("eval/val_accuracy_final"), _fixed(3)),
    Metric("acc_final", "test acc", _key("eval/accuracy_final"), _fixed(3)),
    Metric("val_acc_best", "val best", _key("eval/val_accuracy_best"), _fixed(3)),
    Metric("acc_gain", "test gain", _gain, lambda x: f"{x:+.3f}"),
    Metric("opt_state_gb", "opt state GB", _key("mem/optimizer_state_bytes", 1e-9), _fixed(3)),
    Metric("peak_mem_gb", "peak mem GB", _key("mem/peak_bytes", 1e-9), _fixed(3)),
    Metric("changed_bf16_pct", "% changed bf16", _key("sparsity/changed_fraction_bf16", 100.0), sig3),
    Metric("changed_fp32_pct", "% changed fp32", _key("sparsity/changed_fraction_fp32", 100.0), sig3),
    Metric("changed_tol1e5_pct", "% changed >1e-5", _key("sparsity/changed_fraction_tol1e-5", 100.0), sig3),
    Metric("rounded_away_pct", "% rounded away", _key("sparsity/rounded_away_fraction", 100.0), sig3),
    Metric("update_abs_median", "median abs update", _key("sparsity/update_abs_median"), lambda x: f"{x:.2e}"),
    Metric("update_rank", "update rank", _key("sparsity/update_rank_mean"), sig3),
    Metric("step_s", "s/step", _key("perf/step_s_mean"), sig3),
)
CI_COLUMNS = ("val_acc_final", "acc_final")  # also get a 95% t interval over seeds
CSV_COLUMNS = [*GROUP_KEYS, "n", "seeds", "chosen_lr"]
for _m in METRICS:
    CSV_COLUMNS += [f"{_m.column}_mean", f"{_m.column}_std"]
    CSV_COLUMNS += [f"{_m.column}_ci_lo", f"{_m.column}_ci_hi"] if _m.column in CI_COLUMNS else []
    CSV_COLUMNS += ["peak_kind"] if _m.column == "peak_mem_gb" else []


def mean_std(values: Iterable[Any]) -> tuple[float | None, float | None]:
    """Mean and std (ddof=1 when n > 1, else 0) of the finite values; (None, None) if there are none."""
    xs = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if xs.size == 0:
        return None, None
    return float(xs.mean()), float(xs.std(ddof=1)) if xs.size > 1 else 0.0


def settings(rows: Iterable[Row]) -> dict[int, str]:
    """id(row) -> its setting: the overrides, other than CORE_OVERRIDES, whose value is not the
    same in every ok row (absent counts as a value), sorted, ","-joined."""
    ok = [r for r in rows if r.get("status") == "ok"]
    parsed = {id(r): dict(_split(o) for o in r.get("overrides") or []) for r in ok}
    keys = {k for d in parsed.values() for k in d
            if k.split(".")[0] not in ("sweeps",) and k not in CORE_OVERRIDES and k != "prune.sweep"}  # the sweeper's link
    varying = sorted(k for k in keys if len({d.get(k) for d in parsed.values()}) > 1)
    return {i: ",".join(f"{k}={d[k]}" for k in varying if k in d) for i, d in parsed.items()}


def _split(override: str) -> tuple[str, str]:
    key, _, value = override.lstrip("+~").partition("=")
    return key, value


def aggregate(rows: Iterable[Row]) -> list[Row]:
    """One dict per group of "ok" rows: the group keys, n, seeds, peak_kind, <column>_mean/_std
    (and _ci_lo/_ci_hi for CI_COLUMNS), chosen_lr (0/1), selected_on and members (the rows);
    sorted by the group keys."""
    rows = list(rows)
    setting = settings(rows)
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        if r.get("status") == "ok":
            r = {**r, "setting": setting.get(id(r), ""), "objective": objective_of(r)}
            groups.setdefault(tuple(r.get(k) for k in GROUP_KEYS), []).append(r)
    out = []
    for key, members in groups.items():
        g: Row = dict(zip(GROUP_KEYS, key))
        g["n"] = len(members)
        g["seeds"] = ";".join(str(m.get("seed")) for m in sorted(members, key=lambda m: _sortable(m.get("seed"))))
        kinds = sorted({str(m["mem/peak_kind"]) for m in members if m.get("mem/peak_kind")})
        g["peak_kind"] = ";".join(kinds)
        for m in METRICS:
            values = [m.get(r) for r in members]
            g[f"{m.column}_mean"], g[f"{m.column}_std"] = mean_std(values)
            if m.column in CI_COLUMNS:
                ci = t_interval(values, bounds=(0.0, 1.0))  # accuracies
                g[f"{m.column}_ci_lo"], g[f"{m.column}_ci_hi"] = (None, None) if ci is None else (ci.lo, ci.hi)
        g["members"] = members
        out.append(g)
    out.sort(key=lambda g: tuple(_sortable(g[k]) for k in GROUP_KEYS))
    chosen = {id(g) for g in chosen_lr(out).values()}
    for g in out:
        g["chosen_lr"] = int(id(g) in chosen)
    return out


def several_objectives(groups: Iterable[Row]) -> bool:
    """Whether the groups hold more than one training objective (an RL-vs-SFT sweep)."""
    return len({objective_of(g) for g in groups}) > 1


def variant_label(g: Row) -> str:
    """"sgd", "sgd+m0.9", "adamw", with the setting if any: "sgd (trainer.prompts_per_step=32)"."""
    m = g.get("momentum")
    label = f"{g['optimizer']}+m{m:g}" if isinstance(m, (int, float)) and m else str(g["optimizer"])
    return f"{label} ({g['setting']})" if g.get("setting") else label


def main_table(groups: list[Row]) -> str:
    """Markdown table: one line per group, mean ± std over seeds (just the mean when n = 1); the
    lr chosen on validation in bold. The setting and objective columns show when they vary."""
    with_setting = any(g.get("setting") for g in groups)
    with_objective = several_objectives(groups)
    header = ["model", "task", *(["setting"] if with_setting else []), *(["objective"] if with_objective else []),
              "optimizer", "lr", "momentum", "n", *(m.header for m in METRICS)]
    lines = [_md_row(header), _md_row(["---"] * len(header))]
    for g in groups:
        momentum = "–" if g["momentum"] is None else _plain(g["momentum"])
        lr = f"**{fmt_lr(g['lr'])}**" if g.get("chosen_lr") else fmt_lr(g["lr"])
        cells = [str(g["model"]), str(g["task"]), *([g.get("setting") or "–"] if with_setting else []),
                 *([objective_of(g)] if with_objective else []), str(g["optimizer"]), lr, momentum, str(g["n"])]
        cells += [_mean_std_cell(g, m.column, m.fmt) for m in METRICS]
        lines.append(_md_row(cells))
    return "\n".join(lines)


def chosen_table(groups: list[Row], opts: ReportOptions) -> str:
    """Markdown table: each method at its lr chosen on validation, its test accuracy with a 95%
    interval over seeds, and the difference and ratios to the baseline (in the same objective)
    with verdicts. An objective column shows when the sweep has more than one."""
    base = opts.baseline
    with_objective = several_objectives(groups)
    header = ["model", "task", *(["objective"] if with_objective else []), "method", "lr (chosen on)", "n", "val acc",
              "test acc [95% CI]",
              f"method − {base}: test acc [95% CI]", f"peak mem ÷ {base}", f"% changed bf16 ÷ {base}"]
    lines = [_md_row(header), _md_row(["---"] * len(header))]
    for c in comparisons(groups, opts):
        g = c["group"]
        cells = [str(g["model"]), str(g["task"]), *([objective_of(g)] if with_objective else []), variant_label(g),
                 f"{fmt_lr(g['lr'])} ({g['selected_on']})",
                 str(g["n"]), _interval_cell(c["val"], _fixed(3), with_ci=False), _interval_cell(c["test"], _fixed(3))]
        if "baseline" not in c:
            cells += ["(baseline)" if g["optimizer"] == base else "no baseline"] + ["–", "–"]
        else:
            diff = c["diff"]
            cells.append(f"{diff.estimate:+.1f} [{diff.lo:+.1f}, {diff.hi:+.1f}] points: {c['diff_verdict']}"
                         if diff is not None else f"– ({c['diff_basis']})")
            for label in RATIO_KEYS:
                r, word = c["ratios"][label]
                cells.append("–" if r is None else (f"×{sig3(r.estimate)} [{sig3(r.lo)}, {sig3(r.hi)}]: {word}"
                                                    if r.lo is not None else f"×{sig3(r.estimate)} (one seed)"))
        lines.append(_md_row(cells))
    return "\n".join(lines)


def protocol_text(opts: ReportOptions) -> str:
    """The statistics protocol, stated under the chosen-lr table."""
    m, rm = opts.margin_points, opts.ratio_margin
    return (
        "Each method's lr is **chosen on the validation split** (highest mean `eval/val_accuracy_final` over "
        "seeds; \"(test)\" marks old results without validation, chosen on test and biased upwards); the "
        "**test** accuracy (`eval/accuracy_final`) is reported at that lr, as mean [95% t interval over seeds]. "
        f"The difference to {opts.baseline} (each at its own chosen lr) is in accuracy points, with a paired "
        f"bootstrap over (seed, test problem) of `eval/test_correct_final` ({opts.bootstrap_resamples} "
        f"resamples, numpy seed {opts.bootstrap_seed}; "
        + ("two-level: each resample draws the seeds with replacement, then each drawn seed's problems with "
           "replacement, the same cells on both sides, so training's seed-to-seed variation is in the interval; "
           "with little of it this is conservative, up to ~1.4x wider than problems alone). "
           if opts.resample_seeds else
           "problems only: each seed's problems are drawn with replacement, the same cells on both sides; the "
           "trained models are taken as fixed, so training's seed-to-seed variation is not in the interval). ")
        + f"Verdict with margin {m:g} points: **matches** if the whole interval is inside ±{m:g}; else "
        "**better** if its low end is > 0, **worse** if its high end is < 0; else **inconclusive**. "
        f"Ratios (peak memory, % weights changed in bf16) are ratios of means over seeds with a paired seed "
        f"bootstrap (same resamples and seed); verdict with margin {rm:.0%}: **same** if inside "
        f"[1/{1 + rm:g}, {1 + rm:g}], else **lower** (high end < 1), **higher** (low end > 1), or **inconclusive**."
    )


def _interval_cell(ci: Any, fmt: Callable[[float], str], with_ci: bool = True) -> str:
    if ci is None:
        return "–"
    if not with_ci or ci.lo is None:
        return fmt(ci.estimate)
    return f"{fmt(ci.estimate)} [{fmt(ci.lo)}, {fmt(ci.hi)}]"


def failed_table(rows: Iterable[Row]) -> str:
    """Markdown table of failed and missing trials with their reasons ("" if none); pruned trials are neither."""
    bad = [r for r in rows if r.get("status") not in ("ok", "pruned")]
    if not bad:
        return ""
    lines = [_md_row(["trial", "dir", "status", "reason"]), _md_row(["---"] * 4)]
    for r in bad:
        reason = str(r.get("error") or "").replace("|", "\\|").replace("\n", " ")
        lines.append(_md_row([str(r.get("name")), f"`{r.get('dir')}`", str(r.get("status")), reason]))
    return "\n".join(lines)


def to_csv(groups: list[Row]) -> str:
    """report.csv text: CSV_COLUMNS, one line per group, full precision, empty for missing values."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for g in groups:
        writer.writerow([_csv_cell(g.get(c), c in GROUP_KEYS) for c in CSV_COLUMNS])
    return buf.getvalue()


def _mean_std_cell(g: Row, column: str, fmt: Callable[[float], str]) -> str:
    """"mean ± std" with the std at the mean's decimals; just the mean when n = 1; "–" if no value."""
    mean, std = g[f"{column}_mean"], g[f"{column}_std"]
    if mean is None:
        return "–"
    text = fmt(mean)
    if g["n"] > 1:
        if "e" in text:  # scientific: the std in the same notation
            text += f" ± {std:.{len(text.partition('e')[0].partition('.')[2])}e}"
        else:
            decimals = len(text.partition(".")[2])
            text += f" ± {std:.{decimals}f}"
    return text


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def fmt_lr(lr: Any) -> str:
    return f"{lr:g}" if isinstance(lr, (int, float)) else str(lr)


def _csv_cell(x: Any, exact: bool) -> str:
    """Group keys exactly as the trial wrote them; metrics to 12 significant digits; None is empty."""
    if isinstance(x, float) and not exact:
        return f"{x:.12g}"
    return _plain(x)


def _plain(x: Any) -> str:
    return repr(x) if isinstance(x, float) else ("" if x is None else str(x))


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def _sortable(x: Any) -> tuple:
    """Sort key for mixed None / numbers / strings."""
    if x is None:
        return (0, 0.0, "")
    if isinstance(x, (int, float)):
        return (1, float(x), "")
    return (2, 0.0, str(x))
