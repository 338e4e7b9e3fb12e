"""Experiment trackers: `logger=wandb` (offline by default) or `logger=none`.

A logger takes per-step metrics (`log`), the final result (`finish`, which also closes it) and
tables of sample completions. Nothing secret is ever logged: W&B reads its key from the
environment or ~/.netrc, never from config.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Optional

from harness.errors import check
from harness.registry import Registry

LOGGERS: Registry = Registry("logger.backend")


class NoLogger:
    run_id: Optional[str] = None

    def log(self, metrics: dict, step: int) -> None:
        pass

    def table(self, name: str, columns: list[str], rows: list[list]) -> None:
        pass

    def finish(self, summary: dict, failed: bool = False) -> None:
        pass

    def preempted(self) -> None:
        pass


def run_id_for(trial_dir: str | os.PathLike) -> str:
    """A deterministic W&B run id: the same trial folder resumes the same run."""
    return hashlib.sha1(str(Path(trial_dir).resolve()).encode()).hexdigest()[:16]


class WandbLogger:
    def __init__(self, cfg: Any, trial_dir: Path, name: str, config: dict, group: Optional[str],
                 tags: list[str], job_type: str):
        import wandb

        self._wandb = wandb
        self.run_id = run_id_for(trial_dir)
        self.run = wandb.init(
            dir=str(trial_dir), mode=cfg.mode, project=cfg.project, entity=cfg.entity,
            group=cfg.group or group, name=name, id=self.run_id, resume="allow", config=config,
            tags=list(cfg.tags) + tags, job_type=job_type, reinit="finish_previous",
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True))

    def log(self, metrics: dict, step: int) -> None:
        self.run.log({k: v for k, v in metrics.items() if v is not None and k != "step"}, step=step)

    def table(self, name: str, columns: list[str], rows: list[list]) -> None:
        self.run.log({name: self._wandb.Table(columns=columns, data=rows)})

    def finish(self, summary: dict, failed: bool = False) -> None:
        for k, v in summary.items():
            if k != "provenance" and v is not None:
                self.run.summary[k] = v
        self.run.finish(exit_code=1 if failed else 0)

    def preempted(self) -> None:
        """The job will be requeued: the run stays resumable under the same id."""
        self.run.mark_preempting()
        self.run.finish(exit_code=0)


def _check_wandb(cfg: Any) -> None:
    check(cfg.wandb.mode in ("offline", "online", "disabled"), "logger.wandb.mode", cfg.wandb.mode,
          "allowed values are offline, online, disabled")


@LOGGERS.register("none")
def _none(cfg: Any, *args: Any, **kwargs: Any) -> NoLogger:
    return NoLogger()


@LOGGERS.register("wandb", validate=_check_wandb)
def _wandb(cfg: Any, *args: Any, **kwargs: Any) -> WandbLogger:
    return WandbLogger(cfg.wandb, *args, **kwargs)


def build_logger(cfg: Any, trial_dir: Path, name: str, config: dict, group: Optional[str],
                 tags: list[str], job_type: str):
    return LOGGERS.build(cfg.backend, cfg, trial_dir, name, config, group, tags=tags, job_type=job_type)
