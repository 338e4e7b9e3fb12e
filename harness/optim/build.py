"""The optimizer from the `optimizer` config node: check it, label it, build it on a model.

    python -m harness optimizer=adamw optimizer.lr=3e-5
    python -m harness optimizer._target_=torch.optim.Adagrad      # Adagrad's own defaults + the file's lr
    python -m harness optimizer=muon optimizer.param_groups.1.lr=3e-5

The node is `_target_` (any importable torch.optim.Optimizer subclass), `_partial_: true`,
`name` (the harness's label and the conf/optimizer file it comes from), `param_groups`
(harness.optim.groups) and keyword arguments of the class. Other `_x_` keys (Hydra's) are ignored.

Changing `_target_` away from the file's class (conf/optimizer/<name>.yaml) drops the keys that
still hold the file's values, except `lr`: the new class runs with its own defaults plus lr,
and the label becomes the class's name (`adagrad`). A key the user set or added that the class
does not take is still an error.

Groups of one class make one torch optimizer with several param_groups; groups of several
classes make a HybridOptimizer with one part per class.
"""

from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from harness.errors import ConfigError, check
from harness.optim.groups import MATCH, Rule, assign, parse_rules
from harness.optim.hybrid import HybridOptimizer

CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "optimizer"
HARNESS_KEYS = ("name", "param_groups")  # the node's keys that are not arguments of the class
KEPT_ON_SWITCH = ("_target_", "lr")  # what survives a change of _target_ away from the file's


@dataclass(frozen=True)
class GroupSpec:
    """One group's optimizer: class and keyword arguments (the default group has rule None)."""

    label: str
    cls: type
    kwargs: dict[str, Any]
    rule: Optional[Rule] = None


@dataclass(frozen=True)
class OptimizerSpec:
    label: str  # "sgd", "adamw", "muon", "adagrad" (a _target_ that replaced the file's class)
    groups: tuple[GroupSpec, ...]  # the default group first, then one per rule

    @property
    def kwargs(self) -> dict[str, Any]:
        """The default group's (top-level) arguments, e.g. to read lr or momentum for a run name."""
        return self.groups[0].kwargs


# ---------------------------------------------------------------- the node and its file

def _as_dict(cfg_opt: Any, resolve: bool) -> dict[str, Any]:
    if isinstance(cfg_opt, DictConfig):
        return OmegaConf.to_container(cfg_opt, resolve=resolve)
    check(isinstance(cfg_opt, dict), "optimizer", cfg_opt, "must be a mapping with _target_ and lr")
    return dict(cfg_opt)


def _file_node(name: Any) -> Optional[dict[str, Any]]:
    """conf/optimizer/<name>.yaml as written (interpolations unresolved), None if no such file."""
    if not isinstance(name, str) or not re.fullmatch(r"[\w.+-]+", name):
        return None
    path = CONF_DIR / f"{name}.yaml"
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False) if path.is_file() else None


def _own_node(cfg_opt: Any) -> tuple[dict[str, Any], bool]:
    """The node with the keys it merely inherited from its file dropped when `_target_` names
    another class (see the module docstring); and whether that happened."""
    raw = _as_dict(cfg_opt, resolve=False)
    node = _as_dict(cfg_opt, resolve=True)
    file = _file_node(raw.get("name"))
    if file is None or file.get("_target_") == raw.get("_target_"):
        return node, False
    inherited = {k for k, v in file.items() if k not in KEPT_ON_SWITCH and not k.startswith("_")
                 and k in raw and raw[k] == v}
    return {k: v for k, v in node.items() if k not in inherited}, True


def _class_name(target: Any) -> str:
    return str(target).rsplit(".", 1)[-1].lower()


def optimizer_label(cfg_opt: Any) -> str:
    """The harness's label: the node's `name` ("sgd", "muon"), or the class's name in lower case
    when `_target_` replaced the file's class or there is no name ("adagrad")."""
    return _label(*_own_node(cfg_opt))


def _label(node: dict[str, Any], switched: bool) -> str:
    name = node.get("name")
    return name if isinstance(name, str) and name and not switched else _class_name(node.get("_target_"))


def optimizer_kwargs(cfg_opt: Any) -> dict[str, Any]:
    """The top-level keyword arguments the default group's class gets (after the file's keys
    were dropped on a change of class): e.g. `optimizer_kwargs(cfg.optimizer).get("momentum")`."""
    return _kwargs(_own_node(cfg_opt)[0])


def _kwargs(node: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in node.items() if not k.startswith("_") and k not in HARNESS_KEYS}


# ---------------------------------------------------------------- checks

def optimizer_class(target: Any, key: str = "optimizer._target_") -> type:
    check(isinstance(target, str) and "." in target, key, target, "must name an optimizer class, e.g. torch.optim.SGD")
    mod, _, name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError):
        raise ConfigError(f"{key}={target!r}: cannot import it "
                          "(allowed: any torch.optim class, e.g. torch.optim.SGD, or an importable optimizer)") from None
    check(inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer), key, target,
          "must be a torch.optim.Optimizer subclass")
    return cls


def _accepted(cls: type) -> Optional[set[str]]:
    """The keyword arguments `cls` takes; None when it takes any (**kwargs)."""
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return set(params) - {"self", "params"}


