"""Aggregate report rows over seeds, pick the best lr, and render markdown and CSV.

Groups are the "ok" rows sharing (model, task, optimizer, lr, momentum). A variant is a group
without its lr: (model, task, optimizer, momentum), so SGD with and without momentum are compared
as two methods. Its best lr has the highest mean final accuracy (ties: higher mean best accuracy,
then the smaller lr).

report.csv has one row per group, with these columns (means and stds over seeds; std uses
ddof=1 when n > 1, else 0; metrics to 12 significant digits; a metric no seed reported is empty):
    model, task, optimizer, lr, momentum  the group
    n                                     trials (seeds) in the group
    seeds                                 their seeds, ";"-separated
    best_lr                               1 if lr is its variant's best lr, else 0
    acc_final_mean, acc_final_std         eval/accuracy_final (fraction in [0, 1])
    acc_best_mean, acc_best_std           eval/accuracy_best
    acc_gain_mean, acc_gain_std           eval/accuracy_final - eval/accuracy_initial
    opt_state_gb_mean, opt_state_gb_std   mem/optimizer_state_bytes / 1e9
    peak_mem_gb_mean, peak_mem_gb_std     mem/peak_bytes / 1e9
    peak_kind                             mem/peak_kind (cpu_rss | cuda_max_allocated)
    changed_bf16_pct_mean, _std           100 * sparsity/changed_fraction_bf16 (% weights changed)
    changed_fp32_pct_mean, _std           100 * sparsity/changed_fraction_fp32
    changed_tol1e5_pct_mean, _std         100 * sparsity/changed_fraction_tol1e-5
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

GROUP_KEYS = ("model", "task", "optimizer", "lr", "momentum")
Row = dict[str, Any]


@dataclass(frozen=True)
class Metric:
    column: str  # csv prefix: <column>_mean, <column>_std
    header: str  # markdown header
    get: Callable[[Row], Any]  # value of one trial, or None
    fmt: Callable[[float], str]  # markdown formatting


def _key(name: str, scale: float = 1.0) -> Callable[[Row], Any]:
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
    Metric("acc_final", "final acc", _key("eval/accuracy_final"), _fixed(3)),
    Metric("acc_best", "best acc", _key("eval/accuracy_best"), _fixed(3)),
    Metric("acc_gain", "acc gain", _gain, lambda x: f"{x:+.3f}"),
    Metric("opt_state_gb", "opt state GB", _key("mem/optimizer_state_bytes", 1e-9), _fixed(3)),
    Metric("peak_mem_gb", "peak mem GB", _key("mem/peak_bytes", 1e-9), _fixed(3)),
    Metric("changed_bf16_pct", "% changed bf16", _key("sparsity/changed_fraction_bf16", 100.0), sig3),
    Metric("changed_fp32_pct", "% changed fp32", _key("sparsity/changed_fraction_fp32", 100.0), sig3),
    Metric("changed_tol1e5_pct", "% changed >1e-5", _key("sparsity/changed_fraction_tol1e-5", 100.0), sig3),
    Metric("update_rank", "update rank", _key("sparsity/update_rank_mean"), sig3),
    Metric("step_s", "s/step", _key("perf/step_s_mean"), sig3),
)
CSV_COLUMNS = [*GROUP_KEYS, "n", "seeds", "best_lr"]
CSV_COLUMNS += [f"{m.column}_{s}" for m in METRICS[:5] for s in ("mean", "std")] + ["peak_kind"]
CSV_COLUMNS += [f"{m.column}_{s}" for m in METRICS[5:] for s in ("mean", "std")]


def mean_std(values: Iterable[Any]) -> tuple[float | None, float | None]:
    """Mean and std (ddof=1 when n > 1, else 0) of the finite values; (None, None) if there are none."""
    xs = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if xs.size == 0:
        return None, None
    return float(xs.mean()), float(xs.std(ddof=1)) if xs.size > 1 else 0.0


def aggregate(rows: Iterable[Row]) -> list[Row]:
    """One dict per group of "ok" rows: the group keys, n, seeds, peak_kind, <column>_mean/_std,
    best_lr (0/1) and members (the rows, for plots); sorted by the group keys."""
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        if r.get("status") == "ok":
            groups.setdefault(tuple(r.get(k) for k in GROUP_KEYS), []).append(r)
    out = []
    for key, members in groups.items():
        g: Row = dict(zip(GROUP_KEYS, key))
        g["n"] = len(members)
        g["seeds"] = ";".join(str(m.get("seed")) for m in sorted(members, key=lambda m: _sortable(m.get("seed"))))
        kinds = sorted({str(m["mem/peak_kind"]) for m in members if m.get("mem/peak_kind")})
        g["peak_kind"] = ";".join(kinds)
        for m in METRICS:
            g[f"{m.column}_mean"], g[f"{m.column}_std"] = mean_std(m.get(r) for r in members)
        g["members"] = members
        out.append(g)
    out.sort(key=lambda g: tuple(_sortable(g[k]) for k in GROUP_KEYS))
    best = {id(g) for g in best_lr(out).values()}
    for g in out:
        g["best_lr"] = int(id(g) in best)
    return out


def variant(g: Row) -> tuple:
    """(model, task, optimizer, momentum): a group without its lr."""
    return (g["model"], g["task"], g["optimizer"], g["momentum"])


def variant_label(g: Row) -> str:
    """"sgd", "sgd+m0.9", "adamw"."""
    m = g.get("momentum")
    return f"{g['optimizer']}+m{m:g}" if isinstance(m, (int, float)) and m else str(g["optimizer"])


def best_lr(groups: Iterable[Row]) -> dict[tuple, Row]:
    """The best group (lr) of each variant: highest mean final accuracy, then best accuracy, then smaller lr."""
    def score(g: Row) -> tuple:
        neg = -math.inf
        final = g["acc_final_mean"] if g["acc_final_mean"] is not None else neg
        best = g["acc_best_mean"] if g["acc_best_mean"] is not None else neg
        lr = -g["lr"] if isinstance(g["lr"], (int, float)) else neg
        return (final, best, lr)

    winners: dict[tuple, Row] = {}
    for g in groups:
        v = variant(g)
        if v not in winners or score(g) > score(winners[v]):
            winners[v] = g
    return winners


def main_table(groups: list[Row]) -> str:
    """Markdown table: one line per group, mean ± std over seeds (just the mean when n = 1)."""
    header = ["model", "task", "optimizer", "lr", "momentum", "n", *(m.header for m in METRICS)]
    lines = [_md_row(header), _md_row(["---"] * len(header))]
    for g in groups:
        momentum = "–" if g["momentum"] is None else _plain(g["momentum"])
        cells = [str(g["model"]), str(g["task"]), str(g["optimizer"]), fmt_lr(g["lr"]), momentum, str(g["n"])]
        for m in METRICS:
            cells.append(_mean_std_cell(g, m.column, m.fmt))
        cells[3] = f"**{cells[3]}**" if g.get("best_lr") else cells[3]
        lines.append(_md_row(cells))
    return "\n".join(lines)


def best_lr_table(groups: list[Row]) -> str:
    """Markdown table: each variant at its best lr."""
    header = ["model", "task", "optimizer", "best lr", "n", "final acc", "best acc", "% changed bf16", "opt state GB"]
    lines = [_md_row(header), _md_row(["---"] * len(header))]
    for g in best_lr(groups).values():
        cells = [g["model"], g["task"], variant_label(g), fmt_lr(g["lr"]), g["n"]]
        for col, fmt in (("acc_final", _fixed(3)), ("acc_best", _fixed(3)), ("changed_bf16_pct", sig3), ("opt_state_gb", _fixed(3))):
            cells.append(_mean_std_cell(g, col, fmt))
        lines.append(_md_row([str(c) for c in cells]))
    return "\n".join(lines)


def failed_table(rows: Iterable[Row]) -> str:
    """Markdown table of failed and missing trials with their reasons ("" if none)."""
    bad = [r for r in rows if r.get("status") != "ok"]
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
