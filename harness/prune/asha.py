"""The grid sweeper's early stopping (`hydra.sweeper.stop`): an ASHA-style rule whose decisions do not
depend on the order in which trials finish, and the state its trials share through the sweep folder.

    python -m harness -m optimizer.lr=0.1,0.05,0.02,0.01 trainer.eval_every=2 hydra.sweeper.stop.eta=2

The rule. A trial's rungs are its validation evaluations before its last step (every
trainer.eval_every steps, from stop.min_step on). At a rung, of the m trials of an arm that reached
it, the top max(1, floor(m / eta)) by the objective's running value go on, ties at the cut
included; the others stop there (result.json status "pruned"). A trial reached a rung when it
reported a value there; one that ended before it (finished, failed, pruned) never will.

Order independence. A trial at a rung decides only when every outcome still possible for the
trials of its arm that have not reported there (each may stay away, arrive below or arrive above
it) gives the same answer, so the decision is the one the complete set of reports gives,
whichever trials came first. Otherwise it waits, but only while one of those trials is running,
and at most stop.max_wait_s; then (at once when none of them runs, as under the local launcher,
which runs one trial at a time) it pauses: checkpoint, result.json status "paused", exit. The
sweeper launches it again once its rung is decided, and goes round until no trial is paused.

The state, in <sweep dir>/.stop/: manifest.json, written by the sweeper before any trial runs (the
rule; each trial's key, arm, rungs and overrides), and one <key>.json per trial, written only by
that trial (the sweeper also closes the files of trials that died) and always whole, by atomic
rename: the values it reported at its rungs, and whether it is running, waiting, paused or ended.
One writer per file and whole-file renames need no lock, on a shared filesystem (NFS) too. A value
once reported is kept, also when a killed trial runs again from its start.
"""

from __future__ import annotations

import hashlib
import math
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from harness.errors import ConfigError
from harness.results import atomic_write_json, read_result

STATE_DIR = ".stop"
MANIFEST = "manifest.json"
ACTIVE = ("running", "waiting")  # a trial in these states may still report at a rung
LINK_KEY = "prune.sweep"  # the override the sweepers add to each trial they launch


@dataclass(frozen=True)
class Rule:
    eta: int  # keep the top 1/eta of an arm at each rung
    direction: str  # maximize | minimize the objective's running value
    min_step: int  # no rung before this step
    max_wait_s: float  # longest wait at a rung for running trials before pausing
    poll_s: float  # how often a waiting trial reads the others' state

    def check(self, where: str = "hydra.sweeper.stop") -> None:
        """One line naming the key, for a rule that cannot work."""
        if not (isinstance(self.eta, int) and self.eta >= 2):
            raise ConfigError(f"{where}.eta={self.eta!r}: must be an integer >= 2 (keep the top 1/eta)")
        if self.direction not in ("maximize", "minimize"):
            raise ConfigError(f"{where}.direction={self.direction!r}: allowed values are maximize, minimize")
        if self.min_step < 0:
            raise ConfigError(f"{where}.min_step={self.min_step!r}: must be >= 0")
        if self.max_wait_s < 0 or self.poll_s <= 0:
            raise ConfigError(f"{where}: max_wait_s must be >= 0 and poll_s > 0 (got {self.max_wait_s}, {self.poll_s})")


def rungs(eval_every: int, steps: int, min_step: int) -> list[int]:
    """The steps where a trial is ranked: its evaluations before the last step, from min_step on."""
    if eval_every <= 0:
        return []
    return [s for s in range(eval_every, steps, eval_every) if s >= min_step]


def is_link(override: str) -> bool:
    """Whether an override is the sweeper's own `prune.sweep=...` (not part of a trial's identity)."""
    return override.lstrip("+~").split("=", 1)[0] == LINK_KEY


def trial_key(overrides: list[str]) -> str:
    """A trial's name in the shared state: from its overrides (order-free), without the sweeper's link."""
    text = "\n".join(sorted(o for o in overrides if not is_link(o)))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- the rule (pure)

@dataclass
class Seen:
    """What a trial's state file says (an empty Seen: no file yet, the trial has not started)."""

    values: dict[int, float] = field(default_factory=dict)  # rung step -> the running value reported there
    status: str = ""  # "" | running | waiting | paused | ended
    ended: bool = False  # it will report nothing more (finished, failed, pruned, died)


