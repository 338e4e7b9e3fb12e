"""HybridOptimizer: several torch optimizers over disjoint parameters, acting as one.

    python -m harness optimizer=muon      # Muon on the hidden matrices + AdamW on the rest

harness.optim.build makes one when `optimizer.param_groups` gives groups of different classes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor


class _MergedState(Mapping):
    """Read-only view of the parts' `state` dicts (their parameters are disjoint). Lookups never
    create entries, unlike the parts' defaultdicts."""

    def __init__(self, parts: list[torch.optim.Optimizer]):
        self._parts = parts

    def __getitem__(self, p: Tensor) -> dict:
        for o in self._parts:
            if p in o.state:
                return o.state[p]
        raise KeyError(p)

    def __iter__(self) -> Iterator[Tensor]:
        for o in self._parts:
            yield from o.state

    def __len__(self) -> int:
        return sum(len(o.state) for o in self._parts)


class HybridOptimizer(torch.optim.Optimizer):
    """One Optimizer made of named parts, each a torch optimizer over its own parameters.

    - `optimizers` (list) and `names` (parallel list) reach each part, e.g. for
      `torch.distributed.checkpoint.state_dict.get_optimizer_state_dict(model, hybrid.optimizers)`;
    - `param_groups`: the parts' groups, concatenated in part order (the same dicts, so
      `group["lr"] = x` reaches the part; an LR scheduler works on it);
    - `state`: a read-only merged view of the parts' states (what optim_diag and
      harness.measure.memory.optimizer_state_bytes read);
    - `step`, `zero_grad`: every part; `state_dict()` is `{name: part.state_dict()}`, and
      `load_state_dict` takes the same.
    """

    def __init__(self, parts: Mapping[str, torch.optim.Optimizer]):
        # Not Optimizer.__init__: the parts own the groups and the state.
        if not parts:
            raise ValueError("HybridOptimizer needs at least one optimizer")
        seen: set[int] = set()
        for name, o in parts.items():
            ids = {id(p) for g in o.param_groups for p in g["params"]}
            if ids & seen:
                raise ValueError(f"HybridOptimizer: part {name!r} shares parameters with another part")
            seen |= ids
        self.names: list[str] = list(parts)
        self.optimizers: list[torch.optim.Optimizer] = list(parts.values())
        self.defaults: dict[str, Any] = {}
        self._optimizer_step_pre_hooks = OrderedDict()
        self._optimizer_step_post_hooks = OrderedDict()
        self._optimizer_state_dict_pre_hooks = OrderedDict()
        self._optimizer_state_dict_post_hooks = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()
        self._patch_step_function()  # step pre/post hooks work as on any Optimizer

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for o in self.optimizers for g in o.param_groups]

    @property
    def state(self) -> Mapping[Tensor, dict]:
        return _MergedState(self.optimizers)

    def part(self, name: str) -> torch.optim.Optimizer:
        return self.optimizers[self.names.index(name)]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for o in self.optimizers:
            o.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {name: o.state_dict() for name, o in zip(self.names, self.optimizers)}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        if sorted(state_dict) != sorted(self.names):
            raise ValueError(f"HybridOptimizer.load_state_dict: parts {sorted(state_dict)} "
                             f"do not match this optimizer's {sorted(self.names)}")
        for name, o in zip(self.names, self.optimizers):
            o.load_state_dict(state_dict[name])

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        raise TypeError("HybridOptimizer: add the group to one of its parts (.optimizers) instead")

    def __repr__(self) -> str:
        return "HybridOptimizer(\n" + "".join(
            f"  {name}: " + repr(o).replace("\n", "\n  ") + "\n" for name, o in zip(self.names, self.optimizers)) + ")"

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
