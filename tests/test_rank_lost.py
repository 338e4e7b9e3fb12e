"""python -m pytest -q tests/test_rank_lost.py

A rank that dies without a word (SIGKILL mid-step, as the OOM killer does it) in a 2-rank
`distributed=fsdp2` trial: result.json names the lost rank, what rank 0 saw and the step; no
traceback of the harness reaches the user (torchrun's SIGTERM to rank 0 is held until the result
is written, then dropped); every process of the trial is gone; it ends within seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.distributed import failure
from tests.conftest import ROOT
from tests.test_fsdp_trial import ARGS, TORCHRUN, _port


def _descendants(pid: int) -> set[tuple[int, str]]:
    """(pid, start time) of every process below `pid` (the start time tells a reused pid apart)."""
    out, todo = set(), [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            for c in children:
                start = _start_time(c)
                if start is not None:
                    out.add((c, start))
                    todo.append(c)
    return out


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(proc: tuple[int, str]) -> bool:
    stat = Path(f"/proc/{proc[0]}/stat")
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[19] == proc[1] and fields[0] not in ("Z", "X")


@pytest.mark.slow
def test_rank_1_killed_mid_step_is_named_in_the_result(cache_dir, tmp_path):
    out = tmp_path / "trial"
    cmd = [*TORCHRUN, "--master-port", str(_port()), "-m", "harness", *ARGS, "distributed=fsdp2",
           "distributed.timeout_s=120", "trainer.steps=6", "trainer.keep_checkpoint=false", "trainer.checkpoint_every=0",
           f"hydra.run.dir={out}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", **{failure.KILL_ENV: "1:3"})  # rank 1, as its step 3 updates
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    seen: set[tuple[int, str]] = set()
    ranks: list[tuple[int, str]] = []
    killed_at = None
    deadline = time.monotonic() + 300
    while p.poll() is None:  # watch the process tree: the ranks, their verifier workers
        assert time.monotonic() < deadline, "the trial did not end"
        now = _descendants(p.pid)
        seen |= now
        if not ranks:
            ranks = sorted(x for x in now if x[0] in {int(c) for c in Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()})
        if killed_at is None and len(ranks) == 2 and not _alive(ranks[1]):
            killed_at = time.monotonic()
        time.sleep(0.05)
    ended = time.monotonic()
    log = p.stdout.read()
    assert killed_at is not None, log[-3000:]
    r = json.loads((out / "result.json").read_text())
    assert r["status"] == "failed"
    # gloo says "Connection reset by peer" or "Connection closed by peer" depending on timing
    assert r["error"].startswith(("rank 1 lost: connection reset during all-reduce at step 3 (",
                                  "rank 1 lost: connection closed during all-reduce at step 3 (")), r["error"]
    assert "SIGKILL" in r["error"] and r["train/steps_done"] == 2
    assert p.returncode != 0
    assert "Error executing job" not in log and "Terminated" not in log, log[-3000:]  # no Hydra traceback
    assert "harness/trial.py" not in log and "harness/__main__.py" not in log, log[-3000:]
    assert not [x for x in seen if _alive(x)], "processes left running"
    assert ended - killed_at < 30, ended - killed_at  # seconds: no wait for a record that never comes, no hang


def test_a_dead_peer_without_a_record_is_named_at_once(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        me = failure.this_process()
        host = me[0]
        assert failure.is_gone((host, dead.pid)) and failure.is_gone((host, alive.pid)) is False
        assert failure.is_gone(("another-host", alive.pid)) is None

        def all_reduce_sum():  # a collective by name, as harness.distributed.reduce has them
            raise RuntimeError("[gloo/transport/tcp/pair.cc:534] Connection reset by peer [127.0.0.1]:1234")

        try:
            all_reduce_sum()
        except RuntimeError as e:
            error = e
        t = time.monotonic()
        reason = failure.failure_reason(error, tmp_path, 0, wait_s=30, peers=[me, (host, dead.pid)], step=7)
        assert time.monotonic() - t < 5  # the dead peer will write nothing: no wait for it
        assert reason.startswith("rank 1 lost: connection reset during all-reduce at step 7 (its process ended"), reason
        # alive and silent: after the wait it is named too; a recorded primary error wins over both
        reason = failure.failure_reason(error, tmp_path, 0, wait_s=0.3, peers=[me, (host, alive.pid)], step=7)
        assert reason == ("rank 1 lost: connection reset during all-reduce at step 7 "
                          "(no error recorded within 0.3 s)")
        try:
            raise KeyError("batch")
        except KeyError as e:
            failure.record_failure(tmp_path, 1, e)
        assert failure.failure_reason(error, tmp_path, 0, peers=[me, (host, dead.pid)]) == "rank 1: KeyError: 'batch'"
    finally:
        alive.kill()
        alive.wait()


def test_how_and_where_a_peer_was_lost():
    assert failure.how_lost(RuntimeError("Connection closed by peer [127.0.0.1]:5")) == "connection closed"
    assert failure.how_lost(failure.Terminated(signal.SIGTERM)) == "SIGTERM from the launcher"
    assert failure.how_lost(ValueError("odd")) == "ValueError: odd"
    assert failure.collective_of(ValueError("no traceback")) is None

    def reduce_scatter_tensor():
        raise RuntimeError("x")

    def outer_all_reduce():
        reduce_scatter_tensor()

    try:
        outer_all_reduce()
    except RuntimeError as e:
        assert failure.collective_of(e) == "reduce-scatter"  # the innermost collective


def test_a_sigterm_after_a_failure_waits_for_the_result_then_is_dropped(tmp_path):
    previous = signal.getsignal(signal.SIGTERM)
    failure.install_sigterm_handler()
    try:
        hold = failure.SigtermHold()
        try:
            raise RuntimeError("lost peer")
        except RuntimeError:
            hold.failed()
            os.kill(os.getpid(), signal.SIGTERM)  # torchrun ends the survivors while the reason is worked out
            time.sleep(0.01)
            reason = "rank 1 lost"
        finally:
            with hold:
                (tmp_path / "result.json").write_text(json.dumps({"error": reason}))
        assert json.loads((tmp_path / "result.json").read_text()) == {"error": "rank 1 lost"}
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # a further SIGTERM ends the process at once
        # a failure recorded with no SIGTERM yet: a later one (torchrun's, at exit) ends the process quietly
        failure.install_sigterm_handler()
        hold = failure.SigtermHold()
        hold.failed()
        with hold:
            pass
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        # outside a distributed rank (no install_sigterm_handler) a failed trial still gets its SIGTERM
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        hold = failure.SigtermHold()
        with pytest.raises(failure.Terminated):
            hold.failed()
            with hold:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.01)
        # without a failure the held SIGTERM still ends the trial, after the write
        failure.install_sigterm_handler()
        with pytest.raises(failure.Terminated):
            with failure.SigtermHold():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.01)
                (tmp_path / "ok.json").write_text("{}")
        assert (tmp_path / "ok.json").exists()
    finally:
        signal.signal(signal.SIGTERM, previous)
