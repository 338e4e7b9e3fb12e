"""A trial's end of an Optuna study: intermediate values in, pruning decisions out, through the storage.

    python -m harness -m +sweeps=search_pruned model=tiny trainer.steps=4   # the optuna sweeper sets prune.sweep

The optuna sweeper (harness.sweepers.optuna) launches each trial with `prune.sweep={kind: optuna,
storage, study, dir}`; the trial, in the sweeper's process or in a SLURM job, loads the study from
that storage, finds its own Optuna trial (the running one whose user attr "dir" is its folder),
reports the objective's running value at each evaluation and asks the study's pruner (stored by
the sweeper in the study's user attr "pruner" as a Hydra `_target_` node). A pruned trial marks
itself PRUNED in the study (with its host, pid and SLURM job id in user attr "pruned").

`storage` is a database URL (`sqlite:///...`, `postgresql://...`) or the path of a journal file
(Optuna's JournalStorage with a JournalFileBackend: append-only with its own lock files, which
Optuna recommends over SQLite on NFS).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Optional

from harness.errors import ConfigError


def storage_for(storage: str) -> Any:
    """What optuna.create_study/load_study take: the URL itself, or a JournalStorage on the file."""
    if "://" in storage:
        return storage
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    Path(storage).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(storage)))


def make_pruner(node: Optional[dict]) -> Any:
    """The pruner of a `_target_` node (e.g. optuna.pruners.MedianPruner with its own keys); none: NopPruner."""
    import optuna

    if not node:
        return optuna.pruners.NopPruner()
    from hydra.utils import instantiate

    return instantiate(dict(node))


class OptunaLink:
    by = "optuna"

    def __init__(self, sweep: Any, out_dir: Path, overrides: list[str]):
        import optuna
        from optuna.trial import TrialState

        self._optuna = optuna
        self.study = optuna.load_study(study_name=str(sweep["study"]), storage=storage_for(str(sweep["storage"])),
                                       sampler=optuna.samplers.RandomSampler())  # the trial samples nothing
        self.pruner = make_pruner(self.study.user_attrs.get("pruner"))
        self.study.pruner = self.pruner
        rel = os.path.relpath(Path(out_dir).resolve(), Path(str(sweep["dir"])).resolve())
        mine = [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if t.user_attrs.get("dir") == rel]
        if len(mine) != 1:
            raise ConfigError(f"prune.sweep: study {self.study.study_name} has {len(mine)} running trials in {rel} (expected 1)")
        self.trial = optuna.trial.Trial(self.study, mine[0]._trial_id)

    def report(self, step: int, value: float) -> None:
        import warnings

        with warnings.catch_warnings():  # a re-run trial reports its steps again: Optuna keeps the first value
            warnings.simplefilter("ignore")
            self.trial.report(value, step)

    def decide(self, step: int, value: float) -> Optional[tuple[str, str]]:
        if self.trial.should_prune():
            return "stop", f"optuna {type(self.pruner).__name__} at step {step} ({value:.4g})"
        return None

    def resume(self, step: int) -> None:
        return None  # Optuna trials never pause

    def value_at(self, step: int) -> Optional[float]:
        return self.trial.study._storage.get_trial(self.trial._trial_id).intermediate_values.get(step)

    def finish(self, status: str, step: Optional[int], reason: Optional[str] = None) -> None:
        """A pruned trial is PRUNED in the study from here (the sweeper tells complete and failed ones)."""
        if status != "pruned":
            return
        from optuna.trial import TrialState

        where = {"step": step, "reason": reason, "host": socket.gethostname(), "pid": os.getpid(),
                 "slurm_job_id": os.environ.get("SLURM_JOB_ID")}
        self.trial.set_user_attr("pruned", where)
        self.study.tell(self.trial.number, state=TrialState.PRUNED, skip_if_finished=True)
