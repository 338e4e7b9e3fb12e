"""Checks on the command line before any work, each failure one line (`python -m harness` exits 2):

    python -m harness optimizer=foo      error: optimizer=foo: no such config; allowed values are adamw, rmsprop, sgd
    python -m harness optimizer.foo=1    error: optimizer.foo: no such key; keys of optimizer are _target_, ...;
                                         to add one: +optimizer.foo=1

`check_overrides` reads the conf/ folders only (no composing). `check_keys` composes the config
with Hydra's compose API, as `python -m harness` will, and turns Hydra's error block for a key
that does not exist (`optimizer.foo=1`, `model.tiny.nosuch=1`, a misspelled group `optimzer=sgd`,
`~optimizer.foo`) or a value of the wrong type (`trainer.steps=abc`) into one line. It costs one
compose (~0.15 s) for a single run. For a multirun it composes once per choice of each swept
config group (`optimizer=sgd,adamw`: twice), other swept keys taking their first value, and once
per arm of a saved sweep (`+sweeps=NAME`: the sweeper's `params` and `arms`). Anything else that
fails to compose is left to Hydra, which reports it as before.
"""

from __future__ import annotations

import difflib
import itertools
import re
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"
MAX_COMPOSES = 32  # a multirun sweeping many groups at once: check the first 32 combinations


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


# ----------------------------------------------------------------------------- unknown keys


def _cli_overrides(argv: list[str]) -> Optional[tuple[list[str], bool]]:
    """(overrides, multirun) as Hydra's own argument parser reads argv; None where the command does
    not compose the usual config (another config, --help, --info, shell completion, a parse error)."""
    from hydra._internal.utils import get_args_parser

    try:
        args = get_args_parser().parse_args(argv)
    except SystemExit:  # argparse's own message follows when Hydra parses argv again
        return None
    skip = ("help", "hydra_help", "info", "shell_completion", "config_path", "config_name", "config_dir",
            "experimental_rerun")
    if any(getattr(args, name, None) for name in skip):
        return None
    return list(args.overrides), bool(args.multirun)


def _options(o: Any) -> list[str]:
    """The values a sweep override stands for, as override value strings (an interval: its start)."""
    if o.is_interval_sweep():
        return [repr(float(o.value().start))]
    if o.value_type is not None and o.value_type.name == "GLOB_CHOICE_SWEEP":
        return o.value().filter(group_options(o.key_or_group) or [])
    return list(o.sweep_string_iterator())


def _variants(lines: list[str], parser: Any, where: Optional[str] = None) -> list[tuple[Optional[str], list[str]]]:
    """(label, override list without sweeps): between them they hold every key `lines` can set,
    each swept config group at its every choice (their keys differ), any other swept key at its first
    value. A key given twice keeps its last value, as in a sweep (the command line after the sweep
    file's params and arms). The label names the arm and the group choices of the trials it stands for."""
    last: dict[tuple[str, Any], Any] = {}
    for o in parser.parse_overrides(lines):
        last.pop((o.key_or_group, o.package), None)
        last[(o.key_or_group, o.package)] = o
    choices: list[list[tuple[Optional[str], str]]] = []
    for o in last.values():
        if not o.is_sweep_override():
            choices.append([(None, o.input_line)])
            continue
        values = _options(o)
        group = group_options(o.key_or_group) is not None
        if not group:
            values = values[:1]  # a value sweep: its keys are the same for every value
        lines_o = [f"{o.get_key_element()}={v}" for v in values]
        choices.append([(x if group and len(lines_o) > 1 else None, x) for x in lines_o])
    out = []
    for combo in itertools.islice(itertools.product(*[c for c in choices if c]), MAX_COMPOSES):
        labels = [x for x in [where] + [lab for lab, _ in combo] if x]
        out.append((f"the trials of {', '.join(labels)}" if labels else None, [line for _, line in combo]))
    return out


def _sweep_lines(sweeper: Any) -> list[tuple[str, list[str]]]:
    """(where, override lines) for the composed sweeper's `params` crossed with each of its `arms`."""
    from omegaconf import OmegaConf

    def line(k: str, v: Any) -> str:
        v = OmegaConf.to_container(v) if OmegaConf.is_config(v) else v
        return f"{k}={','.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"

    params = [line(k, v) for k, v in (sweeper.get("params") or {}).items()]
    arms = list(sweeper.get("arms") or [])
    if not arms:
        return [("hydra.sweeper.params", params)] if params else []
    return [(f"hydra.sweeper.arms[{i}]", params + [line(k, v) for k, v in arm.items()])
            for i, arm in enumerate(arms)]


