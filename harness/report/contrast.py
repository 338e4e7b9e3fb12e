"""RL against SFT: the paper's 2x2 (objective x optimizer), its diagnostics and the compute-dtype arm.

    python -m harness -m +sweeps=rl_vs_sft model=tiny trainer.steps=2 seed=0,1
    python -m harness.report multirun/rl_vs_sft      # prints these tables; report.md gets the section

The section exists only when the sweep's ok trials hold more than one objective (`trainer.objective`,
the row's "objective"; results from before it existed count as grpo). its registry entry says which
objectives are RL and which SFT. Every method (optimizer + momentum) is taken at its lr chosen on
validation within its (model, task, setting, objective) (harness.report.compare.chosen_lr); the
setting holds the compute dtype (`model.dtype=float32`) when the sweep has the dtype arm, so each
dtype chooses its own lr too. Tables:

1. The gap. Per (setting, objective) and method other than the baseline (AdamW): method − baseline
   test accuracy in points with the paired two-level bootstrap over (seed, test problem) of
   compare.accuracy_difference, and its verdict (stats.verdict, margin `margin_points`).
   Contrast row, per method, setting and (RL objective, SFT objective) pair: gap(SFT) − gap(RL)
   (stats.difference_of_gaps). Each bootstrap resample draws the RL trials (their seeds, then each
   seed's problems, the same cells for the method and the baseline) and, independently, the SFT
   trials the same way, and takes the difference of the two resampled gaps: the two gaps come
   from separate training runs, so nothing pairs an RL seed with an SFT seed. The test problems
   are shared, and drawing them independently on the two sides ignores any correlation between
   the per-problem gaps of the two objectives: with a positive one the interval is wider than it
   need be (conservative). Verdict, stats.verdict on the difference: "more negative in SFT" (high
   end < 0: SGD loses more to AdamW in SFT than in RL, the paper's hypothesis), "less negative in
   SFT" (low end > 0), "same" (the interval inside ±margin), else "inconclusive".
2. Diagnostics, RL against SFT, per method and setting: mean and 95% t interval over seeds
   (stats.t_interval) of `optim/momentum_grad_cosine_mean` (methods with momentum: SGD m=0.9,
   AdamW), `optim/second_moment_std_mean` (Adam's v: its std over all entries, averaged over the
   steps) and `sparsity/changed_fraction_bf16`; for the last two the ratio RL ÷ SFT of the means
   with a bootstrap over seeds, each side drawn on its own (stats.ratio_bootstrap, paired=False:
   the trials of the two objectives are not paired), verdict stats.ratio_verdict (`ratio_margin`).
   Beside them the paper's figures: cosine −0.007 (RL) vs 0.997 (SFT); std 2.29e-7 vs 5.11e-6.
   The std's absolute value depends on the model, task and loss scale; its ratio is what compares.
3. Compute dtype (when some trial sets `model.dtype`): per objective and method, test accuracy and
   bf16 changed fraction under each dtype (absent: the model config's default), and against
   bfloat16 compute: the accuracy difference (paired by seed, compare.accuracy_difference) and
   the changed-fraction ratio (paired by seed, compare.ratio) with verdicts. Both arms keep fp32
   master weights; the difference says how much of a method's result depends on what a bf16
   forward pass can see of its updates.
The plot of the 2x2 (harness.report.plots.contrast_figure) is written as rl_vs_sft.png.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from harness.metrics import summary

from .compare import (ReportOptions, accuracy_difference, chosen_lr, comparisons, kind, objective_of, objective_order,
                      paired_scores, ratio)
from .stats import Interval, difference_of_gaps, ratio_bootstrap, ratio_verdict, t_interval, verdict
from .tables import Row, fmt_lr, several_objectives, sig3, variant_label

PLOT = "rl_vs_sft.png"
DTYPE_KEY = "model.dtype"
DTYPE_DEFAULT = "(model default)"
REFERENCE_DTYPE = "bfloat16"
CONTRAST_WORDS = {"worse": "more negative in SFT", "better": "less negative in SFT", "matches": "same",
                  "inconclusive": "inconclusive"}
TEST_KEY = summary("eval/accuracy_final")
CHANGED_KEY = summary("sparsity/changed_fraction_bf16")


@dataclass(frozen=True)
class Diagnostic:
    key: str  # result key (harness/metrics.py)
    label: str
    fmt: Callable[[float], str]
    scale: float = 1.0  # shown value = scale * key
    bounds: Optional[tuple[float, float]] = None  # the t interval is clipped to these
    paper: Optional[tuple[float, float]] = None  # the paper's (RL, SFT)
    ratio: bool = False  # show RL ÷ SFT with an interval


DIAGNOSTICS = (
    Diagnostic(summary("optim/momentum_grad_cosine_mean"), "momentum-gradient cosine", lambda x: f"{x:+.3f}",
               bounds=(-1.0, 1.0), paper=(-0.007, 0.997)),
    Diagnostic(summary("optim/second_moment_std_mean"), "second-moment std (Adam's v)", lambda x: f"{x:.3g}",
               paper=(2.29e-7, 5.11e-6), ratio=True),
    Diagnostic(CHANGED_KEY, "% changed bf16", sig3, scale=100.0, bounds=(0.0, 100.0), ratio=True),
)
CHANGED = DIAGNOSTICS[2]


def method(g: Row) -> str:
    """"sgd", "sgd+m0.9", "adamw": the variant without its setting (the setting has its own column)."""
    return variant_label({**g, "setting": ""})


def _context(g: Row) -> tuple:
    return (g["model"], g["task"], g.get("setting", ""))


def _method_key(g: Row) -> tuple:
    return (*_context(g), g["optimizer"], g["momentum"])


# --- 1. the gap in each objective, and the contrast -------------------------------------------

def gap_rows(groups: list[Row], opts: ReportOptions) -> list[Row]:
    """Per (setting, objective, method other than the baseline): {"group", "base", "objective",
    "diff" (Interval in points | None), "basis", "verdict"}, from compare.comparisons."""
    out = []
    for c in comparisons(groups, opts):
        if "baseline" in c:
            out.append({"group": c["group"], "base": c["baseline"], "objective": objective_of(c["group"]),
                        "diff": c["diff"], "basis": c["diff_basis"], "verdict": c["diff_verdict"]})
    return sorted(out, key=lambda r: (str(_context(r["group"])), objective_order(r["objective"]), method(r["group"])))


def contrast_rows(gaps: list[Row], opts: ReportOptions) -> list[Row]:
    """Per (setting, method) and (RL objective, SFT objective) both with a gap: {"rl", "sft" (the
    gap rows), "diff" (Interval of gap(SFT) − gap(RL) in points | None), "basis", "verdict"}."""
    by_method: dict[tuple, dict[str, Row]] = {}
    for r in gaps:
        by_method.setdefault(_method_key(r["group"]), {})[r["objective"]] = r
    out = []
    for per_objective in by_method.values():
        rls = [o for o in sorted(per_objective) if kind(o) == "RL"]
        sfts = [o for o in sorted(per_objective) if kind(o) == "SFT"]
        for rl in rls:
            for sft in sfts:
                out.append(_contrast(per_objective[rl], per_objective[sft], opts))
    return out


def _contrast(rl: Row, sft: Row, opts: ReportOptions) -> Row:
    a1, b1, basis1 = paired_scores(rl["group"], rl["base"])
    a2, b2, basis2 = paired_scores(sft["group"], sft["base"])
    row: Row = {"rl": rl, "sft": sft, "diff": None, "verdict": "inconclusive",
                "basis": f"RL {basis1}; SFT {basis2}"}
    if a1 is not None and b1 is not None and a2 is not None and b2 is not None:
        row["diff"] = difference_of_gaps(a1, b1, a2, b2, opts.bootstrap_resamples, opts.bootstrap_seed,
                                         resample_seeds=opts.resample_seeds)
        row["verdict"] = CONTRAST_WORDS[verdict(row["diff"].lo, row["diff"].hi, opts.margin_points)]
    return row


def gap_table(groups: list[Row], opts: ReportOptions) -> str:
    gaps = gap_rows(groups, opts)
    if not gaps:
        return f"No method with a {opts.baseline} baseline in the same objective."
    base = opts.baseline
    ctx = _context_columns(groups)
    header = [*ctx, "objective", "method", "lr", "test acc", f"{base} lr", f"{base} test acc",
              f"method − {base} (points) [95% CI]", "verdict"]
    lines = [_md(header), _md(["---"] * len(header))]
    for r in gaps:
        g, b = r["group"], r["base"]
        lines.append(_md([*_context_cells(g, ctx), f"{r['objective']} ({kind(r['objective']) or '?'})", method(g),
                          fmt_lr(g["lr"]), _acc(g), fmt_lr(b["lr"]), _acc(b), _points(r["diff"], r["basis"]),
                          r["verdict"]]))
    for c in contrast_rows(gaps, opts):
        g = c["sft"]["group"]
        lines.append(_md([*_context_cells(g, ctx), f"**{c['sft']['objective']} − {c['rl']['objective']}**", method(g),
                          "–", "–", "–", "–", f"gap(SFT) − gap(RL): {_points(c['diff'], c['basis'])}",
                          f"**{c['verdict']}**"]))
    return "\n".join(lines)


# --- 2. diagnostics, RL against SFT ------------------------------------------------------------

def diagnostic_rows(groups: list[Row], opts: ReportOptions) -> list[Row]:
    """Per (setting, method) chosen in at least one RL and one SFT objective, and diagnostic some
    trial reported: {"group" (any of them), "diag", "values" {objective: Interval | None},
    "ratios" {(rl, sft): (Interval | None, verdict)}}."""
    by_method: dict[tuple, dict[str, Row]] = {}
    for g in chosen_lr(groups).values():
        by_method.setdefault(_method_key(g), {})[objective_of(g)] = g
    out = []
    for key in sorted(by_method, key=str):
        per_objective = by_method[key]
        objectives = sorted(per_objective, key=objective_order)
        rls = [o for o in objectives if kind(o) == "RL"]
        sfts = [o for o in objectives if kind(o) == "SFT"]
        if not rls or not sfts:
            continue
        for d in DIAGNOSTICS:
            values = {o: _values(per_objective[o], d) for o in objectives}
            if not any(values.values()):
                continue
            ratios = {}
            for rl in rls:
                for sft in sfts:
                    r = ratio_bootstrap(values[rl], values[sft], opts.bootstrap_resamples, opts.bootstrap_seed,
                                        paired=False) if d.ratio and values[rl] and values[sft] else None
                    ratios[(rl, sft)] = (r, ratio_verdict(*_bounds(r), opts.ratio_margin))
            out.append({"group": per_objective[objectives[0]], "diag": d,
                        "values": {o: t_interval(v, d.bounds) for o, v in values.items()}, "ratios": ratios})
    return out


def _values(g: Row, d: Diagnostic) -> list[float]:
    return [d.scale * float(m[d.key]) for m in g["members"] if _finite(m.get(d.key))]


def diagnostics_table(groups: list[Row], opts: ReportOptions) -> str:
    rows = diagnostic_rows(groups, opts)
    if not rows:
        return "No method ran in both an RL and an SFT objective."
    objectives = sorted({o for r in rows for o in r["values"]}, key=objective_order)
    pairs = sorted({p for r in rows for p in r["ratios"]}, key=lambda p: (objective_order(p[0]), p[1]))
    ctx = _context_columns(groups)
    header = [*ctx, "method", "diagnostic", *(f"{o} ({kind(o) or '?'}) [95% CI] (n)" for o in objectives),
              *(f"{rl} ÷ {sft} [95% CI]" for rl, sft in pairs), "paper: RL / SFT"]
    lines = [_md(header), _md(["---"] * len(header))]
    for r in rows:
        d: Diagnostic = r["diag"]
        cells = [*_context_cells(r["group"], ctx), method(r["group"]), f"{d.label} (`{d.key}`)"]
        cells += [_interval(r["values"].get(o), d.fmt, with_n=True) for o in objectives]
        for p in pairs:
            ci, word = r["ratios"].get(p, (None, ""))
            cells.append(_ratio_cell(ci, word) if d.ratio else "–")
        paper = f"{d.fmt(d.paper[0])} / {d.fmt(d.paper[1])}" if d.paper else "–"
        cells.append(paper + (f" (×{d.paper[0] / d.paper[1]:.3g})" if d.paper and d.ratio else ""))
        lines.append(_md(cells))
    return "\n".join(lines)


# --- 3. the compute-dtype arm ------------------------------------------------------------------

def dtype_of(g: Row) -> Optional[str]:
    """The `model.dtype` item of the group's setting, DTYPE_DEFAULT when absent."""
    for item in str(g.get("setting") or "").split(","):
        key, _, value = item.partition("=")
        if key == DTYPE_KEY:
            return value
    return DTYPE_DEFAULT


