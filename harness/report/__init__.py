"""Sweep report: tables, CSV and plots from trial result files (or W&B runs).

    python -m harness.report SWEEP_DIR
    python -m harness.report --wandb ENTITY/PROJECT --group NAME [--out DIR]

Writes report.md, report.csv and the plots (harness.report.plots) into the sweep folder (or --out).
Each method's lr is chosen on validation and its test accuracy reported with intervals and a
verdict against the baseline (harness.report.compare; the protocol is written into report.md).
A sweep with more than one objective (trainer=grpo/rloo/sft) also gets the RL-against-SFT section
(harness.report.contrast), in report.md and in what is printed.
The sweep code calls write_report(sweep_dir) at the end of a multirun.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .collect import collect
from .compare import ReportOptions
from .contrast import contrast_section
from .pruned import pruned_section
from .tables import aggregate, chosen_table, failed_table, main_table, protocol_text, to_csv

__all__ = ["ReportOptions", "build_report", "collect", "write_report"]


def build_report(rows: list[dict[str, Any]], out_dir: str | Path, title: str = "Sweep report",
                 extra_sections: list[str] | None = None, options: ReportOptions | None = None) -> Path:
    """Write report.md, report.csv and the plots for these rows into out_dir; return report.md.
    extra_sections (markdown, e.g. the Optuna study's) go before the plots."""
    opts = options or ReportOptions()
    from harness.results import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from .plots import write_plots  # matplotlib is imported only when a report is written

    groups = aggregate(rows)
    atomic_write_text(out / "report.csv", to_csv(groups))
    plots = write_plots(groups, out, opts)
    counts = {s: sum(r.get("status") == s for r in rows) for s in ("ok", "failed", "pruned", "missing")}
    pruned = pruned_section(rows, out)  # None unless a trial was stopped early (harness.prune)
    pruned_note = f", {counts['pruned']} pruned (stopped early, below)" if pruned else ""
    contrast = contrast_section(groups, opts, out)  # "" unless the sweep has several objectives
    parts = [
        f"# {title}",
        f"{len(rows)} trials: {counts['ok']} ok, {counts['failed']} failed, {counts['missing']} missing{pruned_note}.",
        "## Each method at its lr chosen on validation (test accuracy reported)",
        chosen_table(groups, opts) if groups else "No finished trials.",
        protocol_text(opts),
        *([contrast] if contrast else []),
        "## All groups",
        "Mean ± std over seeds (n); accuracies are fractions (val = validation split, test = test split); "
        "GB = 1e9 bytes; the lr chosen on validation for each method is in bold.",
        main_table(groups) if groups else "No finished trials.",
        "## Failed and missing trials",
        failed_table(rows) or "None.",
        *([pruned] if pruned else []),
        *(extra_sections or []),
        "## Plots",
        "\n\n".join(f"![{p.stem}]({p.name})" for p in plots) or "No data to plot.",
    ]
    path = out / "report.md"
    atomic_write_text(path, "\n\n".join(parts) + "\n")
    return path


def write_report(sweep_dir: str | Path, out_dir: str | Path | None = None, echo: bool = True,
                 options: ReportOptions | None = None) -> Path:
    """Collect sweep_dir's trials and write the report (into sweep_dir unless out_dir is given);
    with echo, print the main table, the failed trials and where the report is. Returns report.md."""
    from .study import study_section

    rows = collect(sweep_dir)
    study = study_section(sweep_dir, out_dir or sweep_dir)  # an Optuna search's best trials and plot
    path = build_report(rows, out_dir or sweep_dir, title=f"Sweep report: {Path(sweep_dir).name}",
                        extra_sections=[study] if study else None, options=options)
    if echo:
        print_summary(rows, path, options)
    return path


def print_summary(rows: list[dict[str, Any]], path: Path, options: ReportOptions | None = None) -> None:
    opts = options or ReportOptions()
    groups = aggregate(rows)
    print(chosen_table(groups, opts) if groups else "No finished trials.")
    contrast = contrast_section(groups, opts)  # the RL-against-SFT tables, without the plot
    if contrast:
        print("\n" + contrast)
    failed = failed_table(rows)
    if failed:
        print("\nFailed and missing trials:\n" + failed)
    print(f"\nReport: {path} (and report.csv, *.png beside it)")
