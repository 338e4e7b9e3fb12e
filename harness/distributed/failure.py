"""A failure on any rank ends the trial with THAT rank's reason, in bounded time, never a hang.

    install_sigterm_handler()                      # at start, every rank
    try:
        train()
    except BaseException as e:
        reason = record_failure(trial_dir, rank, e)   # every rank: .rank<k>.error (its own reason)
        if rank == 0:
            reason = failure_reason(e, trial_dir, rank)  # the first failing rank's reason
            write_result(status="failed", reason=reason)
        raise

The protocol: the failing rank writes `<trial dir>/.rank<k>.error` (one JSON line: rank, time,
reason, whether it is a consequence of another rank's failure) BEFORE its process ends. The other
ranks learn of it from their next collective: gloo raises at once when a peer's connection
closes, NCCL and gloo raise after `distributed.timeout_s` when a peer is alive but silent, and
torchrun's agent sends SIGTERM to the survivors when one rank exits with an error (the handler
installed here turns it into an exception, so rank 0 still records the failure). Rank 0 then
reads the files and reports the first primary failure (an error that is not itself a lost peer,
a collective timeout or SIGTERM); if all are secondary, the earliest.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Optional

ERROR_GLOB = ".rank*.error"
# Words in the messages of errors that are consequences of another rank's failure.
_SECONDARY_MARKERS = ("connection closed by peer", "connection reset", "broken pipe", "timed out", "timeout",
                      "gloo", "nccl", "socket", "peer", "process group", "watchdog", "aborted")


class Terminated(Exception):
    """SIGTERM (or SIGINT) arrived: the launcher is ending this rank, usually because another failed."""

    def __init__(self, signum: int):
        super().__init__(f"received {signal.Signals(signum).name}")
        self.signum = signum


def install_sigterm_handler() -> None:
    """Make SIGTERM raise `Terminated` in the main thread (torchrun ends surviving ranks with SIGTERM)."""

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
        raise Terminated(signum)

    signal.signal(signal.SIGTERM, handler)


@contextlib.contextmanager
def sigterm_held() -> Iterator[None]:
    """While the trial writes its result and cleans up, a SIGTERM (torchrun ending the survivors of a
    failed rank) is noted instead of raised, so it cannot interrupt the write; on exit it goes to the
    handler it would have met (install_sigterm_handler's raises `Terminated`; SIG_DFL: `Terminated`
    too). A second SIGTERM still kills at once. A no-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []

    def note(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
        got.append(signum)

    previous = signal.signal(signal.SIGTERM, note)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if not got or callable(previous) else signal.SIG_DFL)
    if got and callable(previous):
        previous(got[0], None)  # the handler it would have met (ours raises Terminated; submitit's logs)
    elif got and previous != signal.SIG_IGN:
        raise Terminated(got[0])


def one_line(error: BaseException) -> str:
    """`Type: first line of the message`, at most 500 characters."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:500]


def is_secondary(error: BaseException) -> bool:
    """Whether `error` is a consequence of another rank's failure (lost peer, timeout, SIGTERM)."""
    if isinstance(error, Terminated):
        return True
    try:
        import torch.distributed as dist

        if isinstance(error, dist.DistError):
            return True
    except (ImportError, AttributeError):
        pass
    msg = str(error).lower()
    return isinstance(error, RuntimeError) and any(m in msg for m in _SECONDARY_MARKERS)


def error_file(trial_dir: str | Path, rank: int) -> Path:
    return Path(trial_dir) / f".rank{rank}.error"


def record_failure(trial_dir: str | Path, rank: int, error: BaseException) -> str:
    """Write this rank's reason to `<trial_dir>/.rank<rank>.error` (atomically); return the reason.

    Call it before the process ends, on every rank that fails: the others read these files.
    """
    reason = one_line(error)
    record = {"rank": rank, "time": time.time(), "reason": reason, "secondary": is_secondary(error)}
    path = error_file(trial_dir, rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    with open(part, "w") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(part, path)
    return reason


def read_failures(trial_dir: str | Path) -> list[dict]:
    """Every rank's recorded failure, primary ones first, then by time."""
    out = []
    for p in Path(trial_dir).glob(ERROR_GLOB):
        try:
            out.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue  # being written: its .part is renamed into place when complete
    return sorted(out, key=lambda r: (bool(r.get("secondary")), r.get("time", 0.0), r.get("rank", 0)))


def failure_reason(error: BaseException, trial_dir: str | Path, rank: int, wait_s: float = 5.0) -> str:
    """The trial's failure reason: `rank <k>: <reason>` of the first primary failure on any rank.

    If this rank's own error is primary, it is the reason. Otherwise waits up to `wait_s` for a
    primary record of another rank to appear (the failing rank writes it before it exits), then
    takes the best record there is, or this rank's own error.
    """
    own = {"rank": rank, "reason": one_line(error), "secondary": is_secondary(error), "time": time.time()}
    deadline = time.monotonic() + (wait_s if own["secondary"] else 0.0)
    while True:
        records = [r for r in read_failures(trial_dir) if r.get("rank") != rank] + [own]
        records.sort(key=lambda r: (bool(r.get("secondary")), r.get("time", 0.0)))
        best = records[0]
        if not best["secondary"] or time.monotonic() >= deadline:
            return f"rank {best['rank']}: {best['reason']}"
        time.sleep(0.1)


def clear_failures(trial_dir: str | Path, rank: Optional[int] = None) -> None:
    """Remove old error files (a resumed trial starts clean): this rank's, or all when rank is None."""
    paths = [error_file(trial_dir, rank)] if rank is not None else list(Path(trial_dir).glob(ERROR_GLOB))
    for p in paths:
        try:
            p.unlink()
        except FileNotFoundError:
            pass
