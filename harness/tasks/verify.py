"""Run a task's verifier on completions in a separate process, with a time limit per completion.

A completion whose verifier raises scores 0.0 and counts as an error; one that runs past
`timeout_s` (a regex that backtracks forever, a sympy simplification that never ends) has its
worker killed, scores 0.0 and counts as a timeout; the run goes on with a fresh worker. A process,
not a thread or signal.alarm: a hang inside C code (the `re` module) ignores both.

The worker (harness.tasks.verify_worker) is a fresh interpreter started with `subprocess`, not a
fork of the trial: a forked worker shares the trial's heap copy-on-write, and every page the trial
writes afterwards (weights, gradients, activations) becomes a private copy kept by the worker, so
the machine pays for the trial's memory up to twice. The verifier goes to it pickled (cloudpickle:
a function defined in `__main__` or a closure works too). It never outlives the trial, even one
killed with SIGKILL (see harness.tasks.verify_worker). Under torchrun each rank has its own worker.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

import cloudpickle

from harness.tasks.base import Verifier


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
        self._pickled = cloudpickle.dumps(fn)
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None

    def _start(self) -> None:
        ours, theirs = socket.socketpair()
        # PDEATHSIG fires when the starting *thread* ends: only tie the worker to the main thread's life
        pdeathsig = threading.current_thread() is threading.main_thread()
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        with theirs:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "harness.tasks.verify_worker", str(theirs.fileno()), str(os.getpid()),
                 "1" if pdeathsig else "0"],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env)
        self._conn = Connection(ours.detach())
        self._conn.send_bytes(self._pickled)
        # the start (a fresh interpreter, the verifier's imports) is not part of any completion's time limit
        try:
            kind, reason = self._conn.recv()
        except (EOFError, OSError):
            code = self._proc.wait()
            self._kill()
            raise RuntimeError(f"the verifier's worker process exited while starting (exit code {code})") from None
        if kind != "ready":
            self._kill()
            raise RuntimeError(reason)

    def _alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    def __call__(self, completions: list[str], answers: list[str]) -> tuple[list[float], VerifyStats]:
        assert len(completions) == len(answers)
        scores = [0.0] * len(completions)
        stats = VerifyStats()
        todo = list(range(len(completions)))
        while todo:
            if not self._alive():
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
                try:
                    j, kind, value = self._conn.recv()
                except (EOFError, OSError):  # the worker died on item i (killed, out of memory): score 0
                    assert self._proc is not None
                    try:
                        code = self._proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        code = None
                    stats.errors += 1
                    stats.last_error = f"verifier worker died (exit code {code})"
                    self._kill()
                    done.add(i)
                    break
                done.add(j)
                if kind == "ok":
                    scores[j] = value
                else:
                    stats.errors += 1
                    stats.last_error = value
            todo = [i for i in todo if i not in done]
        return scores, stats

    def close(self) -> None:
        if self._conn is not None and self._alive():
            try:
                self._conn.send(None)
                self._proc.wait(timeout=2)
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                pass
        self._kill()

    def __enter__(self) -> "SafeVerifier":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
