"""One registry mechanism for every variant that config picks by name.

Tasks, rollout backends, KL estimators, loss aggregations and per-step diagnostics each have a
`Registry`. An entry is registered with how it is built and how its config is checked, side by
side, and is looked up by the name in config; an unknown name is a ConfigError that names the key
and the allowed values. Nothing outside a registry branches on a variant's name.

    TASKS = Registry("task.name")

    @TASKS.register("arithmetic", validate=check_arithmetic)
    def build_arithmetic(cfg, seed): ...

    TASKS.validate(cfg.task.name, cfg.task)   # the entry's own checks
    task = TASKS.build(cfg.task.name, cfg.task, seed)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Optional, TypeVar

from harness.errors import ConfigError

T = TypeVar("T", bound=Callable[..., Any])


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    build: T  # the registered callable: a builder, or the function itself (KL estimators)
    validate: Optional[Callable[[Any], None]] = None  # raises ConfigError for a config it can't run
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # what else it brings, e.g. a rollout backend's `plan`


class Registry(Generic[T]):
    def __init__(self, key: str):
        self.key = key  # the config key whose value picks an entry, for error messages
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, *, validate: Optional[Callable[[Any], None]] = None,
                 **extra: Any) -> Callable[[T], T]:
        """Register `fn` under `name`, with its checks and whatever else the variant brings (`extra`,
        read back as `entry(name).extra`: e.g. a rollout backend's `plan` for the planner)."""

        def deco(fn: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.key}: {name!r} is registered twice")
            self._entries[name] = Entry(name, fn, validate, dict(extra))
            return fn

        return deco

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __getitem__(self, name: str) -> T:
        return self.entry(name).build

    def entry(self, name: str) -> Entry[T]:
        if name not in self._entries:
            raise ConfigError(f"{self.key}={name!r}: allowed values are {', '.join(self.names())}")
        return self._entries[name]

    def validate(self, name: str, cfg: Any = None) -> None:
        """Unknown name -> ConfigError; then the entry's own checks on `cfg`, if it has any."""
        entry = self.entry(name)
        if entry.validate is not None:
            entry.validate(cfg)

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.entry(name).build(*args, **kwargs)
