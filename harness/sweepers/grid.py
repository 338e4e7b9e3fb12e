"""The `grid` sweeper: Hydra's basic grid, plus arms that each get their own grid.

    python -m harness -m optimizer=sgd,adamw seed=0,1      # a plain grid, as with Hydra's basic sweeper
    python -m harness -m +sweeps=sgd_vs_adamw             # a saved sweep with arms (sweeps/sgd_vs_adamw.yaml)

Learning rates live on different scales per optimizer, so a sweep file can list `arms`: each arm
is a grid of its own (its keys cross each other), every arm is crossed with `params` and the
command line, and the sweep is the union of the arms: no useless cross product.

    hydra:
      sweeper:
        params: {seed: 0,1,2}
        arms:
          - {optimizer: sgd, optimizer.lr: "0.01,0.1"}
          - {optimizer: adamw, optimizer.lr: "1e-6,1e-5"}

Before any trial runs, every trial's config is composed and validated (harness.validate): a bad
value stops the sweep with one line. Trials that already finished ok are skipped by the trial
itself (see harness.__main__), so re-running a sweep finishes what is missing or failed.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


@dataclass
class GridSweeperConf:
    _target_: str = "hydra_plugins.harness.GridSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None
    arms: Optional[List[Dict[str, Any]]] = None


def _as_override_value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    return str(v)


def check_before_launch(config: Any) -> None:
    """The launcher's own checks (SLURM answering, partition, time limit): one line and exit 2."""
    from harness.slurm.checks import check_launcher

    problem = check_launcher(config.hydra.launcher)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)


def expand(common: List[str], arms: List[Dict[str, Any]], arguments: List[str],
           parser: Optional[OverridesParser] = None) -> List[List[str]]:
    """Every trial's override list: the union over arms of (common x arm x command line).

    Later sources win on the same key: an arm's value replaces `common`'s, the command line both.
    Trials are interleaved across arms (arm 1's first, arm 2's first, ..., arm 1's second, ...), so
    a sweep stopped part-way has results for every arm, not all of the first arm's and none of the last.
    """
    parser = parser or OverridesParser.create()
    per_arm: list[list[list[str]]] = []
    for arm in arms or [{}]:
        arm_args = [f"{k}={_as_override_value(v)}" for k, v in arm.items()]
        overrides = parser.parse_overrides(list(common) + arm_args + list(arguments))
        per_arm.append([job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch])
    jobs: list[list[str]] = []
    for i in range(max(len(a) for a in per_arm)):
        for arm_jobs in per_arm:
            if i < len(arm_jobs) and arm_jobs[i] not in jobs:
                jobs.append(arm_jobs[i])
    return jobs


class GridSweeper(BasicSweeper):
    def __init__(self, max_batch_size: Optional[int] = None, params: Optional[Dict[str, str]] = None,
                 arms: Optional[List[Dict[str, Any]]] = None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.arms = [dict(a) for a in arms] if arms else []

    def expand(self, arguments: List[str]) -> List[List[str]]:
        assert self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        return expand(self._parse_config(), self.arms, arguments, parser)

    def sweep(self, arguments: List[str]) -> Any:
        from pathlib import Path

        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        jobs = self.expand(arguments)
        check_before_launch(self.config)
        self._validate_all(jobs)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        log.info(f"Sweep {sweep_dir}: {len(jobs)} trials ({len(self.arms) or 1} arm(s))")
        self.overrides = list(self.split_overrides_to_chunks(jobs, self.max_batch_size))
        returns, initial_job_idx = [], 0
        while not self.is_done():
            batch = self.get_job_batch()
            results = self.launcher.launch(batch, initial_job_idx=initial_job_idx)
            for r in results:
                _ = r.return_value  # re-raises if a job crashed outside the trial's own handling
            initial_job_idx += len(batch)
            returns.append(results)
        return returns

    def _validate_all(self, jobs: List[List[str]]) -> None:
        from harness.validate import ConfigError, validate

        assert self.hydra_context is not None and self.config is not None
        for job in jobs:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(job))
            try:
                validate(cfg)
            except ConfigError as e:
                print(f"error: {e} (trial {' '.join(job)})", file=sys.stderr)
                sys.exit(2)