def _check_kwargs(cls: type, kwargs: dict[str, Any], where: str, extra: str = "") -> None:
    """Every key an argument of `cls`; lr > 0 and momentum in [0, 1) where given."""
    accepted = _accepted(cls)
    for k, v in kwargs.items():
        if accepted is not None and k not in accepted:
            raise ConfigError(f"{where}.{k}={v!r}: is not {extra}an argument of {cls.__name__}; "
                              f"allowed: {', '.join(sorted(accepted))}")
    if "lr" in kwargs:
        lr = kwargs["lr"]
        check(isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr > 0, f"{where}.lr", lr,
              "must be a number > 0")
    if "momentum" in kwargs:
        m = kwargs["momentum"]
        check(isinstance(m, (int, float)) and not isinstance(m, bool) and 0 <= m < 1, f"{where}.momentum", m,
              "must be in [0, 1)")


def _try_class(cls: type, kwargs: dict[str, Any], where: str) -> None:
    """The class's own checks (e.g. nesterov needs momentum), on a dummy 2-D parameter."""
    try:
        cls([torch.nn.Parameter(torch.zeros(2, 2))], **kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where} ({cls.__name__}): {e}".splitlines()[0]) from None


def resolve_optimizer(cfg_opt: Any) -> OptimizerSpec:
    """Check the node and return every group's class and arguments. Raises ConfigError (one line)."""
    node, switched = _own_node(cfg_opt)
    cls = optimizer_class(node.get("_target_"))
    kwargs = _kwargs(node)
    check("lr" in kwargs, "optimizer.lr", None, "must be a number > 0")
    _check_kwargs(cls, kwargs, "optimizer")
    _try_class(cls, kwargs, "optimizer")
    groups = [GroupSpec("default", cls, kwargs)]
    rule_keys = f"a match key ({', '.join(MATCH.names())}), the label 'name', '_target_' nor "
    for rule in parse_rules(node.get("param_groups")):
        over = {k: v for k, v in rule.overrides.items() if k == "_target_" or not k.startswith("_")}
        target = over.pop("_target_", None)
        rcls = cls if target is None else optimizer_class(target, f"{rule.key}._target_")
        _check_kwargs(rcls, over, rule.key, rule_keys)
        rkwargs = {**kwargs, **over} if rcls is cls else over
        _try_class(rcls, rkwargs, rule.key)
        groups.append(GroupSpec(rule.label, rcls, rkwargs, rule))
    return OptimizerSpec(_label(node, switched), tuple(groups))


def validate_optimizer(cfg_opt: Any) -> None:
    """All checks on the `optimizer` node, before any work: ConfigError with one line."""
    resolve_optimizer(cfg_opt)


# ---------------------------------------------------------------- build

def _common(kwargs_list: list[dict[str, Any]]) -> dict[str, Any]:
    """Arguments every group of a class shares with equal values: the constructor's defaults, so
    a group that leaves a key out gets the class's default, not another group's value."""
    first, rest = kwargs_list[0], kwargs_list[1:]
    return {k: v for k, v in first.items() if all(k in o and o[k] == v for o in rest)}


def build_optimizer(cfg_opt: Any, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimizer over `model`'s trainable parameters, grouped by `optimizer.param_groups`.

    One class: that torch optimizer, one param group per non-empty group (default first). Several
    classes: a HybridOptimizer with one part per class, named by the class (`muon`, `adamw`), in
    order of first use. A class that rejects a parameter (Muon takes only 2-D ones) is a ConfigError.
    """
    spec = resolve_optimizer(cfg_opt)
    rules = [g.rule for g in spec.groups[1:]]
    assigned = assign(model.named_parameters(), rules)
    by_class: dict[type, list[tuple[GroupSpec, list]]] = {}
    for g, (label, named) in zip(spec.groups, assigned):
        if named:
            by_class.setdefault(g.cls, []).append((g, named))
    if not by_class:
        raise ConfigError("optimizer: the model has no trainable parameters")
    parts: dict[str, torch.optim.Optimizer] = {}
    for cls, entries in by_class.items():
        groups = [{"params": [p for _, p in named], **g.kwargs} for g, named in entries]
        try:
            opt = cls(groups, **_common([g.kwargs for g, _ in entries]))
        except (ValueError, TypeError, RuntimeError) as e:
            raise ConfigError(_rejected(cls, entries, e)) from None
        name = _class_name(cls.__name__)
        parts[name if name not in parts else f"{name}{len(parts)}"] = opt
    if len(parts) == 1:
        return next(iter(parts.values()))
    return HybridOptimizer(parts)


def _rejected(cls: type, entries: list[tuple[GroupSpec, list]], err: Exception) -> str:
    """One line naming the first parameter (and its group) that `cls` refuses on its own."""
    for g, named in entries:
        for name, p in named:
            try:
                cls([p], **g.kwargs)
            except (ValueError, TypeError, RuntimeError) as e:
                where = "optimizer" if g.rule is None else g.rule.key
                return (f"{where} (group {g.label}): {cls.__name__} rejects {name} of shape {list(p.shape)}: {e}; "
                        f"give it to another group with optimizer.param_groups").splitlines()[0]
    return f"optimizer: {cls.__name__}: {err}".splitlines()[0]


def group_assignment(cfg_opt: Any, named_params) -> dict[str, str]:
    """parameter name -> group label, for the given (name, tensor) pairs (tests, inspection)."""
    spec = resolve_optimizer(cfg_opt)
    assigned = assign(named_params, [g.rule for g in spec.groups[1:]])
    return {n: label for label, named in assigned for n, _ in named}
