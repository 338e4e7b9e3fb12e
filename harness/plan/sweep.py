"""The trials a command line stands for, composed as `python -m harness` composes them.

`load(overrides, multirun)` composes the master config with Hydra's own config loader (the same
conf/ folder, search path and saved sweeps); for a multirun it expands the grid as the `grid`
sweeper does (harness.sweep_grid.expand: params x arms x command line) and composes each
trial with `load_sweep_config`, as the sweeper does before launching. An Optuna search counts
`n_trials` trials, planned on the master config (the searched values don't change the memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

from harness.sweep_grid import as_override_value, expand


@dataclass
class Trials:
    master: Any
    configs: list[Any]  # one composed config per distinct trial plan to make
    overrides: list[list[str]]  # the trial overrides behind each config
    count: int  # trials the sweep runs (Optuna: n_trials)


def _line(k: str, v: Any) -> str:
    v = OmegaConf.to_container(v) if OmegaConf.is_config(v) else v
    return f"{k}={as_override_value(v)}"


def expand_master(loader: Any, master: Any) -> Trials:
    """The trials of a composed multirun master config (a sweeper's view: hydra.overrides.task)."""
    sweeper = master.hydra.sweeper
    arguments = list(OmegaConf.to_container(master.hydra.overrides.task))
    if str(sweeper.get("_target_", "")).endswith("OptunaSweeper"):
        plain = [a for a in arguments if "," not in a.partition("=")[2]]
        return Trials(master, [loader.load_sweep_config(master, plain)], [plain], int(sweeper.n_trials))
    common = [_line(k, v) for k, v in (sweeper.get("params") or {}).items()]
    arms = [dict(OmegaConf.to_container(a)) for a in (sweeper.get("arms") or [])]
    jobs = expand(common, arms, arguments)
    return Trials(master, [loader.load_sweep_config(master, list(j)) for j in jobs], [list(j) for j in jobs], len(jobs))


def load(overrides: list[str], multirun: bool) -> Trials:
    """Compose (inside an initialised Hydra, see __main__) the run or the sweep's trials."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    loader = GlobalHydra.instance().config_loader()
    master = loader.load_configuration("config", overrides, RunMode.MULTIRUN if multirun else RunMode.RUN)
    if not multirun:
        return Trials(master, [master], [list(overrides)], 1)
    return expand_master(loader, master)
