"""python -m harness.report SWEEP_DIR [SWEEP_DIR ...] [--out DIR] [--baseline adamw] [--margin 2] [--bootstrap-resamples 10000] [--bootstrap-seed 0]
python -m harness.report --wandb ENTITY/PROJECT --group NAME [--out DIR]   (default --out ./report-NAME)

Build the sweep report (report.md, report.csv, the plots) and print each method at its lr chosen
on validation, with its test accuracy and the verdict against the baseline, and, when the sweep
has more than one objective (trainer=grpo/rloo/sft), the RL-against-SFT tables
(harness.report.contrast). Several SWEEP_DIRs are read as one sweep (e.g. the arms of a comparison
run into separate folders) and need --out. Exit status 2, with one line on stderr, when a SWEEP_DIR
does not exist, when none holds a trial, when several come without --out (or the W&B group has no
runs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dataclasses import fields

from . import ReportOptions, build_report, print_summary
from .collect import collect


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dirs", nargs="*", metavar="SWEEP_DIR",
                        help="folder(s) holding the trial folders (any depth); several are read as one sweep (needs --out)")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read runs from W&B instead")
    parser.add_argument("--group", help="W&B group (the sweep's name); with --wandb")
    parser.add_argument("--out", help="write the report here (default: SWEEP_DIR, or ./report-GROUP)")
    defaults = ReportOptions()
    parser.add_argument("--baseline", default=defaults.baseline, help="optimizer the others are compared with (default %(default)s)")
    parser.add_argument("--margin", dest="margin_points", type=float, default=defaults.margin_points,
                        help="accuracy verdict margin in points (default %(default)s)")
    parser.add_argument("--ratio-margin", type=float, default=defaults.ratio_margin,
                        help="memory/sparsity ratio verdict margin, relative (default %(default)s)")
    parser.add_argument("--bootstrap-resamples", type=int, default=defaults.bootstrap_resamples, help="default %(default)s")
    parser.add_argument("--bootstrap-seed", type=int, default=defaults.bootstrap_seed, help="default %(default)s")
    parser.add_argument("--problems-only", dest="resample_seeds", action="store_false",
                        help="bootstrap the test problems within each seed only (default: seeds, then problems)")
    args = parser.parse_args(argv)
    if args.bootstrap_resamples < 1:
        return _fail(f"--bootstrap-resamples={args.bootstrap_resamples}: must be >= 1")
    opts = ReportOptions(**{f.name: getattr(args, f.name) for f in fields(ReportOptions)})

    if args.wandb:
        if not args.group:
            return _fail("--wandb needs --group NAME")
        from .wandb_source import fetch_rows

        rows = fetch_rows(args.wandb, args.group)
        if not rows:
            return _fail(f"no W&B runs in {args.wandb} with group {args.group!r}")
        out = Path(args.out or f"report-{args.group}")
        title = f"Sweep report: {args.wandb} group {args.group}"
    else:
        if not args.sweep_dirs:
            return _fail("give SWEEP_DIR, or --wandb ENTITY/PROJECT --group NAME")
        sweeps = [Path(d) for d in args.sweep_dirs]
        missing = [str(d) for d in sweeps if not d.is_dir()]
        if missing:
            return _fail(f"sweep folder not found: {', '.join(missing)}")
        if len(sweeps) > 1 and not args.out:
            return _fail(f"{len(sweeps)} sweep folders are read as one report: say where it goes with --out DIR")
        rows = [row if len(sweeps) == 1 else {**row, "dir": str(sweep / row["dir"])}  # which folder a trial is in
                for sweep in sweeps for row in collect(sweep)]
        if not rows:
            return _fail(f"no trials in {', '.join(map(str, sweeps))} (no result.json or .hydra/overrides.yaml below it)")
        out = Path(args.out or sweeps[0])
        title = f"Sweep report: {' + '.join(s.resolve().name for s in sweeps)}"
    print_summary(rows, build_report(rows, out, title=title, options=opts), opts)
    return 0


def _fail(message: str) -> int:
    print(f"harness.report: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
