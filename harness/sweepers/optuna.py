"""The `optuna` sweeper: a persistent, resumable Optuna search run through Hydra's launcher.

    python -m harness -m +sweeps=search_sgd                           # sweeps/search_sgd.yaml
    python -m harness -m +sweeps=search_sgd hydra.sweeper.n_trials=40 # again: the study goes on to 40
    python -m harness -m +sweeps=search_adamw hydra/launcher=slurm    # n_jobs trials at a time on SLURM

The search space uses Hydra's override grammar, in `hydra.sweeper.params` or on the command line
(the command line wins; any other key is passed to every trial as is):

    optimizer.lr: tag(log, interval(1e-3, 1))   -> FloatDistribution(1e-3, 1, log=True)
    x: interval(0, 1)                           -> FloatDistribution(0, 1)
    n: tag(int, interval(1, 8))                 -> IntDistribution(1, 8)   (tag(int, log, ...): log scale)
    n: range(1, 9, 2)                           -> IntDistribution(1, 7, step=2)  (the values range yields)
    x: range(0.1, 0.5, 0.1)                     -> FloatDistribution(0.1, 0.4, step=0.1)
    optimizer.momentum: choice(0.0, 0.9)        -> CategoricalDistribution([0.0, 0.9])  (also `0.0,0.9`)

The study lives in `storage` (default: SQLite `<sweep dir>/study.db`; a database URL, or the path
of a journal file: Optuna's JournalStorage, which Optuna recommends over SQLite on NFS) under
`study_name` (default: the sweep folder's name), so the same command again continues it. `n_trials`
is the total number of finished (complete, pruned or failed) trials the study should hold: 5 after
3 runs 2 more. A trial left running by an interrupted sweep is run again first, in its own folder
with its own parameters (a trial that had finished or was pruned by then is skipped and its
result.json read). One sweep per study at a time.

`pruner` (a `_target_` node: optuna.pruners.MedianPruner, SuccessiveHalvingPruner, HyperbandPruner
with their own keys) stops trials at their validation evaluations (harness.prune): each trial, in
this process or in its SLURM job, reports the objective's running value to the study through the
storage and asks the pruner; a pruned trial stops there, writes result.json with status "pruned",
and is PRUNED in the study, which keeps it when continued. The sweeper launches each trial with
`prune.sweep` (the storage, the study, the sweep folder) for that. Needs trainer.eval_every > 0.

Each Optuna trial runs in `<sweep dir>/trial_<number>` (numbers never repeat in a study, so a
re-run never reuses a folder for other parameters), with the folder stored in the trial's user
attrs ("dir", relative to the sweep folder) with its overrides. The trial's return value (the
config's `objective`, e.g. eval/val_accuracy_final, the validation split) is told to Optuna; None or NaN (a failed or
diverged trial) or a job that raised is told as FAIL, with the reason in user attr "error", and
the search goes on. TPE ignores failed trials.

`sampler` is instantiated with Hydra (`_partial_: true`); its `seed` is offset by the number of
trials the study already holds, so a continued study draws new points instead of replaying the
first run's random start-up points, and a given sequence of commands samples the same trials.
The sampler's state is not saved: a continued study is rebuilt from the trials stored in it.
"""

from __future__ import annotations

import logging
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep, Transformer
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from harness.prune import link_override
from harness.prune.optuna_link import storage_for
from harness.results import read_result

log = logging.getLogger(__name__)

TRIAL_DIR = "trial_{:04d}"
FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.harness.OptunaSweeper"
    # a sampler factory; `seed` is offset by the trials already in the study
    sampler: Dict[str, Any] = field(default_factory=lambda: {
        "_target_": "optuna.samplers.TPESampler", "_partial_": True, "seed": 0})
    direction: str = "maximize"  # maximize | minimize the config's `objective`
    storage: Optional[str] = None  # a database URL or a journal file path; None = sqlite:///<sweep dir>/study.db
    study_name: Optional[str] = None  # None = the sweep folder's name
    pruner: Any = None  # a `_target_` node (optuna.pruners.MedianPruner, ...); None: no pruning
    n_trials: int = 20  # total finished (complete + pruned + failed) trials the study should hold
    n_jobs: int = 1  # trials asked and launched together (parallel on SLURM)
    params: Optional[Dict[str, Any]] = None  # key: Hydra override value (a search dimension or fixed)


