"""Run a task's verifier on completions in a separate process, with a time limit per completion.

A completion whose verifier raises scores 0.0 and counts as an error; one that runs past
`timeout_s` (a regex that backtracks forever, a sympy simplification that never ends) has its
worker killed, scores 0.0 and counts as a timeout; the run goes on with a fresh worker. A process,
not a thread or signal.alarm: a hang inside C code (the `re` module) ignores both.
"""

from __future__ import annotations

import math
import multiprocessing as mp
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from harness.tasks.base import Verifier


def _worker(fn: Verifier, conn: Connection) -> None:
    while True:
        try:
            batch = conn.recv()
        except EOFError:
            return
        if batch is None:
            return
        for i, completion, answer in batch:
            try:
                value = float(fn(completion, answer))
                if not math.isfinite(value):
                    raise ValueError(f"verifier returned {value}")
                conn.send((i, "ok", value))
            except Exception as e:  # noqa: BLE001 - any verifier failure scores 0 and is counted
                conn.send((i, "error", f"{type(e).__name__}: {e}"[:300]))


@dataclass
class VerifyStats:
    errors: int = 0
    timeouts: int = 0
    last_error: str | None = None
    examples: list[str] = field(default_factory=list)


class SafeVerifier:
    """`scores, stats = SafeVerifier(fn, timeout_s)(completions, answers)`."""

    def __init__(self, fn: Verifier, timeout_s: float):
        self.fn, self.timeout_s = fn, timeout_s
        self._ctx = mp.get_context("fork")  # the verifier need not be importable by a fresh interpreter
        self._proc: mp.process.BaseProcess | None = None
        self._conn: Connection | None = None

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_worker, args=(self.fn, child), daemon=True)
        self._proc.start()
        child.close()
        self._conn = parent

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(timeout=5)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    def __call__(self, completions: list[str], answers: list[str]) -> tuple[list[float], VerifyStats]:
        assert len(completions) == len(answers)
        scores = [0.0] * len(completions)
        stats = VerifyStats()
        todo = list(range(len(completions)))
        while todo:
            if self._proc is None or not self._proc.is_alive():
                self._kill()
                self._start()
            assert self._conn is not None
            self._conn.send([(i, completions[i], answers[i]) for i in todo])
            done: set[int] = set()
            for i in todo:
                if not self._conn.poll(self.timeout_s):
                    stats.timeouts += 1
                    stats.last_error = f"verifier timed out after {self.timeout_s}s"
                    self._kill()  # the worker is stuck on item i: restart and go on after it
                    done.add(i)
                    break
                j, kind, value = self._conn.recv()
                done.add(j)
                if kind == "ok":
                    scores[j] = value
                else:
                    stats.errors += 1
                    stats.last_error = value
            todo = [i for i in todo if i not in done]
        return scores, stats

    def close(self) -> None:
        if self._conn is not None and self._proc is not None and self._proc.is_alive():
            try:
                self._conn.send(None)
                self._proc.join(timeout=2)
            except (BrokenPipeError, OSError):
                pass
        self._kill()

    def __enter__(self) -> "SafeVerifier":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
