"""PNG plots of an aggregated sweep, drawn on matplotlib's Agg canvas (no pyplot, no global backend).

Bands and error bars are 95% t intervals over seeds unless said otherwise.
curves.png            validation accuracy (eval/val_curve) and train reward (train/reward_curve;
                      point i is step i) vs step, mean and band over seeds, one line per method at
                      its lr chosen on validation
lr_sensitivity.png    test accuracy vs lr (log x) with error bars, validation accuracy dashed, one
                      line per method, its chosen lr circled
difference.png        each method's test accuracy minus the baseline's (points) with the paired
                      bootstrap interval, the ±margin band shaded (harness.report.compare)
sparsity_by_kind.png  % weights changed (bf16) per module kind, one bar per method at its chosen lr
                      with error bars (log y when the values span more than 100x; a zero is marked "0")
sparsity_steps.png    per step: % bf16 weights changed by that step and since the start, per method
                      at its chosen lr (mean over seeds; from metrics.jsonl)
sparsity_scaling.png  % weights changed in bf16 vs the median per-coordinate |update| (log-log), one
                      point per trial (open squares: bf16 master weights), per optimizer a line
                      fitted in log-log to its fp32-master trials and, when it rises, the x where
                      it reaches the paper's 0.02%
rl_vs_sft.png         (written by harness.report.contrast, only when the sweep has several objectives)
                      the 2x2: test accuracy gain and % weights changed in bf16 per objective, one
                      line per method at its chosen lr (contrast_figure)
A plot without data is not written. Labels name the objective when the sweep has more than one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .compare import ReportOptions, comparisons, kind, objective_order
from .stats import t_interval
from .tables import Row, chosen_lr, fmt_lr, objective_of, several_objectives, variant_label

KINDS = ("embed", "attention", "mlp", "norm", "head", "other")


PAPER_BF16_CHANGED = 2e-4  # the paper's SGD: fewer than 0.02% of the weights change (bf16)


def write_plots(groups: list[Row], out_dir: Path, opts: ReportOptions | None = None) -> list[Path]:
    """Write every plot that has data into out_dir; return the paths written."""
    opts = opts or ReportOptions()
    plots: dict[str, Callable[[list[Row]], Figure | None]] = {
        "curves.png": curves_figure,
        "lr_sensitivity.png": lr_sensitivity_figure,
        "difference.png": lambda gs: difference_figure(gs, opts),
        "sparsity_by_kind.png": sparsity_figure,
        "sparsity_steps.png": sparsity_steps_figure,
        "sparsity_scaling.png": sparsity_scaling_figure,
    }
    return [out_dir / name for name, make in plots.items() if write_figure(make(groups), out_dir / name)]


def write_figure(fig: Figure | None, path: Path) -> bool:
    """Save fig as a PNG at path (nothing when fig is None); whether it was written."""
    if fig is None:
        return False
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120)
    return True


def _band(ax: Axes, xs: np.ndarray, per_seed: np.ndarray, label: str, bounds: tuple[float, float] | None = None,
          **kw: Any) -> None:
    """Mean over seeds (rows of per_seed [S, T], NaN = missing) with its 95% t band, clipped to bounds."""
    stats = [t_interval(per_seed[:, j], bounds) for j in range(per_seed.shape[1])]
    keep = [j for j, c in enumerate(stats) if c is not None]
    if not keep:
        return
    x = xs[keep]
    (line,) = ax.plot(x, [stats[j].estimate for j in keep], label=label, **kw)
    lo = [stats[j].lo if stats[j].lo is not None else stats[j].estimate for j in keep]
    hi = [stats[j].hi if stats[j].hi is not None else stats[j].estimate for j in keep]
    ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)


def _matrix(curves: list[dict[int, float]]) -> tuple[np.ndarray, np.ndarray]:
    """(steps [T], values [S, T]) from one {step: value} per seed, NaN where a seed has no value."""
    steps = np.array(sorted({s for c in curves for s in c}), dtype=float)
    m = np.full((len(curves), len(steps)), np.nan)
    for i, c in enumerate(curves):
        for j, s in enumerate(steps):
            m[i, j] = c.get(int(s), np.nan)
    return steps, m


def curves_figure(groups: list[Row]) -> Figure | None:
    best = list(chosen_lr(groups).values())
    if not any(m.get("eval/val_curve") or m.get("train/reward_curve") for g in best for m in g["members"]):
        return None
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    acc_ax, rew_ax = fig.subplots(1, 2)
    for g in best:
        label = f"{_label(g, groups)} lr={fmt_lr(g['lr'])}"
        accs = [{int(p["step"]): float(p["accuracy"]) for p in m.get("eval/val_curve") or []
                 if isinstance(p, dict) and _finite(p.get("accuracy")) and _finite(p.get("step"))} for m in g["members"]]
        if any(accs):
            _band(acc_ax, *_matrix(accs), label=label, bounds=(0.0, 1.0), marker="o", ms=3)
        rewards = [{i: float(x) for i, x in enumerate(m.get("train/reward_curve") or []) if _finite(x)} for m in g["members"]]
        if any(rewards):
            steps, values = _matrix(rewards)
            bounds = (min(0.0, float(np.nanmin(values))), max(1.0, float(np.nanmax(values))))  # verifiers score in [0, 1]
            _band(rew_ax, steps, values, label=label, bounds=bounds)
    _style(acc_ax, "step", "validation accuracy", "validation accuracy (chosen lr, mean and 95% band over seeds)")
    _style(rew_ax, "step", "train reward (mean)", "train reward (chosen lr, mean and 95% band over seeds)")
    return fig


def lr_sensitivity_figure(groups: list[Row]) -> Figure | None:
    points = [g for g in groups if isinstance(g["lr"], (int, float)) and g["lr"] > 0 and g["acc_final_mean"] is not None]
    if not points:
        return None
    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    ax = fig.subplots()
    variants: dict[tuple, list[Row]] = {}
    for g in points:
        variants.setdefault((g["model"], g["task"], g.get("setting"), g["optimizer"], g["momentum"], objective_of(g)),
                            []).append(g)
    for members in variants.values():
        members.sort(key=lambda g: g["lr"])
        lrs = [g["lr"] for g in members]
        yerr = np.array([[g["acc_final_mean"] - (g["acc_final_ci_lo"] if g.get("acc_final_ci_lo") is not None else g["acc_final_mean"]),
                          (g["acc_final_ci_hi"] if g.get("acc_final_ci_hi") is not None else g["acc_final_mean"]) - g["acc_final_mean"]]
                         for g in members]).T.clip(min=0)  # [2, L]
        bars = ax.errorbar(lrs, [g["acc_final_mean"] for g in members], yerr=yerr, marker="o", capsize=3,
                           label=f"{_label(members[0], groups)} test")
        val = [(g["lr"], g["val_acc_final_mean"]) for g in members if g.get("val_acc_final_mean") is not None]
        if val:
            ax.plot(*zip(*val), "--", marker=".", color=bars[0].get_color(), alpha=0.7,
                    label=f"{_label(members[0], groups)} val")
        top = [g for g in members if g.get("chosen_lr")]
        ax.plot([g["lr"] for g in top], [g["acc_final_mean"] for g in top], "o", ms=12, mfc="none", color="k")
    ax.set_xscale("log")
    _style(ax, "learning rate", "final accuracy", "test accuracy vs lr (95% CI over seeds); circled: chosen on val")
    return fig


def difference_figure(groups: list[Row], opts: ReportOptions) -> Figure | None:
    rows = [c for c in comparisons(groups, opts) if c.get("diff") is not None]
    if not rows:
        return None
    fig = Figure(figsize=(6.5, 1.2 + 0.5 * len(rows)), layout="constrained")
    ax = fig.subplots()
    ys = np.arange(len(rows))
    est = np.array([c["diff"].estimate for c in rows])
    err = np.array([[c["diff"].estimate - c["diff"].lo, c["diff"].hi - c["diff"].estimate] for c in rows]).T.clip(min=0)  # [2, K]
    ax.axvspan(-opts.margin_points, opts.margin_points, color="0.85", label=f"±{opts.margin_points:g} points (matches)")
    ax.axvline(0, color="k", lw=0.8)
    ax.errorbar(est, ys, xerr=err, fmt="o", capsize=4, color="C0")
    ax.set_yticks(ys, [f"{_label(c['group'], groups)} lr={fmt_lr(c['group']['lr'])}: {c['diff_verdict']}" for c in rows])
    _style(ax, f"test accuracy − {opts.baseline} (points, paired bootstrap 95% CI)", "",
           f"difference to {opts.baseline}, each at its lr chosen on validation")
    return fig


def sparsity_figure(groups: list[Row]) -> Figure | None:
    best = list(chosen_lr(groups).values())
    values = {id(g): _kind_pct(g) for g in best}
    kinds = [k for k in KINDS if any(k in v for v in values.values())]
    kinds += sorted({k for v in values.values() for k in v} - set(kinds))
    if not kinds:
        return None
    fig = Figure(figsize=(max(6.5, 1.3 * len(kinds) * max(1, len(best)) / 2), 4.2), layout="constrained")
    ax = fig.subplots()
    positive = [c.estimate for v in values.values() for c in v.values() if c.estimate > 0]
    log = bool(positive) and max(positive) / min(positive) > 100
    floor = min(positive) / 3 if log else 0.0
    width = 0.8 / len(best)
    x = np.arange(len(kinds))
    for i, g in enumerate(best):
        cis = [values[id(g)].get(k) for k in kinds]
        heights = [np.nan if c is None else c.estimate for c in cis]
        xs = x - 0.4 + width * (i + 0.5)
        shown = [h - floor if h > 0 or not log else np.nan for h in heights]
        bars = ax.bar(xs, shown, width, bottom=floor, label=f"{_label(g, groups)} lr={fmt_lr(g['lr'])}")
        for xi, c in zip(xs, cis):
            if c is not None and c.lo is not None:
                lo = max(c.lo, floor) if log else c.lo
                ax.errorbar([xi], [c.estimate], yerr=[[max(0.0, c.estimate - lo)], [max(0.0, c.hi - c.estimate)]], fmt="none",
                            ecolor="k", capsize=2, lw=0.8)
            if c is not None and c.estimate == 0:
                ax.annotate("0", (xi, floor), ha="center", va="bottom", fontsize=8, annotation_clip=False)
        del bars
    if log:
        ax.set_yscale("log")
        ax.set_ylim(floor, max(positive) * 3)
    ax.set_xlim(-0.5, len(kinds) - 0.5)
    ax.set_xticks(x, kinds)
    _style(ax, "module kind", "% weights changed (bf16)", "weights changed vs initial (chosen lr, mean, 95% CI over seeds)")
    return fig


def _kind_pct(g: Row) -> dict[str, Any]:
    """kind -> t interval over seeds of 100 * by_kind[kind]["changed_fraction_bf16"]."""
    acc: dict[str, list[float]] = {}
    for m in g["members"]:
        by_kind = m.get("sparsity/by_kind")
        for module_kind, stats in (by_kind.items() if isinstance(by_kind, dict) else []):
            if isinstance(stats, dict) and _finite(stats.get("changed_fraction_bf16")):
                acc.setdefault(str(module_kind), []).append(100.0 * stats["changed_fraction_bf16"])
    return {k: t_interval(v) for k, v in acc.items()}


def sparsity_steps_figure(groups: list[Row]) -> Figure | None:
    best = [g for g in chosen_lr(groups).values() if any(m.get("sparsity/step_curve") for m in g["members"])]
    if not best:
        return None
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    step_ax, total_ax = fig.subplots(1, 2)
    for g in best:
        label = f"{_label(g, groups)} lr={fmt_lr(g['lr'])}"
        for ax, key in ((step_ax, "step_changed_fraction_bf16"), (total_ax, "changed_fraction_bf16")):
            curves = [{int(p["step"]): 100.0 * p[key] for p in m.get("sparsity/step_curve") or [] if key in p}
                      for m in g["members"]]
            if any(curves):
                _band(ax, *_matrix(curves), label=label, bounds=(0.0, 100.0))
    _style(step_ax, "step", "% bf16 weights changed by the step", "changed by each step (bf16; mean, 95% band)")
    _style(total_ax, "step", "% bf16 weights changed since step 0", "changed vs the initial weights (bf16)")
    return fig


def scaling_points(groups: list[Row]) -> list[dict[str, Any]]:
    """One point per ok trial with a bf16 changed fraction: {"x": sparsity/update_abs_median (None
    unless > 0: with bf16 master weights most coordinates never move, so the median is 0), "y": 100 *
    sparsity/changed_fraction_bf16, "gain": test accuracy points gained (final - initial, or None),
    "method": optimizer label (no setting), "setting", "bf16_master": bool}."""
    points = []
    for g in groups:
        method = variant_label({**g, "setting": ""})
        if len({g2["model"] for g2 in groups}) > 1:
            method = f"{g['model']} {method}"
        for m in g["members"]:
            x, y = m.get("sparsity/update_abs_median"), m.get("sparsity/changed_fraction_bf16")
            final, initial = m.get("eval/accuracy_final"), m.get("eval/accuracy_initial")
            if _finite(y) and y > 0:
                points.append({"x": float(x) if _finite(x) and x > 0 else None, "y": 100.0 * float(y),
                               "gain": 100.0 * (final - initial) if _finite(final) and _finite(initial) else None,
                               "method": method, "setting": g.get("setting", ""),
                               "bf16_master": "param_dtype=bfloat16" in str(g.get("setting"))})
    return points


def loglog_fit(xs: list[float], ys: list[float]) -> tuple[float, float] | None:
    """(slope, intercept) of log10 y = slope * log10 x + intercept by least squares; None with
    fewer than 2 distinct x."""
    lx, ly = np.log10(xs), np.log10(ys)
    if len(set(np.round(lx, 12))) < 2:
        return None
    slope, intercept = np.polyfit(lx, ly, 1)
    return float(slope), float(intercept)


def paper_crossing(fit: tuple[float, float] | None) -> float | None:
    """The median |update| at which a log-log fit reaches the paper's 0.02% (None unless slope > 0)."""
    if fit is None or fit[0] <= 0:
        return None
    slope, intercept = fit
    return float(10 ** ((np.log10(100 * PAPER_BF16_CHANGED) - intercept) / slope))