@dataclass(frozen=True)
class Member:
    rungs: tuple[int, ...]
    seen: Seen


def _better(a: float, b: float, maximize: bool) -> bool:
    """a strictly better than b; NaN is worse than any number."""
    if math.isnan(a):
        return False
    if math.isnan(b):
        return True
    return a > b if maximize else a < b


def verdict(better: int, reached: int, pending: int, eta: int) -> Optional[str]:
    """"keep" or "stop" for a trial with `better` trials strictly above it among the `reached`
    (itself included) at a rung, if every outcome of the `pending` ones gives the same answer:
    q of them above it, w at or below it, the rest never there. None: not decided yet."""
    outcomes = {better + q < max(1, (reached + q + w) // eta)
                for q in range(pending + 1) for w in range(pending - q + 1)}
    if outcomes == {True}:
        return "keep"
    if outcomes == {False}:
        return "stop"
    return None


def decisions(arm: dict[str, Member], eta: int, maximize: bool) -> tuple[dict[str, dict[int, Optional[str]]], dict[int, set[str]]]:
    """Every decision the reports of one arm settle: {key: {rung step: keep | stop | None}} and, per
    rung, the trials that may still report there (pending). Rungs are taken in step order: a trial
    stopped at a rung is not a candidate for later ones; one undecided there still is."""
    table: dict[str, dict[int, Optional[str]]] = {k: {} for k in arm}
    pending: dict[int, set[str]] = {}
    for s in sorted({s for m in arm.values() for s in m.rungs}):
        reached: dict[str, float] = {}
        waiting: set[str] = set()
        for k, m in arm.items():
            if s not in m.rungs or any(table[k].get(r) == "stop" for r in m.rungs if r < s):
                continue
            if s in m.seen.values:
                reached[k] = m.seen.values[s]
            elif not m.seen.ended:
                waiting.add(k)
        pending[s] = waiting
        for k, v in reached.items():
            better = sum(_better(x, v, maximize) for j, x in reached.items() if j != k)
            table[k][s] = verdict(better, len(reached), len(waiting), eta)
    return table, pending


# ---------------------------------------------------------------- the shared state (files)

class State:
    """<sweep dir>/.stop: the manifest and the trials' state files."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def write_manifest(self, rule: Rule, trials: dict[str, dict[str, Any]]) -> None:
        """trials: {key: {"arm": int, "rungs": [steps], "overrides": [job overrides]}}."""
        atomic_write_json(self.folder / MANIFEST, {"rule": asdict(rule), "trials": trials})

    def manifest(self) -> dict[str, Any]:
        m = read_result(self.folder / MANIFEST)
        if not m:
            raise ConfigError(f"{LINK_KEY}: no {self.folder / MANIFEST} (the grid sweeper writes it; set by hand?)")
        return m

    def rule(self) -> Rule:
        return Rule(**self.manifest()["rule"])

    def read(self, key: str) -> dict[str, Any]:
        return read_result(self.folder / f"{key}.json") or {}

    def write(self, key: str, data: dict[str, Any]) -> None:
        atomic_write_json(self.folder / f"{key}.json", {**data, "key": key, "time": time.time()})

    def seen(self, key: str) -> Seen:
        d = self.read(key)
        return Seen({int(s): (math.nan if v is None else float(v)) for s, v in (d.get("values") or {}).items()},
                    d.get("status", ""), d.get("status") == "ended")

    def arm(self, key: str, manifest: Optional[dict] = None) -> dict[str, Member]:
        trials = (manifest or self.manifest())["trials"]
        arm = trials[key]["arm"]
        return {k: Member(tuple(t["rungs"]), self.seen(k)) for k, t in trials.items() if t["arm"] == arm}

    def decide(self, key: str, step: int, manifest: Optional[dict] = None) -> tuple[Optional[str], dict[str, Any]]:
        """This trial's decision at its rung `step` (None: not yet) and what it rests on: the counts,
        and whether a trial that may still report there is running (worth waiting for)."""
        manifest = manifest or self.manifest()
        rule = Rule(**manifest["rule"])
        arm = self.arm(key, manifest)
        table, pending = decisions(arm, rule.eta, rule.direction == "maximize")
        mine = arm[key].seen.values[step]
        reached = [m.seen.values[step] for k, m in arm.items() if step in m.seen.values and k != key]
        info = {"reached": len(reached) + 1, "pending": len(pending.get(step, ())),
                "better": sum(_better(x, mine, rule.direction == "maximize") for x in reached),
                "active": any(arm[k].seen.status in ACTIVE for k in pending.get(step, ())), "value": mine}
        return table[key].get(step), info

    def close_dead(self) -> list[str]:
        """After a launch round (no trial of this sweep runs): trials left running or waiting died, and
        trials with no state file never started the hook (failed early): both are ended. Returns them."""
        closed = []
        for key in self.manifest()["trials"]:
            d = self.read(key)
            if not d or d.get("status") in ACTIVE:
                self.write(key, {**d, "status": "ended", "lost": True})
                closed.append(key)
        return closed

    def ready(self) -> list[str]:
        """Paused trials whose rung is decided now: the sweeper launches them again."""
        manifest = self.manifest()
        out = []
        for key in manifest["trials"]:
            d = self.read(key)
            if d.get("status") == "paused" and self.decide(key, int(d["at"]), manifest)[0] is not None:
                out.append(key)
        return out

    def paused(self) -> dict[str, int]:
        """{key: the rung step} of every paused trial."""
        return {k: int(d["at"]) for k in self.manifest()["trials"] if (d := self.read(k)).get("status") == "paused"}


# ---------------------------------------------------------------- the trial's side

class AshaLink:
    """A trial's end of the rule: reports its value at each rung, then goes on, stops, waits or pauses."""

    by = "asha"

    def __init__(self, sweep: Any, out_dir: Path, overrides: list[str]):
        self.state = State(Path(str(sweep["dir"])) / STATE_DIR)
        self.key = trial_key(overrides)
        self.manifest = self.state.manifest()
        if self.key not in self.manifest["trials"]:
            raise ConfigError(f"{LINK_KEY}: this trial's overrides are not a trial of {self.state.folder / MANIFEST}")
        self.rule = Rule(**self.manifest["rule"])
        self.rungs = list(self.manifest["trials"][self.key]["rungs"])
        old = self.state.read(self.key)
        self.values: dict[str, Any] = dict(old.get("values") or {})  # JSON keys: str(step)
        self.paused_at = old.get("at") if old.get("status") == "paused" else None
        self._write("running")

    def _write(self, status: str, **extra: Any) -> None:
        self.state.write(self.key, {"status": status, "values": self.values, "host": socket.gethostname(),
                                    "pid": os.getpid(), **extra})

    def report(self, step: int, value: float) -> None:
        """The running value at an evaluation; kept for a rung (a value once reported stays: a re-run reports it again)."""
        if step in self.rungs:
            self.values.setdefault(str(step), value)

    def decide(self, step: int, value: float) -> Optional[tuple[str, str]]:
        """At an evaluation: None (go on), ("stop", reason) or ("pause", reason)."""
        return self._decide(step) if step in self.rungs else None

    def resume(self, step: int) -> Optional[tuple[str, str]]:
        """A trial resumed from the checkpoint it paused at: its rung's decision, before any step."""
        if self.paused_at is None or int(self.paused_at) != step or str(step) not in self.values:
            return None
        return self._decide(step)

    def value_at(self, step: int) -> Optional[float]:
        return self.values.get(str(step))

    def _decide(self, step: int) -> Optional[tuple[str, str]]:
        self._write("waiting", at=step)
        deadline = time.monotonic() + self.rule.max_wait_s
        while True:
            d, info = self.state.decide(self.key, step, self.manifest)
            if d == "keep":
                self._write("running")
                return None
            if d == "stop":
                return "stop", (f"ASHA at step {step}: {info['value']:.4g} is not in the top 1/{self.rule.eta} of its arm "
                                f"({info['better']} of the {info['reached']} trials there are better, {info['pending']} to come)")
            if not info["active"] or time.monotonic() >= deadline:
                why = "none of them running" if not info["active"] else f"waited {self.rule.max_wait_s:g} s"
                return "pause", f"until its rung is decided ({info['pending']} trial(s) of its arm still to report, {why})"
            time.sleep(self.rule.poll_s)

    def finish(self, status: str, step: Optional[int], reason: Optional[str] = None) -> None:
        """The trial ends (ok, failed, pruned) or pauses at its rung."""
        if status == "paused":
            self._write("paused", at=step)
        else:
            self._write("ended", step=step, result=status)
