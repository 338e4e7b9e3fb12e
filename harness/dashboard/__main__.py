"""python -m harness.dashboard ENTITY/PROJECT [--group SWEEP] [--sweep-dir DIR] [--report]

Create or update the W&B workspace of a sweep (two views: each optimizer at its best lr, and every
trial) and, with --report, a saved report with the same panels. The best lr of each optimizer is
chosen by validation accuracy, from the trial folders under --sweep-dir, or else from the W&B
runs' summaries. --group defaults to the sweep folder's name (the W&B group the trials logged to);
without either, all runs of the project. ENTITY/ may be left out online (your default entity).

Without network, or with no API key (or WANDB_MODE=offline), it prints one line saying so, exits
with status 2 and, given --sweep-dir, writes the spec it would save to DIR/dashboard.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

SPEC_FILE = "dashboard.json"


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.dashboard", description=__doc__.splitlines()[0])
    p.add_argument("path", metavar="ENTITY/PROJECT")
    p.add_argument("--group", help="the sweep's W&B group (default: the --sweep-dir folder's name; else all runs)")
    p.add_argument("--sweep-dir", help="the sweep folder: choose best lrs from its trials, write dashboard.json there")
    p.add_argument("--report", action="store_true", help="also save a W&B report")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the W&B host (default 3)")
    args = p.parse_args(argv)

    entity, _, project = args.path.rpartition("/")
    if not project or "/" in entity:
        return _fail(f"ENTITY/PROJECT={args.path!r}: expected ENTITY/PROJECT or PROJECT")
    sweep = Path(args.sweep_dir) if args.sweep_dir else None
    if sweep is not None and not sweep.is_dir():
        return _fail(f"--sweep-dir={sweep}: no such folder")
    group = args.group or (sweep.resolve().name if sweep is not None else None)
    rows = _rows(sweep)

    from .online import offline_reason

    reason = offline_reason(args.timeout)  # decided before any W&B call
    if reason:
        if sweep is None:
            return _fail(f"{reason}: nothing saved (give --sweep-dir DIR to write the spec to DIR/{SPEC_FILE})")
        path = _write_spec(sweep, entity or "", project, group, rows)
        return _fail(f"{reason}: nothing saved; the dashboard spec is in {path}")
    return _publish(entity, project, group, rows, sweep, args.report)


def _rows(sweep: Optional[Path]) -> list[dict]:
    if sweep is None:
        return []
    from harness.report.collect import collect

    return collect(sweep)


def _write_spec(sweep: Path, entity: str, project: str, group: Optional[str], rows: list[dict]) -> Path:
    from harness.results import atomic_write_json

    from .spec import dashboard_spec

    path = sweep / SPEC_FILE
    atomic_write_json(path, dashboard_spec(entity, project, group, rows))
    return path


def _publish(entity: str, project: str, group: Optional[str], rows: list[dict], sweep: Optional[Path],
             with_report: bool) -> int:
    from . import build, online
    from .spec import plan

    w_api = online.api()
    entity = entity or w_api.default_entity
    if not rows:
        rows = online.fetch_rows(w_api, f"{entity}/{project}", group)
    best, names = plan(rows)
    if not names:
        where = f"group {group!r}" if group else "the project"
        return _fail(f"no finished trials in {where} of {entity}/{project}: nothing to show")
    if sweep is not None:
        _write_spec(sweep, entity, project, group, rows)
    for w in build.workspaces(entity, project, group, names):
        print(f"workspace: {online.save_workspace(w)}")
    if with_report:
        print(f"report: {online.save_report(w_api, build.report(entity, project, group, best, names))}")
    for b in best:
        print(f"best lr by validation accuracy: {b.label()} {b.lr:g} ({b.n} seeds)")
    return 0


def _fail(message: str) -> int:
    print(f"harness.dashboard: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
