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
value stops the sweep with one line. Trials that already finished ok (or were pruned) are skipped by
the trial itself (see harness.__main__), so re-running a sweep finishes what is missing or failed.

`stop.eta` >= 2 turns on early stopping by an ASHA-style rule (harness.prune.asha; docs/pruning.md): at each
validation evaluation before the last step, of the trials of an arm that reached it only the top
1/eta go on, whatever order they finish in. A trial that must wait for others that are not running
pauses (checkpoint, status "paused"); after the trials have run, the sweeper runs the paused ones
again, round after round, as their rungs are decided.

    hydra:
      sweeper:
        stop: {eta: 2, min_step: 0, direction: maximize, max_wait_s: 600, poll_s: 2}   # or hydra.sweeper.stop.eta=2
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from harness.prune import link_override
from harness.sweep_grid import expand

log = logging.getLogger(__name__)


@dataclass
class StopConf:
    """hydra.sweeper.stop: the ASHA-style rule (harness.prune.asha)."""

    eta: int = 0  # 0: off (every trial runs to its end); >= 2: at each rung the top 1/eta of an arm's trials there go on
    direction: str = "maximize"  # of the objective's running value (eval/val_accuracy for eval/val_accuracy_final)
    min_step: int = 0  # no rung before this step
    max_wait_s: float = 600.0  # at a rung, wait this long at most for running trials of the arm, then pause
    poll_s: float = 2.0  # how often a waiting trial reads the others' state


@dataclass
class GridSweeperConf:
    _target_: str = "hydra_plugins.harness.GridSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None
    arms: Optional[List[Dict[str, Any]]] = None
    stop: StopConf = field(default_factory=StopConf)  # early stopping by an ASHA-style rule (stop.eta >= 2)


def check_before_launch(config: Any) -> None:
    """The launcher's own checks (SLURM answering, partition, time limit): one line and exit 2."""
    from harness.slurm.checks import check_launcher

    problem = check_launcher(config.hydra.launcher)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)


class GridSweeper(BasicSweeper):
    def __init__(self, max_batch_size: Optional[int] = None, params: Optional[Dict[str, str]] = None,
                 arms: Optional[List[Dict[str, Any]]] = None, stop: Any = None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.arms = [dict(a) for a in arms] if arms else []
        self.stop = dict(stop) if stop is not None and stop.get("eta") else None  # eta 0: off

    def expand(self, arguments: List[str]) -> List[List[str]]:
        assert self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        return expand(self._parse_config(), self.arms, arguments, parser)

    def sweep(self, arguments: List[str]) -> Any:
        from pathlib import Path

        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        jobs = self.expand(arguments)
        check_before_launch(self.config)
        schedules = self._validate_all(jobs)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        log.info(f"Sweep {sweep_dir}: {len(jobs)} trials ({len(self.arms) or 1} arm(s))")
        state = self._start_stop_rule(jobs, arguments, schedules, sweep_dir) if self.stop is not None else None
        link = [link_override(kind="asha", dir=str(sweep_dir.absolute()))] if state is not None else []
        returns: list = []
        self._run([job + link for job in jobs], returns)
        if state is not None:
            self._resume_paused(state, link, returns)
        return returns

    def _run(self, jobs: List[List[str]], returns: list) -> None:
        """Launch jobs in batches of max_batch_size, after those already launched (job numbers go on)."""
        first = sum(len(r) for r in returns)
        self.overrides = list(self.split_overrides_to_chunks(jobs, self.max_batch_size))
        self.batch_index = 0
        while not self.is_done():
            batch = self.get_job_batch()
            results = self.launcher.launch(batch, initial_job_idx=first)
            for r in results:
                _ = r.return_value  # re-raises if a job crashed outside the trial's own handling
            first += len(batch)
            returns.append(results)

    def _start_stop_rule(self, jobs: List[List[str]], arguments: List[str], schedules: List[tuple],
                         sweep_dir: Any) -> Any:
        """Check the rule, then write the manifest the trials read: each trial's arm and rungs."""
        from harness.errors import ConfigError
        from harness.prune.asha import STATE_DIR, Rule, State, rungs, trial_key

        assert self.stop is not None
        try:
            rule = Rule(**self.stop)
            rule.check()
        except TypeError as e:  # a key the rule doesn't have
            print(f"error: hydra.sweeper.stop: {e}".replace("Rule.__init__() ", ""), file=sys.stderr)
            sys.exit(2)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        arm_of = self._arm_of(jobs, arguments)
        trials = {}
        for job, (eval_every, steps) in zip(jobs, schedules):
            trials[trial_key(job)] = {"arm": arm_of[tuple(job)], "rungs": rungs(eval_every, steps, rule.min_step),
                                      "overrides": list(job)}
        if not any(t["rungs"] for t in trials.values()):
            print("error: hydra.sweeper.stop: no trial has a validation evaluation before its last step "
                  "(0 < trainer.eval_every < trainer.steps): nothing to stop at", file=sys.stderr)
            sys.exit(2)
        state = State(sweep_dir / STATE_DIR)
        state.write_manifest(rule, trials)
        log.info(f"Stop rule: eta={rule.eta}, rungs {sorted({s for t in trials.values() for s in t['rungs']})}, "
                 f"state in {state.folder}")
        return state

    def _arm_of(self, jobs: List[List[str]], arguments: List[str]) -> Dict[tuple, int]:
        """Each job's arm: the first arm whose own grid holds it (one arm when there are none)."""
        assert self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        arm_of: Dict[tuple, int] = {}
        for i, arm in enumerate(self.arms or [{}]):
            for job in expand(self._parse_config(), [arm], arguments, parser):
                arm_of.setdefault(tuple(job), i)
        return arm_of

    def _resume_paused(self, state: Any, link: List[str], returns: list) -> None:
        """Rounds: run again the paused trials whose rung is decided, until none is paused."""
        relaunched: set = set()
        while True:
            for key in state.close_dead():
                log.warning(f"Stop rule: trial {key} ended without saying so (died or failed early): it counts as stopped")
            paused, ready = state.paused(), state.ready()
            for k in [k for k in ready if (k, paused[k]) in relaunched]:  # run from this rung, back paused there
                log.warning(f"Stop rule: trial {k} came back paused at step {paused[k]}: it counts as stopped")
                state.write(k, {**state.read(k), "status": "ended", "lost": True})
                ready.remove(k)
            if not ready:
                if state.paused():
                    log.warning(f"Stop rule: {len(state.paused())} trial(s) still paused; run the sweep again")
                return
            relaunched.update((k, paused[k]) for k in ready)
            trials = state.manifest()["trials"]
            log.info(f"Stop rule: running again {len(ready)} paused trial(s) whose rung is decided")
            self._run([list(trials[k]["overrides"]) + link for k in ready], returns)

    def _validate_all(self, jobs: List[List[str]]) -> List[tuple]:
        """Validate every trial's config; returns each trial's (trainer.eval_every, trainer.steps)."""
        from harness.validate import ConfigError, validate

        assert self.hydra_context is not None and self.config is not None
        schedules = []
        for job in jobs:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(job))
            try:
                validate(cfg)
            except ConfigError as e:
                print(f"error: {e} (trial {' '.join(job)})", file=sys.stderr)
                sys.exit(2)
            schedules.append((int(cfg.trainer.eval_every), int(cfg.trainer.steps)))
        return schedules

