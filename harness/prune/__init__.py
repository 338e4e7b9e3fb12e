"""Stopping a trial early at a validation evaluation: divergence, and the sweeper's pruning rule.

    python -m harness -m +sweeps=search_pruned model=tiny trainer.steps=4          # Optuna, with a pruner
    python -m harness -m optimizer.lr=0.2,0.1,0.05,0.02 trainer.eval_every=2 hydra.sweeper.stop.eta=2   # grid, ASHA

harness.trial calls `Pruning.after_step` after every step. At each validation evaluation (every
trainer.eval_every steps, before the last) it
1. stops a diverged trial, whatever the sweeper: train/loss not finite at a step since the last
   evaluation, or eval/val_accuracy below prune.val_accuracy_floor;
2. reports the objective's running value to the sweeper that launched the trial (`prune.sweep`,
   set by the sweeper, never by hand) and asks it whether to go on: an Optuna study through its
   storage (harness.prune.optuna_link) or the grid's ASHA rule through files in the sweep folder
   (harness.prune.asha), which may also pause the trial until its rung is decided.
A stop raises `Pruned`, a BaseException like the trainer's Preempted, so no `except Exception`
takes it for a failure; run_trial writes result.json with status "pruned" and prune/step,
prune/value, prune/reason, prune/by. A pause saves a checkpoint first and raises `Paused`
(status "paused"): the sweeper runs the trial again, and it resumes from the checkpoint.

The objective's running value is the per-step key its name gives without `_final` or `_last`
(eval/val_accuracy_final -> eval/val_accuracy), or the best so far of the key without `_best`.
In a distributed trial the main rank asks the sweeper and the ranks agree on its answer.
Imports optuna only when a study is attached.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Optional

from harness.errors import ConfigError
from harness.registry import Registry

LINKS: Registry = Registry("prune.sweep.kind")


@LINKS.register("optuna")
def _optuna_link(sweep: Any, out_dir: Path, overrides: list[str]) -> Any:
    from harness.prune.optuna_link import OptunaLink

    return OptunaLink(sweep, out_dir, overrides)


@LINKS.register("asha")
def _asha_link(sweep: Any, out_dir: Path, overrides: list[str]) -> Any:
    from harness.prune.asha import AshaLink

    return AshaLink(sweep, out_dir, overrides)


class Stopped(BaseException):
    """The trial stops at an evaluation; `status` is what result.json says."""

    status = ""

    def __init__(self, step: int, value: Optional[float], reason: str, by: str):
        super().__init__(reason)
        self.step, self.value, self.reason, self.by = step, value, reason, by

    def result(self) -> dict:
        return {"status": self.status, "prune/step": self.step, "prune/value": self.value,
                "prune/reason": self.reason, "prune/by": self.by}


class Pruned(Stopped):
    status = "pruned"


class Paused(Stopped):
    status = "paused"


def validate_prune(p: Any) -> None:
    floor = p.val_accuracy_floor
    if floor is not None and not 0 <= floor <= 1:
        raise ConfigError(f"prune.val_accuracy_floor={floor!r}: must be in [0, 1] or null (no floor)")
    if p.sweep is not None:
        if not hasattr(p.sweep, "get"):
            raise ConfigError(f"prune.sweep={p.sweep!r}: set by the sweepers (a mapping with `kind`), never by hand")
        LINKS.validate(p.sweep.get("kind"))


def running_key(objective: str) -> tuple[str, bool]:
    """(the per-step key whose value stands for `objective` during training, whether to take its best so far)."""
    for suffix, best in (("_final", False), ("_last", False), ("_best", True)):
        if objective.endswith(suffix):
            return objective[: -len(suffix)], best
    return objective, False


class Pruning:
    """A trial's pruning: harness.trial builds it from the `prune` config node, calls start() before
    training, after_step() after every step, and finish() once result.json is written."""

    def __init__(self, prune: Any, objective: str, out_dir: Path, overrides: list[str], dist: Any):
        self.floor = prune.val_accuracy_floor
        self.key, self.take_best = running_key(objective)
        self.objective = objective
        self.dist = dist
        self.link = (LINKS.build(prune.sweep["kind"], prune.sweep, Path(out_dir), list(overrides))
                     if prune.sweep is not None and dist.is_main else None)
        self.linked = dist.agree(self.link is not None)
        self.best: Optional[float] = None
        self.nonfinite_at: Optional[int] = None
        self.save: Optional[Callable[[], None]] = None

    def start(self, step: int, save: Callable[[], None]) -> None:
        """Before training (from `step`, the checkpoint's): a trial paused at a rung hears its decision."""
        self.save = save
        if self.linked:
            decision = self.link.resume(step) if self.link is not None else None
            value = self.link.value_at(step) if self.link is not None else None
            self._act(step, value, self.dist.agree(decision))

    def after_step(self, step: int, m: dict) -> None:
        loss = m.get("train/loss")
        if self.nonfinite_at is None and isinstance(loss, float) and not math.isfinite(loss):
            self.nonfinite_at = step
        if "eval/val_accuracy" not in m:
            return
        acc = float(m["eval/val_accuracy"])
        value = self._running(m, step)
        if self.link is not None and value is not None:
            self.link.report(step, value)
        if self.nonfinite_at is not None:
            raise Pruned(step, value, f"diverged: train/loss was not finite at step {self.nonfinite_at}", "divergence")
        if self.floor is not None and acc < self.floor:
            raise Pruned(step, value, f"diverged: eval/val_accuracy {acc:.4g} < prune.val_accuracy_floor {self.floor:g}",
                         "divergence")
        if self.linked:
            self._act(step, value, self.dist.agree(self.link.decide(step, value) if self.link is not None else None))

    def _running(self, m: dict, step: int) -> Optional[float]:
        if self.key not in m:
            if self.linked:
                raise RuntimeError(f"pruning needs the objective's value at evaluations: {self.objective} has no "
                                   f"per-step key {self.key} (step {step})")
            return None
        x = float(m[self.key])
        if self.take_best:
            self.best = x if self.best is None or x > self.best else self.best
            return self.best
        return x

    def _act(self, step: int, value: Optional[float], decision: Optional[tuple[str, str]]) -> None:
        if decision is None:
            return
        what, reason = decision
        by = self.link.by if self.link is not None else ""  # result.json is the main rank's
        if what == "pause":
            assert self.save is not None
            self.save()  # every rank: a sharded checkpoint is collective
            raise Paused(step, value, reason, by)
        raise Pruned(step, value, reason, by)

    def finish(self, result: dict) -> None:
        """After result.json is written: the sweeper's state hears how the trial ended."""
        if self.link is not None:
            self.link.finish(result.get("status", "failed"), result.get("prune/step", result.get("train/steps_done")),
                             result.get("prune/reason"))


def stopped_curves(history: dict) -> dict:
    """A stopped trial's curves so far (the trainer's history), under result.json's usual keys."""
    steps = history.get("steps") or []
    val = history.get("val") or []
    return {"eval/val_curve": val, "eval/val_accuracy_initial": val[0]["accuracy"] if val else None,
            "train/reward_curve": [s["train/reward_mean"] for s in steps if "train/reward_mean" in s],
            "train/loss_curve": [s.get("train/loss") for s in steps]}


def link_override(**fields: str) -> str:
    """The `prune.sweep={...}` override a sweeper adds to each trial it launches (values quoted)."""
    def quoted(v: str) -> str:
        return "'" + str(v).replace("\\", "\\\\").replace("'", "\\'") + "'"

    return "prune.sweep={" + ",".join(f"{k}:{quoted(v)}" for k, v in fields.items()) + "}"
