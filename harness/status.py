"""Where a sweep stands: trials done / failed / still to run, and on SLURM each job's state.

    python -m harness.status multirun/sgd_vs_adamw
    python -m harness.status multirun/sgd_vs_adamw --watch 30     # refresh every 30 s

Trial states come from the trial folders (result.json: ok, failed, pruned; paused or without one:
not finished); job states (PENDING, RUNNING, COMPLETED, FAILED, REQUEUED, TIMEOUT, ...) from
`sacct` for the job ids in the sweep's .submitit folder.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import time
from pathlib import Path

from harness.report.collect import collect


def slurm_states(sweep_dir: Path, timeout_s: float = 15.0) -> dict[str, str]:
    """{job id: state} for the jobs submitit started for this sweep ({} without SLURM or jobs)."""
    sub = sweep_dir / ".submitit"
    ids = sorted({p.name for p in sub.iterdir() if p.is_dir()}) if sub.is_dir() else []
    if not ids:
        return {}
    try:
        p = subprocess.run(["sacct", "-n", "-P", "-X", "--format=JobID,State", "-j", ",".join(ids)],
                           capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return {i: "UNKNOWN (sacct not answering)" for i in ids}
    if p.returncode != 0:
        return {i: "UNKNOWN (sacct failed)" for i in ids}
    states = {}
    for line in p.stdout.splitlines():
        job, _, state = line.partition("|")
        states[job] = state.split()[0] if state else "UNKNOWN"
    return states


def summary(sweep_dir: Path) -> list[str]:
    rows = collect(sweep_dir)
    by = collections.Counter(r.get("status") for r in rows)
    lines = [f"{sweep_dir}: {len(rows)} trials: ok {by['ok']}, failed {by['failed']}, "
             f"not finished {by['missing']}" + (f", pruned {by['pruned']}" if by["pruned"] else "")]
    states = slurm_states(sweep_dir)
    if states:
        c = collections.Counter(states.values())
        lines.append("SLURM jobs: " + ", ".join(f"{k.lower()} {v}" for k, v in sorted(c.items())))
    for r in rows:
        if r.get("status") == "pruned":  # stopped early at an evaluation (harness.prune): not a failure
            lines.append(f"  {'pruned':8} {r.get('dir')}: at step {r.get('prune/step')}: {r.get('prune/reason') or ''}")
        elif r.get("status") != "ok":
            lines.append(f"  {r.get('status'):8} {r.get('dir')}: {r.get('error') or ''}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep_dir", type=Path)
    ap.add_argument("--watch", type=float, default=0, help="refresh every N seconds until interrupted")
    a = ap.parse_args(argv)
    if not a.sweep_dir.is_dir():
        print(f"harness.status: {a.sweep_dir} is not a folder", file=sys.stderr)
        return 2
    while True:
        print("\n".join(summary(a.sweep_dir)), flush=True)
        if not a.watch:
            return 0
        time.sleep(a.watch)


if __name__ == "__main__":
    sys.exit(main())