def _without_dtype(setting: str) -> str:
    return ",".join(i for i in setting.split(",") if i and not i.startswith(f"{DTYPE_KEY}="))


def dtype_rows(groups: list[Row], opts: ReportOptions) -> list[Row]:
    """Per (other setting, objective, method) chosen under two or more compute dtypes: one row per
    dtype other than the reference (bfloat16 if present, else the model default, else the first):
    {"ref", "other" (groups), "acc_diff" (Interval | None), "basis", "acc_verdict",
    "changed_ratio" (Interval | None), "changed_verdict"}. [] when no trial sets model.dtype."""
    chosen = list(chosen_lr(groups).values())
    if not any(dtype_of(g) != DTYPE_DEFAULT for g in chosen):
        return []
    arms: dict[tuple, dict[str, Row]] = {}
    for g in chosen:
        key = (g["model"], g["task"], _without_dtype(str(g.get("setting") or "")), objective_of(g),
               g["optimizer"], g["momentum"])
        arms.setdefault(key, {})[str(dtype_of(g))] = g
    out = []
    for key in sorted(arms, key=lambda k: (str(k[:3]), objective_order(k[3]), str(k[4:]))):
        per_dtype = arms[key]
        if len(per_dtype) < 2:
            continue
        ref = next((d for d in (REFERENCE_DTYPE, DTYPE_DEFAULT) if d in per_dtype), sorted(per_dtype)[0])
        for dtype in sorted(d for d in per_dtype if d != ref):
            g, base = per_dtype[dtype], per_dtype[ref]
            diff, basis = accuracy_difference(g, base, opts)
            r = ratio(g, base, CHANGED_KEY, opts)
            out.append({"ref": base, "other": g, "ref_dtype": ref, "dtype": dtype, "setting": key[2],
                        "acc_diff": diff, "basis": basis,
                        "acc_verdict": verdict(*_bounds(diff), opts.margin_points),
                        "changed_ratio": r, "changed_verdict": ratio_verdict(*_bounds(r), opts.ratio_margin)})
    return out