def _bad_key(exc: Exception) -> Optional[tuple[str, str]]:
    """(key, kind) of the override Hydra could not apply, kind "set", "delete" or "type"; None for
    any other composition error."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    msg, cause = str(exc), exc.__cause__
    m = re.match(r"Could not override '([^']+)'", msg)
    if m and isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
        return m.group(1), "set"
    m = re.match(r"Could not delete from config\. '([^']+)' does not exist", msg)
    if m:
        return m.group(1), "delete"
    m = re.match(r"Error merging override (\S+?)=", msg)
    if m and isinstance(cause, ValidationError):
        return m.group(1).lstrip("+~"), "type"
    return None


def _blame(parsed: list) -> Optional[tuple[str, str]]:
    """(key, "set") for the first dotted value override below something that is not a config node
    (`model.tiny.x=1` where model.tiny is null), which Hydra reports as an AssertionError."""
    for o in parsed:
        if "." not in o.key_or_group or o.is_add() or o.is_force_add() or o.is_delete() or o.is_hydra_override():
            continue
        try:
            cfg = _compose([x.input_line for x in parsed if x is not o])
        except Exception:  # noqa: BLE001 - not this one alone
            continue
        parent, keys = _node_keys(cfg, o.key_or_group)
        if keys is None or parent != o.key_or_group.rsplit(".", 1)[0]:
            return o.key_or_group, "set"
    return None


def _compose(overrides: list[str]) -> Any:
    from hydra import compose

    return compose("config", overrides=overrides, return_hydra_config=True)


def _node_keys(cfg: Any, key: str) -> tuple[str, Optional[list[str]]]:
    """(the deepest existing node on the path to `key`, its keys; None if it is not a config node)."""
    from omegaconf import DictConfig

    parts, node, path = key.split("."), cfg, []
    for part in parts[:-1]:
        if not isinstance(node, DictConfig) or node._is_none() or part not in node:
            break
        node, path = node._get_node(part), path + [part]
    where = ".".join(path)
    if not isinstance(node, DictConfig) or node._is_none():
        return where, None  # a value, or null (model.tiny unless model=tiny)
    return where, [str(k) for k in node.keys()]


def _message(o: Any, kind: str, cause: Any, rest: list[str], where: Optional[str]) -> str:
    """The one line for override `o` that failed; `rest` (the other overrides) composes."""
    key = o.key_or_group
    origin = f" (in {where})" if where else ""
    if kind == "type":
        detail = str(cause).splitlines()[0] if cause is not None else "wrong type"
        return f"{key}={o.get_value_string()}{origin}: {detail}"
    try:
        cfg = _compose(rest)
    except Exception:  # noqa: BLE001 - the other overrides fail too: name the key alone
        return f"{key}: no such key{origin}; to add one: +{key}={o.get_value_string()}"
    parent, keys = _node_keys(cfg, key)
    missing = key[len(parent) + 1:].split(".")[0] if parent else key.split(".")[0]
    label = f"keys of {parent} are" if parent else "top-level keys are"
    if keys is None:
        return f"{key}: no such key{origin}; {parent} is a value or null here, not a config node"
    close = difflib.get_close_matches(missing, keys, n=1)
    hint = f" (did you mean {'.'.join([parent, close[0]]) if parent else close[0]}?)" if close else ""
    bad = f"{parent}.{missing}" if parent else missing
    shown = ", ".join(k for k in keys if k != "hydra")
    if kind == "delete":
        return f"~{key}: no such key {bad}{hint}{origin}; {label} {shown}"
    return f"{key}: no such key{' ' + bad if bad != key else ''}{hint}{origin}; {label} {shown}; " \
           f"to add one: +{key}={o.get_value_string()}"


def _first_problem(variants: list[tuple[Optional[str], list[str]]], parser: Any,
                   keep: Optional[list] = None) -> Optional[str]:
    """Compose each override list; the first unknown key or bad type as a line, or None."""
    seen: set[tuple[str, ...]] = set()
    for where, overrides in variants:
        if tuple(overrides) in seen:
            continue
        seen.add(tuple(overrides))
        try:
            cfg = _compose(overrides)
        except Exception as e:  # noqa: BLE001 - composition errors other than keys are Hydra's to report
            parsed = parser.parse_overrides(overrides)
            bad = _bad_key(e) or _blame(parsed)
            if bad is None:
                continue
            key, kind = bad
            match = [o for o in parsed if o.key_or_group == key and (kind != "delete" or o.is_delete())]
            if not match:
                continue
            o = match[-1]
            rest = [x.input_line for x in parsed if x is not o]
            return _message(o, kind, e.__cause__, rest, where)
        if keep is not None:
            keep.append(cfg)
    return None


def check_keys(argv: list[str]) -> str | None:
    """The first override in argv (a `python -m harness` command line) naming a key that does not
    exist, or with a value of the wrong type, as a one-line message; None if there is none."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed_cli = _cli_overrides(argv)
    if parsed_cli is None or GlobalHydra.instance().is_initialized():
        return None
    lines, multirun = parsed_cli
    if not any(x.startswith("hydra.searchpath") for x in lines):
        lines = [f"hydra.searchpath=[file://{REPO}]", *lines]
    parser = OverridesParser.create()
    try:
        parser.parse_overrides(lines)
    except Exception:  # noqa: BLE001 - a syntax error: Hydra's own message says where
        return None
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        if not multirun:
            return _first_problem([(None, lines)], parser)
        composed: list = []
        problem = _first_problem(_variants(lines, parser), parser, keep=composed)
        if problem or not composed:
            return problem
        sweeps = _sweep_lines(composed[0].hydra.sweeper)
        variants = [v for where, extra in sweeps for v in _variants(extra + lines, parser, where)]
        return _first_problem(variants[:MAX_COMPOSES], parser)
