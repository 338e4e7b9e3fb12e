"""Parameter groups by rule: which optimizer settings each parameter gets.

    python -m harness optimizer=muon                 # conf/optimizer/muon.yaml: two rules
    python -m harness optimizer=adamw '+optimizer.param_groups=[{kind: [norm, embed], weight_decay: 0.0}]'

`optimizer.param_groups` is a list of rules, tried in order: the first rule that matches a
parameter takes it, and a parameter no rule matches goes to the default group (the node's
top-level settings). Each parameter is in exactly one group; a tied weight (lm_head ==
embed_tokens) is one parameter, named once. Frozen parameters (requires_grad False) are left out.

A rule holds
- match keys, all of which must hold (a list means "any of these values"):
  `kind`: embed | attention | mlp | norm | head | other (harness.measure.sparsity.module_kind);
  `ndim`: the tensor's number of dimensions, e.g. 2 or [0, 1];
  `pattern`: a regular expression searched (re.search) in the parameter's name.
  A rule without match keys matches every parameter, so no rule may follow it.
- `name`: the group's label (default `group<i>`, the default group is `default`);
- overrides: `_target_` (another optimizer class for this group) and keyword arguments of the
  group's class. Without `_target_`, a group has the top-level settings with its overrides on top;
  with another class, only its own keys, on top of that class's defaults.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Optional

from torch import Tensor

from harness.errors import ConfigError, check
from harness.measure.sparsity import KINDS, module_kind
from harness.registry import Registry

Predicate = Callable[[str, Tensor], bool]  # (parameter name, tensor) -> matches
MATCH: Registry[Callable[[Any], Predicate]] = Registry("optimizer.param_groups match key")
LABEL_KEY = "name"


def _values(v: Any) -> list:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _check_kind(arg: tuple[str, Any]) -> None:
    key, value = arg
    vals = _values(value)
    check(bool(vals) and all(k in KINDS for k in vals), key, value,
          f"allowed values are {', '.join(KINDS)} (or a list of them)")


def _check_ndim(arg: tuple[str, Any]) -> None:
    key, value = arg
    vals = _values(value)
    check(bool(vals) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in vals), key, value,
          "must be an integer >= 0 (or a list of them), e.g. 2 or [0, 1]")


def _check_pattern(arg: tuple[str, Any]) -> None:
    key, value = arg
    check(isinstance(value, str) and bool(value), key, value, "must be a regular expression (a string)")
    try:
        re.compile(value)
    except re.error as e:
        raise ConfigError(f"{key}={value!r}: not a valid regular expression ({e})") from None


@MATCH.register("kind", validate=_check_kind)
def match_kind(value: Any) -> Predicate:
    kinds = set(_values(value))
    return lambda name, p: module_kind(name) in kinds


@MATCH.register("ndim", validate=_check_ndim)
def match_ndim(value: Any) -> Predicate:
    dims = set(_values(value))
    return lambda name, p: p.dim() in dims


@MATCH.register("pattern", validate=_check_pattern)
def match_pattern(value: Any) -> Predicate:
    rx = re.compile(value)
    return lambda name, p: rx.search(name) is not None


@dataclass(frozen=True)
class Rule:
    """One `optimizer.param_groups` entry, checked: its match keys, label and overrides."""

    index: int
    label: str
    match: dict[str, Any]  # match key -> value
    overrides: dict[str, Any] = field(default_factory=dict)  # `_target_` and the class's arguments
    predicates: tuple[Predicate, ...] = ()

    @property
    def key(self) -> str:
        return f"optimizer.param_groups.{self.index}"

    @property
    def catch_all(self) -> bool:
        return not self.match

    def matches(self, name: str, p: Tensor) -> bool:
        return all(f(name, p) for f in self.predicates)


def parse_rules(raw: Any) -> list[Rule]:
    """Split each rule into match keys, label and overrides; check the match keys (values and
    that no rule follows a catch-all). The overrides are checked against their class by build."""
    if raw is None:
        return []
    check(isinstance(raw, (list, tuple)), "optimizer.param_groups", raw,
          "must be a list of rules, e.g. [{kind: [attention, mlp], ndim: 2, lr: 0.02}]")
    rules: list[Rule] = []
    labels: set[str] = {"default"}
    for i, r in enumerate(raw):
        key = f"optimizer.param_groups.{i}"
        check(isinstance(r, dict), key, r, f"must be a mapping of match keys ({', '.join(MATCH.names())}), "
              f"'{LABEL_KEY}' and optimizer arguments")
        if rules and rules[-1].catch_all:
            raise ConfigError(f"{key}={r!r}: never used: {rules[-1].key} has no match keys "
                              f"({', '.join(MATCH.names())}) and takes every parameter")
        match = {k: v for k, v in r.items() if k in MATCH}
        for k, v in match.items():
            MATCH.validate(k, (f"{key}.{k}", v))
        label = r.get(LABEL_KEY, f"group{i}")
        check(isinstance(label, str) and bool(label) and label not in labels, f"{key}.{LABEL_KEY}", label,
              f"must be a label not used by another group (used: {', '.join(sorted(labels))})")
        labels.add(label)
        overrides = {k: v for k, v in r.items() if k not in MATCH and k != LABEL_KEY}
        rules.append(Rule(i, label, match, overrides, tuple(MATCH.build(k, v) for k, v in match.items())))
    return rules


def assign(named_params: Iterable[tuple[str, Tensor]], rules: list[Rule]) -> list[tuple[str, list[tuple[str, Tensor]]]]:
    """[(label, [(name, param), ...]), ...]: the default group first, then one entry per rule,
    in order (possibly empty). Parameters seen twice (tied) count once, under their first name;
    frozen ones are left out."""
    groups: list[tuple[str, list]] = [("default", [])] + [(r.label, []) for r in rules]
    seen: set[int] = set()
    for name, p in named_params:
        if id(p) in seen or not p.requires_grad:
            continue
        seen.add(id(p))
        hit: Optional[int] = next((i for i, r in enumerate(rules) if r.matches(name, p)), None)
        groups[0 if hit is None else hit + 1][1].append((name, p))
    return groups
