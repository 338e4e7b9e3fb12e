"""The report's section on pruned trials: where each stopped and why, the steps run, and every
trial's validation curve (pruned_curves.png), pruned ones dashed and ending where they stopped.

    python -m harness.report multirun/search_pruned      # report.md's "Pruned trials"

A pruned trial (harness.prune: stopped at a validation evaluation by the sweeper's rule, or as
diverged) is neither a result nor a failure: it counts in no group's mean and in no failure table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

PLOT = "pruned_curves.png"


def pruned_section(rows: list[dict[str, Any]], out_dir: str | Path) -> Optional[str]:
    """Markdown (and the plot, written into out_dir) when some trial was pruned, else None."""
    pruned = [r for r in rows if r.get("status") == "pruned"]
    if not pruned:
        return None
    ran = [r for r in rows if r.get("status") in ("ok", "pruned")]
    steps = sum(_int(r.get("train/steps_done")) for r in ran)
    table = ["| trial | dir | stopped at step | value there | by | reason |", "| --- | --- | --- | --- | --- | --- |"]
    for r in pruned:
        value = r.get("prune/value")
        reason = str(r.get("prune/reason") or "").replace("|", "\\|")
        table.append(f"| {r.get('name')} | `{r.get('dir')}` | {r.get('prune/step')} | "
                     f"{'–' if value is None else f'{value:.4g}'} | {r.get('prune/by') or ''} | {reason} |")
    parts = ["## Pruned trials",
             f"{len(pruned)} of {len(ran)} trials that ran were stopped early; {steps} steps were run in all "
             f"({sum(_int(r.get('train/steps_done')) for r in pruned)} by the pruned ones).",
             "\n".join(table)]
    if _plot(ran, Path(out_dir) / PLOT):
        parts.append(f"![{Path(PLOT).stem}]({PLOT})")
    return "\n\n".join(parts)


def _plot(rows: list[dict[str, Any]], path: Path) -> bool:
    """Validation accuracy vs step, one line per trial: complete solid, pruned dashed with an x at the stop."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curves = [(r, [(int(p["step"]), float(p["accuracy"])) for p in r.get("eval/val_curve") or []]) for r in rows]
    curves = [(r, c) for r, c in curves if c]
    if not curves:
        return False
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for r, c in sorted(curves, key=lambda rc: str(rc[0].get("name"))):
        xs, ys = zip(*sorted(c))
        stopped = r.get("status") == "pruned"
        (line,) = ax.plot(xs, ys, ls="--" if stopped else "-", lw=1.2, label=f"{r.get('name')}{' (pruned)' if stopped else ''}")
        if stopped:
            ax.plot(xs[-1], ys[-1], "x", color=line.get_color(), ms=8)
    ax.set_xlabel("step")
    ax.set_ylabel("validation accuracy")
    ax.set_title("validation accuracy of every trial (dashed: pruned, x where it stopped)")
    ax.grid(alpha=0.3)
    if len(curves) <= 12:
        ax.legend(fontsize=7)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120)
    return True


def _int(x: Any) -> int:
    return int(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else 0
