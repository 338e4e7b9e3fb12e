"""Checks on the command line before Hydra composes anything: a config group choice that doesn't
exist (`optimizer=foo`) gets one line naming the allowed values instead of Hydra's error block."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"


def group_options(group: str, conf_dir: Path = CONF) -> list[str] | None:
    d = REPO / "sweeps" if group == "sweeps" else conf_dir / group
    if not d.is_dir():
        return None
    return sorted(p.stem for p in d.glob("*.yaml"))


def check_overrides(args: list[str], conf_dir: Path = CONF) -> str | None:
    """The first bad group choice in `args` as a one-line message, or None."""
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, _, value = arg.partition("=")
        key = key.lstrip("+~").split("@")[0]
        if "." in key or key.startswith("hydra"):
            continue
        options = group_options(key, conf_dir)
        if options is None or not value or any(c in value for c in "()[]{}$"):
            continue
        for choice in value.split(","):
            if choice.strip() not in options and choice.strip() != "null":
                return f"{key}={choice.strip()}: no such config; allowed values are {', '.join(options)}"
    return None