def dtype_table(groups: list[Row], opts: ReportOptions) -> str:
    rows = dtype_rows(groups, opts)
    if not rows:
        return ""
    many = len({(g["model"], g["task"]) for g in groups}) > 1
    with_setting = any(r["setting"] for r in rows)
    header = [*(["model", "task"] if many else []), *(["other setting"] if with_setting else []), "objective",
              "method", "dtype (lr)", "test acc", "% changed bf16", "reference dtype (lr)", "test acc",
              "% changed bf16", "test acc difference (points) [95% CI]", "% changed ratio [95% CI]"]
    lines = [_md(header), _md(["---"] * len(header))]
    for r in rows:
        g, b = r["other"], r["ref"]
        cells = [*([str(g["model"]), str(g["task"])] if many else []), *([r["setting"] or "–"] if with_setting else []),
                 objective_of(g), method(g)]
        for grp, dtype in ((g, r["dtype"]), (b, r["ref_dtype"])):
            cells += [f"{dtype} ({fmt_lr(grp['lr'])})", _acc(grp),
                      _interval(t_interval(_values(grp, CHANGED), CHANGED.bounds), sig3)]
        cells += [f"{_points(r['acc_diff'], r['basis'])}: {r['acc_verdict']}",
                  _ratio_cell(r["changed_ratio"], r["changed_verdict"])]
        lines.append(_md(cells))
    return "\n".join(lines)


