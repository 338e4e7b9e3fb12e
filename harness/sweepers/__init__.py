"""Hydra sweepers shipped with the harness: `grid` (the default) and `optuna`.

Hydra only instantiates sweepers whose class name starts with `hydra_plugins.` and that it found
when it scanned that namespace. Rather than adding a top-level `hydra_plugins/` folder, `register()`
(called by `python -m harness` before Hydra starts) enters the classes in Hydra's plugin registry
under those names, and stores their config schemas as `hydra/sweeper=grid|optuna`. The optuna
sweeper's module (and optuna with it) is imported only when a config selects it: a trial or a
grid never imports optuna.
"""

from __future__ import annotations

from typing import Callable

from hydra.core.config_store import ConfigNode, ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

PREFIX = "hydra_plugins.harness"


def register() -> None:
    # Hydra's first scan re-executes its plugin modules (basic_sweeper among them): scan first, so
    # GridSweeper subclasses the BasicSweeper class that Hydra will use.
    Plugins.instance()
    from harness.sweepers.grid import GridSweeper, GridSweeperConf

    sweepers = {"grid": (GridSweeper, GridSweeperConf)}
    for name, (cls, conf) in sweepers.items():
        _enter(cls)
        ConfigStore.instance().store(group="hydra/sweeper", name=name, node=conf, provider="harness")
    hydra_groups = ConfigStore.instance().repo.setdefault("hydra", {})
    group = hydra_groups["sweeper"] = _KeepsGrid(hydra_groups.setdefault("sweeper", {}))
    group["optuna.yaml"] = _OnFirstLoad("optuna.yaml", "hydra/sweeper", _optuna)
    # The grid is also Hydra's default sweeper (`basic`, a ConfigStore entry), so config.yaml needs no
    # `override hydra/sweeper`: in a defaults list the first override of a group wins, and one in
    # config.yaml would beat a sweep file's `override /hydra/sweeper: optuna`.
    ConfigStore.instance().store(group="hydra/sweeper", name="basic", node=GridSweeperConf, provider="harness")


class _KeepsGrid(dict):
    """The ConfigStore's hydra/sweeper group, which keeps the grid as `basic` once stored there.
    A submitit job (SLURM or local) restores the ConfigStore from the launching process, then Hydra's
    plugin scan stores its own `basic` again, whose schema lacks `arms` and `stop`: the job could not
    compose a sweep file's config. The group travels with the pickled ConfigStore, so this holds there."""

    def __setitem__(self, key: str, node: object) -> None:
        if key == "basic.yaml" and key in self and getattr(node, "provider", None) == "hydra":
            return
        super().__setitem__(key, node)


def _enter(cls: type) -> None:
    """Enter a sweeper class in Hydra's plugin registry as hydra_plugins.harness.<class name>."""
    plugins = Plugins.instance()
    plugins.class_name_to_class[f"{PREFIX}.{cls.__name__}"] = cls
    subclasses = plugins.plugin_type_to_subclass_list.setdefault(Sweeper, [])
    if cls not in subclasses:
        subclasses.append(cls)


def _optuna() -> type:
    from harness.sweepers.optuna import OptunaSweeper, OptunaSweeperConf  # needs optuna

    _enter(OptunaSweeper)
    return OptunaSweeperConf


class _OnFirstLoad(ConfigNode):
    """A ConfigStore entry whose schema is imported when Hydra first loads it (a config selects it)."""

    def __init__(self, name: str, group: str, schema: Callable[[], type]) -> None:
        self.name, self.group, self.package, self.provider = name, group, None, "harness"
        self._schema, self._node = schema, None

    @property  # type: ignore[override]
    def node(self) -> DictConfig:
        if self._node is None:
            self._node = OmegaConf.structured(self._schema())
        return self._node

    @node.setter
    def node(self, value: DictConfig) -> None:  # ConfigStore.load sets a copy on its shallow copy
        self._node = value
