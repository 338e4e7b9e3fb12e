"""Hydra callbacks for sweeps: progress lines while trials run, the index and report at the end.

Configured in conf/config.yaml under hydra.callbacks; with a remote launcher (SLURM) the job
callbacks run on the node and the multirun ones in the process that launched the sweep.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def _counts(sweep_dir: Path) -> dict[str, int]:
    counts = {"ok": 0, "failed": 0}
    for f in sweep_dir.rglob("result.json"):
        try:
            counts["ok" if json.loads(f.read_text()).get("status") == "ok" else "failed"] += 1
        except (OSError, ValueError):
            counts["failed"] += 1
    return counts


class SweepProgress(Callback):
    """`[sweep] trial 3 running: optimizer=adamw seed=1 | done 2 (ok 2, failed 0)` and, at the end,
    sweep_index.json (every trial folder with its overrides and status) plus the report."""

    def __init__(self, report: bool = True) -> None:
        self.report = report

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
        if hc.mode is None or str(hc.mode) != "RunMode.MULTIRUN":
            return
        c = _counts(Path(hc.sweep.dir))
        print(f"[sweep] trial {hc.job.num} running: {' '.join(hc.overrides.task)} | "
              f"done {c['ok'] + c['failed']} (ok {c['ok']}, failed {c['failed']})", file=sys.stderr, flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from harness.report.collect import collect
        from harness.results import atomic_write_json

        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = collect(sweep_dir)
        index = [{"dir": r.get("dir"), "status": r.get("status"), "error": r.get("error"),
                  "overrides": r.get("overrides")} for r in rows]
        atomic_write_json(sweep_dir / "sweep_index.json", index)
        c = {s: sum(1 for r in rows if r.get("status") == s) for s in ("ok", "failed", "missing")}
        print(f"[sweep] finished: {len(rows)} trials, ok {c['ok']}, failed {c['failed']}, missing {c['missing']}",
              file=sys.stderr, flush=True)
        if self.report and rows:
            from harness.report import write_report

            write_report(sweep_dir)
