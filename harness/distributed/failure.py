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

A rank that dies without a word (SIGKILL, the OOM killer, a segfault) writes no file. The ranks
learn each other's host and PID at start (`peers`), so rank 0 sees that the process is gone and
reports it at once, with what it saw and where: "rank 1 lost: connection reset during all-reduce at
step 3 (...)". From the moment a rank catches its error until its result is written, SIGTERM is held
(`SigtermHold`): torchrun ends the survivors with it, and it must not cut the reason short; once the
failure is recorded, the held SIGTERM is dropped, so the trial ends with its result, not a traceback.

Test-only: HARNESS_TEST_SIGKILL="RANK:STEP" SIGKILLs that rank mid-step (`kill_for_test`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

ERROR_GLOB = ".rank*.error"
# Words in the messages of errors that are consequences of another rank's failure.
_SECONDARY_MARKERS = ("connection closed by peer", "connection reset", "broken pipe", "timed out", "timeout",
                      "gloo", "nccl", "socket", "peer", "process group", "watchdog", "aborted")
# How this rank saw a peer go (words in its error -> the phrase in the reason), first match wins.
_HOW = (("connection reset", "connection reset"), ("connection closed", "connection closed"),
        ("broken pipe", "broken pipe"), ("timed out", "timed out"), ("timeout", "timed out"))
# Collectives by the words in the names of the functions that ran them (innermost frame first).
_COLLECTIVES = (("all_reduce", "all-reduce"), ("reduce_scatter", "reduce-scatter"), ("all_gather", "all-gather"),
                ("broadcast", "broadcast"), ("barrier", "barrier"), ("all_to_all", "all-to-all"),
                ("send", "send"), ("recv", "receive"))
KILL_ENV = "HARNESS_TEST_SIGKILL"


class Terminated(Exception):
    """SIGTERM (or SIGINT) arrived: the launcher is ending this rank, usually because another failed."""

    def __init__(self, signum: int):
        super().__init__(f"received {signal.Signals(signum).name}")
        self.signum = signum


def _raise_terminated(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
    raise Terminated(signum)


def install_sigterm_handler() -> None:
    """Make SIGTERM raise `Terminated` in the main thread (torchrun ends surviving ranks with SIGTERM)."""
    signal.signal(signal.SIGTERM, _raise_terminated)


class SigtermHold:
    """SIGTERM noted instead of raised, from `start()` (or entering the `with` block) until the block
    ends, so it cannot interrupt what the trial does in between (work out its failure's reason, write
    its result). At the end a held SIGTERM goes to the handler it would have met
    (install_sigterm_handler's raises `Terminated`; SIG_DFL: `Terminated` too), unless `failed()`
    was called in a rank of a distributed trial (install_sigterm_handler's was the handler): then it
    is the launcher ending the survivors of a failure the result already records, and it is
    dropped: the trial returns its failed result, and SIGTERM is left to its default (it ends the
    process, with no traceback), that handler's work (getting the failure recorded) being done.
    A second SIGTERM while held kills at once. A no-op outside the main thread.

        hold = SigtermHold()
        try:
            ...
        except Exception as e:
            hold.failed()          # held from here
            reason = ...
        finally:
            with hold:             # (held already, or from here)
                write_result()
    """

    def __init__(self) -> None:
        self.got: list[int] = []
        self.previous: Any = None
        self.holding = False
        self.drop = False

    def start(self) -> None:
        if self.holding or threading.current_thread() is not threading.main_thread():
            return

        def note(signum: int, frame: Any) -> None:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
            self.got.append(signum)

        self.previous = signal.signal(signal.SIGTERM, note)
        self.holding = True

    def failed(self) -> None:
        """Hold from now on; in a distributed rank a SIGTERM held by the end is dropped (see above)."""
        self.start()
        self.drop = True

    def __enter__(self) -> "SigtermHold":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self.holding:
            return
        self.holding = False
        previous, got = self.previous, self.got
        if self.drop and previous is _raise_terminated:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            return
        signal.signal(signal.SIGTERM, previous if not got or callable(previous) else signal.SIG_DFL)
        if got and callable(previous):
            previous(got[0], None)  # the handler it would have met (ours raises Terminated; submitit's logs)
        elif got and previous != signal.SIG_IGN:
            raise Terminated(got[0])


@contextlib.contextmanager
def sigterm_held() -> Iterator[None]:
    """SIGTERM held for the block, then given to the handler it would have met (see SigtermHold)."""
    with SigtermHold():
        yield


def kill_for_test(optimizer: Any, rank: int, step_of: Callable[[], int]) -> None:
    """Test-only: HARNESS_TEST_SIGKILL="RANK:STEP" SIGKILLs rank RANK as its optimizer starts the
    update of step STEP (`step_of()`: the step in progress), mid-step: after its rollout and backward,
    while the other ranks go on to the step's next collective. A rank lost without a word, as to the
    OOM killer. Unset (always, outside tests): nothing is installed."""
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    want_rank, want_step = (int(x) for x in spec.split(":"))
    if want_rank != rank:
        return

    def hook(opt: Any, args: Any, kwargs: Any) -> None:
        if step_of() == want_step:
            os.kill(os.getpid(), signal.SIGKILL)

    optimizer.register_step_pre_hook(hook)


def this_process() -> tuple[str, int]:
    """(host, pid): what the ranks exchange at start (`peers`) to tell later which of them is gone."""
    return socket.gethostname(), os.getpid()


def is_gone(peer: Sequence[Any]) -> Optional[bool]:
    """Whether the process (host, pid) has ended: True / False on this host, None on another (unknown).
    A zombie (dead, not yet reaped by its launcher) counts as gone."""
    host, pid = peer
    if host != socket.gethostname():
        return None
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except FileNotFoundError:
        return True
    except OSError:  # no /proc: ask the kernel (a zombie then counts as alive)
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


def how_lost(error: BaseException) -> str:
    """What this rank saw of a lost peer, in a few words (its own error when none fits)."""
    if isinstance(error, Terminated):
        return "SIGTERM from the launcher"
    msg = str(error).lower()
    return next((phrase for marker, phrase in _HOW if marker in msg), one_line(error))


def collective_of(error: BaseException) -> Optional[str]:
    """The collective this rank was in when `error` was raised, from its traceback's function names."""
    frames = []
    tb = error.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    for name in reversed(frames):  # innermost first
        for marker, collective in _COLLECTIVES:
            if marker in name:
                return collective
    return None


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


def failure_reason(error: BaseException, trial_dir: str | Path, rank: int, wait_s: float = 5.0,
                   peers: Optional[Sequence[Sequence[Any]]] = None, step: Optional[int] = None) -> str:
    """The trial's failure reason: `rank <k>: <reason>` of the first primary failure on any rank, or
    `rank <k> lost: <how> during <collective> at step <step> (...)` for ranks that ended without one.

    If this rank's own error is primary, it is the reason. Otherwise waits up to `wait_s` for a
    primary record of another rank to appear (the failing rank writes it before it exits). A peer
    whose process is gone without a record (`peers[k]` = its (host, pid), see `this_process`) will
    write none: it is reported as lost at once. After the wait, peers with no record at all (on
    other hosts) count as lost too; else the best record there is, or this rank's own error.
    """
    own = {"rank": rank, "reason": one_line(error), "secondary": is_secondary(error), "time": time.time()}
    deadline = time.monotonic() + (wait_s if own["secondary"] else 0.0)
    others = [k for k in range(len(peers or [])) if k != rank]
    while True:
        records = [r for r in read_failures(trial_dir) if r.get("rank") != rank] + [own]
        records.sort(key=lambda r: (bool(r.get("secondary")), r.get("time", 0.0)))
        best = records[0]
        if not best["secondary"]:
            return f"rank {best['rank']}: {best['reason']}"
        recorded = {r.get("rank") for r in records}
        lost = [k for k in others if k not in recorded and is_gone(peers[k])]
        if lost:
            return _lost(lost, error, step, "its process ended without recording an error: killed, e.g. SIGKILL or the OOM killer")
        if time.monotonic() >= deadline:
            silent = [k for k in others if k not in recorded]
            if silent:
                return _lost(silent, error, step, f"no error recorded within {wait_s:g} s")
            return f"rank {best['rank']}: {best['reason']}"
        time.sleep(0.1)


def _lost(ranks: list[int], error: BaseException, step: Optional[int], why: str) -> str:
    where = collective_of(error)
    return (f"rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))} lost: {how_lost(error)}"
            + (f" during {where}" if where else "") + (f" at step {step}" if step is not None else "") + f" ({why})")


def clear_failures(trial_dir: str | Path, rank: Optional[int] = None) -> None:
    """Remove old error files (a resumed trial starts clean): this rank's, or all when rank is None."""
    paths = [error_file(trial_dir, rank)] if rank is not None else list(Path(trial_dir).glob(ERROR_GLOB))
    for p in paths:
        try:
            p.unlink()
        except FileNotFoundError:
            pass
