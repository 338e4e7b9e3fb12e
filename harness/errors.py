"""The harness's one error type for bad input: `ConfigError`, whose str() is the line the user sees."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A config value that can't work. str(e) is the one-line message for the user (exit status 2)."""


def check(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise ConfigError(`key=value: allowed`) unless `ok`."""
    if not ok:
        raise ConfigError(f"{key}={value!r}: {allowed}")
