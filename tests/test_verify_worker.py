"""No process of a trial outlives it, even after SIGKILL (which runs no cleanup): the verifier's
worker ends within seconds, through PR_SET_PDEATHSIG on Linux, or EOF on its socket (it holds no
copy of the parent's end), or its check of the parent pid. The worker is a fresh interpreter, not
a fork of the trial, so it does not keep copies of the trial's memory. Processes are found through
/proc; every wait polls its condition up to a generous deadline, so a busy machine only makes the
test slower, never wrong."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness.tasks.verify import SafeVerifier
from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
GONE_WITHIN_S = 5.0  # "a few seconds": the worker checks its parent every second at worst


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, state, start time) of a live process, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[1]), fields[0], int(fields[19])


def _descendants(pid: int) -> dict[int, int]:
    """{pid: start time} of every live descendant of pid."""
    table = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and (st := _stat(int(d.name))) is not None and st[1] != "Z":
            table[int(d.name)] = st
    out, todo = {}, [pid]
    while todo:
        parent = todo.pop()
        for child, (ppid, _, start) in table.items():
            if ppid == parent and child not in out:
                out[child] = start
                todo.append(child)
    return out


def _alive(pid: int, start: int) -> bool:
    st = _stat(pid)
    return st is not None and st[1] != "Z" and st[2] == start  # a zombie or a reused pid is gone


def _wait_for(cond, deadline_s: float, every: float = 0.1):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(every)
    return cond()


def _kill_and_check(proc: subprocess.Popen, is_worker) -> float:
    """SIGKILL proc alone once a verifier worker of it exists; seconds until every descendant was gone."""
    kids = _wait_for(lambda: {p: s for p, s in _descendants(proc.pid).items() if is_worker(p)}, 600, every=0.5)
    assert kids, f"no verifier worker appeared (exit status {proc.poll()})"
    tree = _descendants(proc.pid)
    proc.send_signal(signal.SIGKILL)  # the main process only, not its group
    proc.wait(timeout=30)
    t = time.monotonic()
    left = _wait_for(lambda: not [p for p, s in tree.items() if _alive(p, s)], GONE_WITHIN_S + 25)
    took = time.monotonic() - t
    still = [p for p, s in tree.items() if _alive(p, s)]
    assert left and not still, f"left behind: {still}"
    assert took < GONE_WITHIN_S, f"descendants took {took:.1f}s to go"
    return took


def _verify_worker(pid: int) -> bool:
    """Whether pid is a verifier worker (harness.tasks.verify_worker), from its command line."""
    try:
        return b"harness.tasks.verify_worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _cleanup(proc: subprocess.Popen) -> None:
    """A failed test leaves nothing it started: SIGKILL the whole process group (its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


SCRIPT = textwrap.dedent("""
    import sys, threading, time
    from harness.tasks.verify import SafeVerifier

    def check(completion, answer):
        return float(completion == answer)

    def run():
        v = SafeVerifier(check, timeout_s=30)
        assert v(["1", "2"], ["1", "3"])[0] == [1.0, 0.0]
        print("ready", flush=True)
        time.sleep(600)

    if sys.argv[1] == "thread":  # no PDEATHSIG for a worker started from a thread: EOF must end it
        threading.Thread(target=run, daemon=True).start()
        time.sleep(600)
    else:
        run()
""")


@pytest.mark.parametrize("where", ["main", "thread"])
def test_worker_of_a_sigkilled_process_goes(where):
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, where], cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()[-2000:] if proc.poll() is not None else ""
        _kill_and_check(proc, _verify_worker)
    finally:
        _cleanup(proc)


def test_no_process_of_a_sigkilled_trial_is_left(cache_dir, tmp_path):
    log = (tmp_path / "trial.log").open("w")  # a file, not a pipe nobody reads (it would fill and block the trial)
    proc = subprocess.Popen([sys.executable, "-m", "harness", "model=tiny", "trainer.steps=200", "logger=none",
                             "threads=1", "trainer.eval_every=0", "task.num_eval=4", "task.num_val=4", f"hydra.run.dir={tmp_path}/run"],
                            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    try:
        took = _kill_and_check(proc, _verify_worker)
        print(f"all descendants gone {took:.2f}s after SIGKILL")
        assert not (tmp_path / "run" / "result.json").exists()  # it was killed mid-run, not finished
    finally:
        _cleanup(proc)


def _dies_on_kill(completion: str, answer: str) -> float:
    if completion == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    return float(completion == answer)


def test_a_worker_that_dies_mid_batch_scores_zero_and_the_run_goes_on():
    with SafeVerifier(_dies_on_kill, timeout_s=30) as v:
        scores, stats = v(["1", "kill", "3"], ["1", "2", "3"])
        assert scores == [1.0, 0.0, 1.0]
        assert stats.errors == 1 and stats.timeouts == 0 and "worker died (exit code -9)" in stats.last_error


def test_signals_for_the_trial_leave_the_worker_alone():
    """SLURM signals the whole process tree (SIGUSR2 before the time limit); Ctrl-C reaches the whole
    process group: the worker ignores both, the trial decides."""
    with SafeVerifier(_dies_on_kill, timeout_s=30) as v:
        assert v(["1"], ["1"])[0] == [1.0]
        worker = v._proc
        status = Path(f"/proc/{worker.pid}/status").read_text()
        ignored = int(next(line for line in status.splitlines() if line.startswith("SigIgn:")).split()[1], 16)
        assert all(ignored >> (sig - 1) & 1 for sig in (signal.SIGUSR2, signal.SIGINT))
        for sig in (signal.SIGUSR2, signal.SIGINT):
            os.kill(worker.pid, sig)
        scores, stats = v(["1", "2"], ["1", "3"])
        assert scores == [1.0, 0.0] and stats.errors == 0 and v._proc is worker and worker.poll() is None


def test_the_worker_is_a_small_fresh_process_not_a_fork_of_the_trial():
    """A fork would share (and, as the trial writes, copy) the trial's heap: the worker must start
    small whatever the trial holds, and verify a closure defined here (sent by value)."""
    ballast = bytearray(512 << 20)  # 512 MB in this process, touched
    ballast[::4096] = b"x" * len(ballast[::4096])
    offset = 2.0
    with SafeVerifier(lambda c, a: float(c == a) + offset, timeout_s=60) as v:
        assert v(["1", "2"], ["1", "3"])[0] == [3.0, 2.0]
        status = Path(f"/proc/{v._proc.pid}/status").read_text()
        rss_kb = int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])
        assert rss_kb < 200 << 10, f"worker RSS {rss_kb} kB"  # a fork would map the 512 MB
        assert Path(f"/proc/{v._proc.pid}/cmdline").read_bytes().split(b"\0")[1:3] == [b"-m", b"harness.tasks.verify_worker"]
    del ballast


def _refuse_to_load():
    raise ImportError("no such verifier here")


class _Unloadable:
    def __call__(self, completion, answer):
        return 1.0

    def __reduce__(self):
        return _refuse_to_load, ()


def test_a_verifier_that_does_not_load_in_its_worker_is_one_clear_error():
    with SafeVerifier(_Unloadable(), timeout_s=30) as v:
        with pytest.raises(RuntimeError, match=r"^the verifier does not load in its worker: ImportError: no such"):
            v(["1"], ["1"])
        assert v._proc is None  # nothing left running