class SweepError(Exception):
    """A problem with the sweep's configuration: reported in one line before any trial runs."""


def distribution(override: Override) -> BaseDistribution:
    """The Optuna distribution of one sweep override (interval, range or choice)."""
    v = override.value()
    if override.is_choice_sweep():
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if override.is_range_sweep():
        assert isinstance(v, RangeSweep)
        values = list(override.sweep_iterator(transformer=Transformer.encode))
        if not values:
            raise SweepError(f"{override.input_line}: an empty range")
        if v.shuffle:
            return CategoricalDistribution(values)
        step = abs(v.step)
        if all(isinstance(x, int) for x in (v.start, v.stop, v.step)):
            return IntDistribution(min(values), max(values), step=step)
        return FloatDistribution(min(values), max(values), step=step)
    if override.is_interval_sweep():
        assert isinstance(v, IntervalSweep)
        log_scale = "log" in v.tags
        if "int" in v.tags:
            return IntDistribution(int(v.start), int(v.end), log=log_scale)
        return FloatDistribution(float(v.start), float(v.end), log=log_scale)
    raise SweepError(f"{override.input_line}: not a search dimension (use interval, range or choice)")


def search_space(overrides: List[Override]) -> Tuple[Dict[str, BaseDistribution], List[str]]:
    """Split parsed overrides into the search space (name -> distribution) and fixed overrides.
    A key given twice keeps its last value (the command line comes after `params`)."""
    by_key: Dict[str, Override] = {}
    for o in overrides:
        key = o.key_or_group if o.package is None else f"{o.key_or_group}@{o.package}"
        by_key.pop(key, None)
        by_key[key] = o
    space: Dict[str, BaseDistribution] = {}
    fixed: List[str] = []
    for o in by_key.values():
        if o.is_sweep_override():
            try:
                space[o.get_key_element()] = distribution(o)
            except (ValueError, TypeError) as e:
                raise SweepError(f"{o.input_line}: {e}") from None
        else:
            fixed.append(f"{o.get_key_element()}={o.get_value_element_as_str()}")
    return space, fixed


def override_value(v: Any) -> str:
    """A sampled value as Hydra override text."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return repr(v)
    s = str(v)
    if re.fullmatch(r"[A-Za-z_][\w\-./]*", s) and s.lower() not in ("true", "false", "null", "inf", "nan"):
        return s
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def objective_value(ret: Optional[JobReturn], result_file: Path, objective: str) -> Tuple[Optional[float], Optional[str]]:
    """(value, None) for a usable objective, else (None, reason). Without a JobReturn (the launcher
    failed), the trial's result.json is read instead."""
    import json

    def reason_from_result() -> Optional[str]:
        try:
            r = json.loads(result_file.read_text())
            return r.get("error") if r.get("status") != "ok" else None
        except (OSError, ValueError, AttributeError):
            return None

    if ret is None:
        try:
            r = json.loads(result_file.read_text())
            value = r.get(objective) if r.get("status") == "ok" else None
        except (OSError, ValueError, AttributeError):
            return None, "no result.json (the job did not finish)"
    elif ret.status == JobStatus.FAILED:
        return None, f"job raised {type(ret._return_value).__name__}: {ret._return_value}".splitlines()[0][:500]
    else:
        value = ret._return_value
    if value is None:
        return None, reason_from_result() or f"the trial returned no {objective}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, f"{objective} is not a number: {value!r}"[:500]
    if not math.isfinite(value):
        return None, f"{objective} is {value}"
    return float(value), None