def sparsity_scaling_figure(groups: list[Row]) -> Figure | None:
    """Left: % weights changed in bf16 against the median |update| per coordinate (fp32 master
    weights), log-log, with a least-squares line per optimizer drawn over the measured range and,
    in its legend, where it would reach the paper's 0.02%. Right: the same % against the test
    accuracy gained, every trial, so the bf16-master-weight arms (median update 0) show too."""
    points = scaling_points(groups)
    if not points:
        return None
    fig = Figure(figsize=(12, 5), layout="constrained")
    ax, gain_ax = fig.subplots(1, 2)
    paper = 100 * PAPER_BF16_CHANGED
    for a in (ax, gain_ax):
        a.axhline(paper, color="k", ls=":", lw=1, label="paper's SGD: < 0.02%")
    for i, method in enumerate(sorted({p["method"] for p in points})):
        color = f"C{i % 10}"
        mine = [p for p in points if p["method"] == method]
        for bf16 in (False, True):
            label = f"{method}{', bf16 master weights' if bf16 else ''}"
            style = dict(color=color, mfc="none" if bf16 else color, alpha=0.85, label=label)
            sel = [p for p in mine if p["bf16_master"] == bf16 and p["x"] is not None]
            if sel:
                ax.plot([p["x"] for p in sel], [p["y"] for p in sel], "s" if bf16 else "o", **style)
            sel = [p for p in mine if p["bf16_master"] == bf16 and p["gain"] is not None]
            if sel:
                gain_ax.plot([p["gain"] for p in sel], [p["y"] for p in sel], "s" if bf16 else "o", **style)
        fp32 = [p for p in mine if not p["bf16_master"] and p["x"] is not None]
        fit = loglog_fit([p["x"] for p in fp32], [p["y"] for p in fp32]) if len(fp32) > 1 else None
        if fit is not None:
            x_paper = paper_crossing(fit)
            lo, hi = min(p["x"] for p in fp32), max(p["x"] for p in fp32)
            xs = np.logspace(np.log10(lo) - 0.5, np.log10(hi) + 0.5, 50)
            where = f"0.02% at {x_paper:.1e}" if x_paper is not None else "never reaches 0.02%"
            ax.plot(xs, 10 ** (fit[0] * np.log10(xs) + fit[1]), "--", color=color, lw=1,
                    label=f"{method} fit, slope {fit[0]:.2f}: {where}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    gain_ax.set_yscale("log")
    _style(ax, "median per-coordinate |final − initial| (fp32)", "% weights changed (bf16)",
           "bf16 sparsity vs update size (fp32 master weights; a point per trial)")
    _style(gain_ax, "test accuracy gained (points)", "% weights changed (bf16)",
           "bf16 sparsity vs learning (every trial; squares: bf16 master weights)")
    return fig


def contrast_figure(groups: list[Row]) -> Figure | None:
    """The 2x2 (objective x optimizer). Left: test accuracy gained over the initial accuracy
    (points); right: % weights changed in bf16 (log y when the values span more than 100x). x: the
    objectives, RL first; one line per method (a colour per method, a line style per setting) at
    its lr chosen on validation in each objective; mean and 95% t interval over seeds. None unless
    there are several objectives."""
    if not several_objectives(groups):
        return None
    best = list(chosen_lr(groups).values())
    objectives = sorted({objective_of(g) for g in best}, key=objective_order)
    lines: dict[tuple[str, str], dict[str, Row]] = {}  # (method, setting) -> objective -> its chosen group
    for g in best:
        lines.setdefault((variant_label({**g, "setting": ""}), g.get("setting") or ""), {})[objective_of(g)] = g
    methods = sorted({m for m, _ in lines})
    settings = sorted({s for _, s in lines})
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    gain_ax, changed_ax = fig.subplots(1, 2)
    gain_ax.axhline(0, color="k", lw=0.8)
    measures = ((gain_ax, (-100.0, 100.0), lambda m: 100.0 * (m["eval/accuracy_final"] - m["eval/accuracy_initial"])
                 if _finite(m.get("eval/accuracy_final")) and _finite(m.get("eval/accuracy_initial")) else None),
                (changed_ax, (0.0, 100.0), lambda m: 100.0 * m["sparsity/changed_fraction_bf16"]
                 if _finite(m.get("sparsity/changed_fraction_bf16")) else None))
    positive: list[float] = []
    for i, ((method, setting), per_objective) in enumerate(sorted(lines.items())):
        dx = (i - (len(lines) - 1) / 2) * 0.05  # dodge the lines apart
        label = f"{method} ({setting})" if setting else method
        style = dict(color=f"C{methods.index(method) % 10}", ls=("-", "--", ":", "-.")[settings.index(setting) % 4])
        for ax, bounds, value in measures:
            cis = [(j, t_interval([value(m) for m in per_objective[o]["members"]], bounds) if o in per_objective else None)
                   for j, o in enumerate(objectives)]
            cis = [(j, c) for j, c in cis if c is not None]
            if not cis:
                continue
            est = np.array([c.estimate for _, c in cis])
            err = np.array([[c.estimate - (c.lo if c.lo is not None else c.estimate),
                             (c.hi if c.hi is not None else c.estimate) - c.estimate] for _, c in cis]).T  # [2, K]
            ax.errorbar([j + dx for j, _ in cis], est, yerr=err.clip(min=0), marker="o", capsize=3, label=label, **style)
            if ax is changed_ax:
                positive += [float(x) for x in est if x > 0]
    if positive and max(positive) / min(positive) > 100:
        changed_ax.set_yscale("log")
        changed_ax.set_ylim(min(positive) / 3, max(positive) * 3)
    ticks = [f"{o} ({kind(o) or '?'})" for o in objectives]
    for ax in (gain_ax, changed_ax):
        ax.set_xticks(np.arange(len(objectives)), ticks)
        ax.set_xlim(-0.5, len(objectives) - 0.5)
    _style(gain_ax, "objective", "test accuracy gained (points)",
           "test accuracy − initial (chosen lr; mean, 95% CI over seeds)")
    _style(changed_ax, "objective", "% weights changed (bf16)", "weights changed vs initial, bf16 (chosen lr)")
    return fig


def _label(g: Row, groups: list[Row]) -> str:
    """Variant label, prefixed with objective/model/task when the sweep has more than one."""
    label = variant_label(g)
    if several_objectives(groups):
        label = f"{objective_of(g)} {label}"
    if len({g2["task"] for g2 in groups}) > 1:
        label = f"{g['task']} {label}"
    if len({g2["model"] for g2 in groups}) > 1:
        label = f"{g['model']} {label}"
    return label


def _style(ax: Axes, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and bool(np.isfinite(x))