# --- the section ------------------------------------------------------------------------------

def contrast_section(groups: list[Row], opts: ReportOptions, out_dir: Optional[Path] = None) -> str:
    """The report's RL-against-SFT section (markdown), "" unless the groups hold more than one
    objective. With out_dir, the 2x2 plot is written there (PLOT) and linked."""
    if not several_objectives(groups):
        return ""
    m, rm = opts.margin_points, opts.ratio_margin
    parts = [
        "## RL against SFT",
        "Each method at its lr chosen on validation within its objective (and compute dtype, when the sweep "
        f"varies it); {opts.baseline} is the baseline in each objective.",
        f"### The SGD − {opts.baseline} gap in RL and in SFT",
        gap_table(groups, opts),
        f"Gap: paired two-level bootstrap over (seed, test problem), as in the table above; verdict with margin {m:g} "
        "points. Contrast rows (**bold**): gap(SFT) − gap(RL), the RL and the SFT trials each resampled on their "
        "own (seeds, then problems, paired within each side), the difference of the two resampled gaps "
        f"({opts.bootstrap_resamples} resamples, numpy seed {opts.bootstrap_seed}). **more negative in SFT**: "
        f"the whole interval below 0 (and not inside ±{m:g}), SGD loses more to {opts.baseline} in SFT than in RL, "
        f"as the paper's hypothesis says; **less negative in SFT**: above 0; **same**: inside ±{m:g}; else "
        "**inconclusive**.",
        "### Diagnostics in RL against SFT",
        diagnostics_table(groups, opts),
        "Mean [95% t interval over seeds] (n seeds) at each objective's chosen lr: the cosine between the momentum "
        "buffer and the gradient (mean over steps; methods with momentum), the std of Adam's second moment over "
        "all parameters (mean over steps; its size depends on the model, task and loss scale, so compare the "
        "ratio with the paper's ×0.0448, \"22x smaller in RL\") and the share of weights changed in bf16. Ratios "
        "RL ÷ SFT of the means over seeds, each side's seeds resampled on their own; verdict with margin "
        f"{rm:.0%}: **same** inside [1/{1 + rm:g}, {1 + rm:g}], **lower** / **higher**, else **inconclusive**.",
    ]
    dtype = dtype_table(groups, opts)
    if dtype:
        parts += [
            "### Compute dtype: what the bf16 forward pass can see",
            dtype,
            "Each dtype at its own chosen lr, fp32 master weights in both. Test accuracy difference (this dtype − "
            f"the reference) by the paired bootstrap over common seeds, verdict with margin {m:g} points; "
            "% changed bf16 as a ratio of means, seeds paired, verdict as above. A method whose accuracy drops "
            "under bf16 compute learned through updates a bf16 forward pass rounds away.",
        ]
    if out_dir is not None:
        from .plots import contrast_figure, write_figure

        if write_figure(contrast_figure(groups), Path(out_dir) / PLOT):
            parts.append(f"![{Path(PLOT).stem}]({PLOT})")
    return "\n\n".join(parts)


