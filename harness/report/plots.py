"""PNG plots of an aggregated sweep, drawn on matplotlib's Agg canvas (no pyplot, no global backend).

curves.png            eval accuracy (eval/curve) and train reward (train/reward_curve; point i is
                      step i) vs step, mean over seeds, one line per variant at its best lr
lr_sensitivity.png    final accuracy vs lr (log x), mean ± std over seeds, one line per variant,
                      its best lr circled
sparsity_by_kind.png  % weights changed (bf16) per module kind, one bar per variant at its best lr
                      (log y when the values span more than 100x; a zero is marked "0")
A plot without data is not written.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .tables import Row, best_lr, fmt_lr, variant_label

KINDS = ("embed", "attention", "mlp", "norm", "head", "other")


def write_plots(groups: list[Row], out_dir: Path) -> list[Path]:
    """Write every plot that has data into out_dir; return the paths written."""
    plots: dict[str, Callable[[list[Row]], Figure | None]] = {
        "curves.png": curves_figure,
        "lr_sensitivity.png": lr_sensitivity_figure,
        "sparsity_by_kind.png": sparsity_figure,
    }
    written = []
    for name, make in plots.items():
        fig = make(groups)
        if fig is not None:
            FigureCanvasAgg(fig)
            fig.savefig(out_dir / name, dpi=120)
            written.append(out_dir / name)
    return written


def curves_figure(groups: list[Row]) -> Figure | None:
    best = list(best_lr(groups).values())
    if not any(m.get("eval/curve") or m.get("train/reward_curve") for g in best for m in g["members"]):
        return None
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    acc_ax, rew_ax = fig.subplots(1, 2)
    for g in best:
        label = f"{_label(g, groups)} lr={fmt_lr(g['lr'])}"
        by_step: dict[int, list[float]] = {}
        for m in g["members"]:
            for p in m.get("eval/curve") or []:
                if isinstance(p, dict) and _finite(p.get("accuracy")) and _finite(p.get("step")):
                    by_step.setdefault(int(p["step"]), []).append(float(p["accuracy"]))
        if by_step:
            steps = sorted(by_step)
            acc_ax.plot(steps, [np.mean(by_step[s]) for s in steps], marker="o", ms=3, label=label)
        rewards = [[x if _finite(x) else np.nan for x in m.get("train/reward_curve") or []] for m in g["members"]]
        if any(rewards):
            padded = np.full((len(rewards), max(map(len, rewards))), np.nan)
            for i, r in enumerate(rewards):
                padded[i, : len(r)] = r
            with warnings.catch_warnings():  # a step no seed reached is NaN: "Mean of empty slice"
                warnings.simplefilter("ignore", RuntimeWarning)
                rew_ax.plot(np.arange(padded.shape[1]), np.nanmean(padded, axis=0), label=label)
    _style(acc_ax, "step", "eval accuracy", "eval accuracy (best lr, mean over seeds)")
    _style(rew_ax, "step", "train reward (mean)", "train reward (best lr, mean over seeds)")
    return fig


def lr_sensitivity_figure(groups: list[Row]) -> Figure | None:
    points = [g for g in groups if isinstance(g["lr"], (int, float)) and g["lr"] > 0 and g["acc_final_mean"] is not None]
    if not points:
        return None
    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    ax = fig.subplots()
    variants: dict[tuple, list[Row]] = {}
    for g in points:
        variants.setdefault((g["model"], g["task"], g["optimizer"], g["momentum"]), []).append(g)
    for members in variants.values():
        members.sort(key=lambda g: g["lr"])
        ax.errorbar(
            [g["lr"] for g in members],
            [g["acc_final_mean"] for g in members],
            yerr=[g["acc_final_std"] or 0.0 for g in members],
            marker="o", capsize=3, label=_label(members[0], groups),
        )
        top = [g for g in members if g.get("best_lr")]
        ax.plot([g["lr"] for g in top], [g["acc_final_mean"] for g in top], "o", ms=12, mfc="none", color="k")
    ax.set_xscale("log")
    _style(ax, "learning rate", "final eval accuracy", "final accuracy vs lr (mean ± std over seeds)")
    return fig


def sparsity_figure(groups: list[Row]) -> Figure | None:
    best = list(best_lr(groups).values())
    values = {id(g): _kind_pct(g) for g in best}
    kinds = [k for k in KINDS if any(k in v for v in values.values())]
    kinds += sorted({k for v in values.values() for k in v} - set(kinds))
    if not kinds:
        return None
    fig = Figure(figsize=(max(6.5, 1.3 * len(kinds) * max(1, len(best)) / 2), 4.2), layout="constrained")
    ax = fig.subplots()
    positive = [x for v in values.values() for x in v.values() if x > 0]
    log = bool(positive) and max(positive) / min(positive) > 100
    floor = min(positive) / 3 if log else 0.0
    width = 0.8 / len(best)
    x = np.arange(len(kinds))
    for i, g in enumerate(best):
        heights = [values[id(g)].get(k, np.nan) for k in kinds]
        xs = x - 0.4 + width * (i + 0.5)
        shown = [h - floor if h > 0 or not log else np.nan for h in heights]
        ax.bar(xs, shown, width, bottom=floor, label=f"{_label(g, groups)} lr={fmt_lr(g['lr'])}")
        for xi, h in zip(xs, heights):
            if h == 0:
                ax.annotate("0", (xi, floor), ha="center", va="bottom", fontsize=8, annotation_clip=False)
    if log:
        ax.set_yscale("log")
        ax.set_ylim(floor, max(positive) * 3)
    ax.set_xlim(-0.5, len(kinds) - 0.5)
    ax.set_xticks(x, kinds)
    _style(ax, "module kind", "% weights changed (bf16)", "weights changed vs initial (best lr, mean over seeds)")
    return fig


def _kind_pct(g: Row) -> dict[str, float]:
    """Mean over seeds of 100 * by_kind[kind]["changed_fraction_bf16"]."""
    acc: dict[str, list[float]] = {}
    for m in g["members"]:
        by_kind = m.get("sparsity/by_kind")
        for kind, stats in (by_kind.items() if isinstance(by_kind, dict) else []):
            if isinstance(stats, dict) and _finite(stats.get("changed_fraction_bf16")):
                acc.setdefault(str(kind), []).append(100.0 * stats["changed_fraction_bf16"])
    return {k: float(np.mean(v)) for k, v in acc.items()}


def _label(g: Row, groups: list[Row]) -> str:
    """Variant label, prefixed with model/task when the sweep has more than one."""
    label = variant_label(g)
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
