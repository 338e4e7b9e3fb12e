"""Signals: SLURM's pre-timeout SIGUSR2 asks the trial to checkpoint after this step; then the
signal goes to whoever handled it before (submitit: requeue the job)."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

_previous_handlers: dict[int, Any] = {}


def on_signal(signum: int, flag: Any) -> None:
    """Note the signal (the trainer checkpoints between steps), remembering who handled it before
    (submitit: requeue the job). Only the main thread can set handlers."""
    if threading.current_thread() is not threading.main_thread():
        return
    prev = signal.getsignal(signum)
    if not getattr(prev, "_harness", False):
        _previous_handlers[signum] = prev

    def handler(sig, frame):
        print(f"[harness] signal {sig}: checkpointing after this step", file=sys.stderr, flush=True)
        flag()

    handler._harness = True  # type: ignore[attr-defined]
    signal.signal(signum, handler)


def requeue(signum: int) -> None:
    """Hand the signal to whoever handled it before us: under submitit that requeues the job."""
    prev = _previous_handlers.get(signum)
    if callable(prev):
        prev(signum, None)
    sys.exit(128 + signum)  # no requeue handler: exit as if killed by the signal
