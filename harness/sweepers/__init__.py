"""Hydra sweepers shipped with the harness: `grid` (the default) and `optuna`.

Hydra only instantiates sweepers whose class name starts with `hydra_plugins.` and that it found
when it scanned that namespace. Rather than adding a top-level `hydra_plugins/` folder, `register()`
(called by `python -m harness` before Hydra starts) enters the classes in Hydra's plugin registry
under those names, and stores their config schemas as `hydra/sweeper=grid|optuna`.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper

PREFIX = "hydra_plugins.harness"


def register() -> None:
    # Hydra's first scan re-executes its plugin modules (basic_sweeper among them): scan first, so
    # GridSweeper subclasses the BasicSweeper class that Hydra will use.
    plugins = Plugins.instance()
    from harness.sweepers.grid import GridSweeper, GridSweeperConf

    sweepers = {"grid": (GridSweeper, GridSweeperConf)}
    try:
        from harness.sweepers.optuna import OptunaSweeper, OptunaSweeperConf  # needs optuna
        sweepers["optuna"] = (OptunaSweeper, OptunaSweeperConf)
    except ImportError:
        pass
    for name, (cls, conf) in sweepers.items():
        qualified = f"{PREFIX}.{cls.__name__}"
        plugins.class_name_to_class[qualified] = cls
        subclasses = plugins.plugin_type_to_subclass_list.setdefault(Sweeper, [])
        if cls not in subclasses:
            subclasses.append(cls)
        ConfigStore.instance().store(group="hydra/sweeper", name=name, node=conf, provider="harness")
    # The grid is also Hydra's default sweeper (`basic`, a ConfigStore entry), so config.yaml needs no
    # `override hydra/sweeper`: in a defaults list the first override of a group wins, and one in
    # config.yaml would beat a sweep file's `override /hydra/sweeper: optuna`.
    ConfigStore.instance().store(group="hydra/sweeper", name="basic", node=GridSweeperConf, provider="harness")
