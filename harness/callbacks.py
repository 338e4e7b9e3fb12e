"""Hydra callbacks for sweeps: progress lines while trials run, the index and report at the end,
and the W&B dashboard (harness.dashboard) when logger.wandb.mode=online and logger.wandb.dashboard=true.

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
    """Finished trials by status: ok, failed, pruned (stopped early: harness.prune); a paused one is not finished."""
    counts = {"ok": 0, "failed": 0, "pruned": 0}
    for f in sweep_dir.rglob("result.json"):
        try:
            status = json.loads(f.read_text()).get("status")
        except (OSError, ValueError):
            status = "failed"
        if status != "paused":
            counts[status if status in counts else "failed"] += 1
    return counts


def _pruned(n: int) -> str:
    return f", pruned {n}" if n else ""


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
              f"done {sum(c.values())} (ok {c['ok']}, failed {c['failed']}{_pruned(c['pruned'])})", file=sys.stderr, flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from harness.report.collect import collect
        from harness.results import atomic_write_json

        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = collect(sweep_dir)
        index = [{"dir": r.get("dir"), "status": r.get("status"), "error": r.get("error"),
                  "overrides": r.get("overrides"), **({"prune/step": r.get("prune/step"), "prune/reason": r.get("prune/reason")}
                                                      if r.get("status") == "pruned" else {})} for r in rows]
        atomic_write_json(sweep_dir / "sweep_index.json", index)
        c = {s: sum(1 for r in rows if r.get("status") == s) for s in ("ok", "failed", "missing", "pruned")}
        print(f"[sweep] finished: {len(rows)} trials, ok {c['ok']}, failed {c['failed']}, missing {c['missing']}"
              f"{_pruned(c['pruned'])}", file=sys.stderr, flush=True)
        if self.report and rows:
            from harness.report import write_report

            write_report(sweep_dir)
        if rows:
            build_dashboard(config, sweep_dir)


def dashboard_args(config: DictConfig, sweep_dir: Path) -> list[str] | None:
    """`python -m harness.dashboard` arguments for an online sweep that asked for it, else None."""
    logger = config.get("logger")
    w = logger.get("wandb") if logger is not None and logger.get("backend") == "wandb" else None
    if w is None or w.get("mode") != "online" or not w.get("dashboard"):
        return None
    path = f"{w.entity}/{w.project}" if w.get("entity") else str(w.project)
    group = ["--group", str(w.group)] if w.get("group") else []  # else the sweep folder's name, as the trials used
    return [path, "--sweep-dir", str(sweep_dir), "--report", *group]


def build_dashboard(config: DictConfig, sweep_dir: Path) -> None:
    """Save the sweep's W&B workspace and report; a failure is one line, never the sweep's failure."""
    args = dashboard_args(config, sweep_dir)
    if args is None:
        return
    from harness.dashboard.__main__ import main as dashboard

    try:
        dashboard(args)  # prints its own line when offline or without a key
    except Exception as e:  # noqa: BLE001 - the sweep's results are written; the dashboard is extra
        print(f"[sweep] dashboard not saved: {type(e).__name__}: {e}".splitlines()[0], file=sys.stderr, flush=True)
