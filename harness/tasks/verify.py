"""Run a task's verifier on completions in a separate process, with a time limit per completion.

A completion whose verifier raises scores 0.0 and counts as an error; one that runs past
`timeout_s` (a regex that backtracks forever, a sympy simplification that never ends) has its
worker killed, scores 0.0 and counts as a timeout; the run goes on with a fresh worker. A process,
not a thread or signal.alarm: a hang inside C code (the `re` module) ignores both.

The worker never outlives the trial, even one killed with SIGKILL (which runs no cleanup): it
closes its copy of the parent's pipe end, so the pipe reports EOF once the trial is gone; on Linux
it also asks the kernel for SIGKILL when the thread that forked it dies (PR_SET_PDEATHSIG); and it
checks its parent's pid every second while it waits, for where neither applies. Under torchrun each
rank has its own worker, tied to that rank in the same way.
"""

from __future__ import annotations

import ctypes
import math
import multiprocessing as mp
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from harness.tasks.base import Verifier


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_PARENT_CHECK_S = 1.0  # how often a waiting worker checks that the trial is still there


def _die_with_parent(parent_pid: int) -> None:
    """Linux: SIGKILL this process when the thread that forked it dies (a SIGKILLed trial included)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl: EOF and the pid check still end the worker
        return
    if os.getppid() != parent_pid:  # the parent died before prctl: nobody will send the signal
        os._exit(0)


def _worker(fn: Verifier, conn: Connection, parent_end: Connection, parent_pid: int, pdeathsig: bool) -> None:
    parent_end.close()  # else this process holds the pipe open itself and never sees EOF
    # signals meant for the trial reach its whole process tree (SLURM's pre-timeout SIGUSR2, Ctrl-C):
    # the fork inherited the trial's handlers (submitit's would requeue the job from here); the trial
    # alone acts on them, and ends this worker through the pipe
    for sig in (signal.SIGUSR2, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    if pdeathsig:
        _die_with_parent(parent_pid)
    while True:
        try:
            while not conn.poll(_PARENT_CHECK_S):
                if os.getppid() != parent_pid:  # re-parented: the trial is gone
                    return
            batch = conn.recv()
        except (EOFError, OSError):
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
        # PDEATHSIG fires when the forking *thread* ends: only tie the worker to the main thread's life
        pdeathsig = threading.current_thread() is threading.main_thread()
        self._proc = self._ctx.Process(target=_worker, args=(self.fn, child, parent, os.getpid(), pdeathsig),
                                       daemon=True)
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
                try:
                    j, kind, value = self._conn.recv()
                except (EOFError, OSError):  # the worker died on item i (killed, out of memory): score 0
                    assert self._proc is not None
                    self._proc.join(timeout=5)
                    stats.errors += 1
                    stats.last_error = f"verifier worker died (exit code {self._proc.exitcode})"
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