# --- cells ------------------------------------------------------------------------------------

def _context_columns(groups: list[Row]) -> list[str]:
    cols = ["model", "task"] if len({(g["model"], g["task"]) for g in groups}) > 1 else []
    return cols + (["setting"] if any(g.get("setting") for g in groups) else [])


def _context_cells(g: Row, cols: list[str]) -> list[str]:
    return [str(g.get(c) or "–") for c in cols]


def _acc(g: Row) -> str:
    return _interval(t_interval([m.get(TEST_KEY) for m in g["members"]], bounds=(0.0, 1.0)), lambda x: f"{x:.3f}")


def _interval(ci: Optional[Interval], fmt: Callable[[float], str], with_n: bool = False) -> str:
    if ci is None:
        return "–"
    n = f" ({ci.n})" if with_n else ""
    if ci.lo is None or ci.hi is None:
        return f"{fmt(ci.estimate)}{n}"
    return f"{fmt(ci.estimate)} [{fmt(ci.lo)}, {fmt(ci.hi)}]{n}"


def _points(ci: Optional[Interval], basis: str) -> str:
    if ci is None:
        return f"– ({basis})"
    return f"{ci.estimate:+.1f} [{ci.lo:+.1f}, {ci.hi:+.1f}]"


def _ratio_cell(ci: Optional[Interval], word: str) -> str:
    if ci is None:
        return "–"
    if ci.lo is None or ci.hi is None:
        return f"×{sig3(ci.estimate)} (one seed)"
    return f"×{sig3(ci.estimate)} [{sig3(ci.lo)}, {sig3(ci.hi)}]: {word}"


def _bounds(ci: Optional[Interval]) -> tuple[Optional[float], Optional[float]]:
    return (None, None) if ci is None else (ci.lo, ci.hi)


def _md(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