class OptunaSweeper(Sweeper):
    def __init__(self, sampler: Any = None, direction: str = "maximize", storage: Optional[str] = None,
                 study_name: Optional[str] = None, n_trials: int = 20, n_jobs: int = 1,
                 params: Optional[Dict[str, Any]] = None, pruner: Any = None) -> None:
        self.sampler = sampler
        self.pruner = pruner  # instantiated by Hydra; the trials rebuild it from its config node
        self.direction = direction
        self.storage = storage
        self.study_name = study_name
        self.n_trials = int(n_trials)
        self.n_jobs = int(n_jobs)
        self.params = dict(params or {})
        self.config: Optional[DictConfig] = None
        self.hydra_context: Any = None
        self.launcher: Any = None
        self.link = ""  # the prune.sweep override every trial gets (set once the study is open)

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        try:
            return self._sweep(arguments)
        except SweepError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    def _sweep(self, arguments: List[str]) -> Any:
        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        if self.n_trials < 0 or self.n_jobs < 1:
            raise SweepError(f"hydra.sweeper: n_trials must be >= 0 and n_jobs >= 1 (got {self.n_trials}, {self.n_jobs})")
        if self.direction not in ("maximize", "minimize"):
            raise SweepError(f"hydra.sweeper.direction={self.direction}: must be maximize or minimize")
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        try:
            parsed = parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        except Exception as e:  # noqa: BLE001 - a grammar error is a config error
            raise SweepError(str(e).splitlines()[0]) from None
        space, fixed = search_space(parsed)
        if not space:
            raise SweepError("the optuna sweeper needs at least one search dimension (interval, range or choice)")
        from harness.slurm.checks import check_launcher

        problem = check_launcher(self.config.hydra.launcher)  # SLURM answering, partition, time limit
        if problem:
            raise SweepError(problem)
        self._validate(fixed, space)
        objective = str(self.config.get("objective"))

        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        storage = self.storage or f"sqlite:///{sweep_dir / 'study.db'}"
        if "://" not in storage:  # a journal file: the trials (SLURM jobs too) open the same absolute path
            storage = str(Path(storage).absolute())
        name = self.study_name or sweep_dir.name
        if not self.storage and not (sweep_dir / "study.db").exists():
            self._check_folders(set(), sweep_dir, f"study {name}")  # before creating the database
        study = optuna.create_study(study_name=name, storage=storage_for(storage), direction=self.direction,
                                    load_if_exists=True, pruner=self.pruner or optuna.pruners.NopPruner())
        self._check_study(study, objective, sweep_dir)
        study.set_user_attr("objective", objective)
        study.set_user_attr("pruner", self._pruner_node())  # what the trials ask (harness.prune.optuna_link)
        self.link = link_override(kind="optuna", storage=storage, study=name, dir=str(sweep_dir))
        study.sampler = self._make_sampler(len(study.trials))

        trials = study.get_trials(deepcopy=False)
        done = sum(t.state in FINISHED for t in trials)
        stale = [t for t in trials if t.state == TrialState.RUNNING]
        remaining = max(0, self.n_trials - done)
        for t in stale[remaining:]:
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        resume = [optuna.trial.Trial(study, t._trial_id) for t in stale[:remaining]]
        log.info(f"Study {name} ({storage}): {done} finished trial(s), {len(resume)} to resume, "
                 f"{remaining - len(resume)} to ask; objective {objective} ({self.direction})")

        while remaining > 0:
            batch = []
            while len(batch) < min(self.n_jobs, remaining):
                trial = resume.pop(0) if resume else study.ask(fixed_distributions=space)
                batch.append(trial)
            jobs = [self._job(trial, fixed) for trial in batch]
            try:
                returns: List[Optional[JobReturn]] = list(
                    self.launcher.launch(jobs, initial_job_idx=batch[0].number))
            except Exception as e:  # noqa: BLE001 - e.g. a SLURM job killed: read what the trials wrote
                log.error(f"launcher failed ({type(e).__name__}: {e}); reading the trials' result.json")
                returns = [None] * len(batch)
            for trial, ret in zip(batch, returns):
                result_file = sweep_dir / trial.user_attrs["dir"] / "result.json"
                if (read_result(result_file) or {}).get("status") == "pruned":  # the trial told the study itself
                    study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
                    continue
                value, reason = objective_value(ret, result_file, objective)
                if value is None:
                    trial.set_user_attr("error", reason)
                    study.tell(trial, state=TrialState.FAIL)
                else:
                    study.tell(trial, value)
            remaining -= len(batch)
        return self._summary(study, objective, sweep_dir)

    def _job(self, trial: optuna.trial.Trial, fixed: List[str]) -> List[str]:
        """The overrides of one trial's job; a resumed trial keeps the ones it was asked with."""
        overrides = trial.user_attrs.get("overrides")
        if not overrides:
            overrides = fixed + [f"{k}={override_value(v)}" for k, v in trial.params.items()]
            trial.set_user_attr("overrides", overrides)
            trial.set_user_attr("dir", TRIAL_DIR.format(trial.number))
        return list(overrides) + [f"hydra.sweep.subdir={trial.user_attrs['dir']}", self.link]

    def _pruner_node(self) -> Optional[Dict[str, Any]]:
        """The pruner's config node as plain data (the trials instantiate it), or None."""
        assert self.config is not None
        node = self.config.hydra.sweeper.get("pruner")
        return OmegaConf.to_container(node, resolve=True) if node is not None else None  # type: ignore[return-value]

    def _make_sampler(self, n_existing: int) -> optuna.samplers.BaseSampler:
        s = self.sampler
        if s is None:
            return optuna.samplers.TPESampler(seed=n_existing)
        if isinstance(s, optuna.samplers.BaseSampler):
            return s  # instantiated without _partial_: used as is, its seed not offset
        seed = getattr(s, "keywords", {}).get("seed")
        return s(seed=seed + n_existing) if seed is not None else s()

    def _validate(self, fixed: List[str], space: Dict[str, BaseDistribution]) -> None:
        """Compose and validate the trial config at each end of every dimension (and every choice)."""
        from harness.validate import ConfigError, validate

        assert self.hydra_context is not None and self.config is not None
        first = {k: _corners(d)[0] for k, d in space.items()}
        checks = [dict(first, **{k: c}) for k, d in space.items() for c in _corners(d)]
        for point in checks:
            job = fixed + [f"{k}={override_value(v)}" for k, v in point.items()]
            try:
                cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(job))
                validate(cfg)
            except ConfigError as e:
                raise SweepError(f"{e} (trial {' '.join(job)})") from None
            except Exception as e:  # noqa: BLE001 - a key that doesn't exist, a bad group choice
                raise SweepError(f"{str(e).splitlines()[0]} (trial {' '.join(job)})") from None
            t = cfg.trainer
            if self.pruner is not None and not 0 < t.eval_every < t.steps:
                raise SweepError(f"hydra.sweeper.pruner acts at validation evaluations before the last step: needs "
                                 f"0 < trainer.eval_every < trainer.steps (got {t.eval_every}, {t.steps})")

    def _check_study(self, study: optuna.Study, objective: str, sweep_dir: Path) -> None:
        where = f"study {study.study_name}"
        if study.direction.name.lower() != self.direction:
            raise SweepError(f"{where} was created to {study.direction.name.lower()}, this sweep says {self.direction}:"
                             " use another hydra.sweep.dir or hydra.sweeper.study_name")
        old = study.user_attrs.get("objective")
        if old is not None and old != objective:
            raise SweepError(f"{where} optimizes {old}, this sweep's objective is {objective}:"
                             " use another hydra.sweep.dir or hydra.sweeper.study_name")
        self._check_folders({t.user_attrs.get("dir") for t in study.get_trials(deepcopy=False)}, sweep_dir, where)

    @staticmethod
    def _check_folders(known: set, sweep_dir: Path, where: str) -> None:
        foreign = sorted(p.name for p in sweep_dir.glob("trial_*") if p.is_dir() and p.name not in known)
        if foreign:
            raise SweepError(f"{sweep_dir} holds trial folders that {where} doesn't know ({', '.join(foreign[:3])}"
                             f"{', ...' if len(foreign) > 3 else ''}; was study.db deleted?): move them away or use "
                             "another hydra.sweep.dir")

    def _summary(self, study: optuna.Study, objective: str, sweep_dir: Path) -> Dict[str, Any]:
        trials = study.get_trials(deepcopy=False)
        counts = {s.name.lower(): sum(t.state == s for t in trials) for s in FINISHED + (TrialState.RUNNING,)}
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        best = study.best_trial if complete else None
        out = {"name": study.study_name, "objective": objective, "direction": self.direction,
               "trials": counts, "best_value": best.value if best else None,
               "best_params": dict(best.params) if best else None,
               "best_dir": best.user_attrs.get("dir") if best else None}
        OmegaConf.save(OmegaConf.create(out), sweep_dir / "optimization_results.yaml")
        if best:
            log.info(f"Best trial {best.number} ({best.user_attrs.get('dir')}): {objective}={best.value:g} {best.params}")
        return out


def _corners(d: BaseDistribution) -> List[Any]:
    if isinstance(d, CategoricalDistribution):
        return list(d.choices)
    assert isinstance(d, (FloatDistribution, IntDistribution))
    return [d.low, d.high]
