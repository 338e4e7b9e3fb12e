"""The verifier's worker process: `python -m harness.tasks.verify_worker FD PARENT_PID PDEATHSIG`.

harness.tasks.verify starts it as a fresh, small interpreter (not a fork of the trial: a fork would
share the trial's whole heap copy-on-write and keep a private copy of every page the trial later
writes, up to the trial's own size again). It reads the pickled verifier, answers ("ready", None)
(or ("error", reason) if it does not load), then reads batches of
(index, completion, answer) from the socket FD, and answers (index, "ok", score) or
(index, "error", reason) per item.

It never outlives the trial, even one killed with SIGKILL (which runs no cleanup): it holds the
only copy of its own end of the socket, so the socket reports EOF once the trial is gone; on Linux
it also asks the kernel for SIGKILL when the thread that started it dies (PR_SET_PDEATHSIG, when
PDEATHSIG is 1); and it checks its parent's pid every second while it waits.
"""

from __future__ import annotations

import ctypes
import math
import os
import pickle
import signal
import sys
from multiprocessing.connection import Connection

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_CHECK_S = 1.0  # how often a waiting worker checks that the trial is still there


def _die_with_parent(parent_pid: int) -> None:
    """Linux: SIGKILL this process when the thread that started it dies (a SIGKILLed trial included)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl: EOF and the pid check still end the worker
        return
    if os.getppid() != parent_pid:  # the parent died before prctl: nobody will send the signal
        os._exit(0)


def serve(conn: Connection, parent_pid: int) -> None:
    """Verify batches until the trial sends None, closes its end, or is gone."""
    try:
        blob = conn.recv_bytes()
    except (EOFError, OSError):
        return
    try:
        fn = pickle.loads(blob)  # cloudpickle's output loads with plain pickle
    except Exception as e:  # noqa: BLE001 - reported to the trial, which raises it
        conn.send(("error", f"the verifier does not load in its worker: {type(e).__name__}: {e}"[:500]))
        return
    conn.send(("ready", None))  # the trial's time limit per completion starts after this
    while True:
        try:
            while not conn.poll(PARENT_CHECK_S):
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


def main(argv: list[str]) -> None:
    fd, parent_pid, pdeathsig = int(argv[1]), int(argv[2]), argv[3] == "1"
    # signals meant for the trial reach its whole process tree (SLURM's pre-timeout SIGUSR2, Ctrl-C):
    # the trial alone acts on them, and ends this worker through the socket
    for sig in (signal.SIGUSR2, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    if pdeathsig:
        _die_with_parent(parent_pid)
    serve(Connection(fd), parent_pid)


if __name__ == "__main__":
    main(sys.argv)
