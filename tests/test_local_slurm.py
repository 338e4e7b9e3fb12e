"""The one-node SLURM cluster on loopback, driven through submitit as the sweeps drive it.

    python -m pytest tests/test_local_slurm.py -q -m slow

Slow tests need root and `bash .ci/slurm_setup.sh`; without Slurm they skip, or fail when CI is
set. A cluster already running in the default state folder is used and left running.
"""

from __future__ import annotations

import operator
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import local_slurm
from harness import slurm as slurm_conf

PYTHON = sys.executable


# ---------------------------------------------------------------- fast: no Slurm needed

def test_config_files_render():
    node = slurm_conf.parse_slurmd_c(
        "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 "
        "RealMemory=24105\nUpTime=0-00:03:48\n")
    assert node == slurm_conf.Node("vm", 2, 24105)
    ports = {"slurmctld": 1, "slurmd": 2, "slurmdbd": 3, "mariadb": 4}
    text = slurm_conf.slurm_conf(node, "/s", ports, "/run/munge/munge.socket.2")
    lines = dict(line.split("=", 1) for line in text.splitlines()
                 if "=" in line and not line.startswith(("#", "NodeName", "PartitionName")))
    assert lines["SchedulerParameters"].startswith("batch_sched_delay=0,")
    assert lines["ReturnToService"] == "2" and lines["JobRequeue"] == "1"
    assert lines["SelectType"] == "select/cons_tres" and lines["SelectTypeParameters"] == "CR_Core"
    assert lines["SlurmdParameters"] == "config_overrides"
    assert lines["AccountingStoragePort"] == "3"
    assert "NodeName=vm NodeAddr=127.0.0.1 CPUs=4 " in text and "RealMemory=21694 " in text  # 90%
    assert "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP" in text
    dbd = slurm_conf.slurmdbd_conf("/s", ports, "/run/munge/munge.socket.2", "pw")
    assert "StoragePort=4" in dbd and "StoragePass=pw" in dbd


def test_start_without_slurm_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setattr(local_slurm, "_which", lambda name: None)
    assert local_slurm.main(["start", "--dir", "/nonexistent"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == local_slurm.NOT_INSTALLED
    assert "bash .ci/slurm_setup.sh" in err


# ---------------------------------------------------------------- slow: a real cluster

def _missing(reason: str):
    """Slow tests need what they test: fail under CI, skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def cluster():
    try:
        local_slurm.check_installed()
    except local_slurm.SlurmNotInstalled as e:
        _missing(str(e))
    if os.geteuid() != 0:
        _missing("the local SLURM cluster runs its daemons as root")
    was_up = local_slurm.status()["up"]
    env = local_slurm.start(timeout=90)
    try:
        with pytest.MonkeyPatch.context() as mp:
            for k, v in env.items():
                mp.setenv(k, v)
            yield env
    finally:
        if not was_up:  # a cluster someone had running stays up
            local_slurm.stop()


def _wait_done(job, timeout: float = 90):
    """job.done() polled under a deadline (submitit's own wait() has none)."""
    end = time.monotonic() + timeout
    while not job.done():
        if time.monotonic() > end:
            job.cancel(check=False)
            pytest.fail(f"job {job.job_id} not done after {timeout} s (state {job.state})")
        time.sleep(0.1)


def _sacct_state(job_id: str, want: str, timeout: float = 30) -> str:
    """Final state from sacct, polled until `want` shows (the record reaches slurmdbd async)."""
    end = time.monotonic() + timeout
    state = ""
    while time.monotonic() < end:
        r = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", job_id],
                           capture_output=True, text=True, timeout=30)
        state = r.stdout.strip()
        if state.startswith(want):
            break
        time.sleep(0.3)
    return state


class _Resumable:
    """Sleeps on its first run; on SIGUSR2 submitit checkpoints it and requeues the job."""

    def __call__(self, marker: str) -> int:
        runs = int(Path(marker).read_text()) + 1 if Path(marker).exists() else 1
        Path(marker).write_text(str(runs))
        if runs == 1:
            time.sleep(300)
        return runs

    def checkpoint(self, marker: str):
        import submitit

        return submitit.helpers.DelayedSubmission(self, marker)


@pytest.fixture
def executor(cluster, tmp_path, monkeypatch):
    try:
        import submitit
    except ImportError:
        _missing("submitit is not installed")
    # sbatch exports the environment: lets the node unpickle what this module defines
    here = Path(__file__).resolve().parent
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(here), str(here.parent), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    ex = submitit.AutoExecutor(folder=tmp_path / "%j", cluster="slurm")
    ex.update_parameters(slurm_partition="debug", timeout_min=5, cpus_per_task=1)
    return ex


@pytest.mark.slow
def test_status_reports_every_daemon_up(cluster):
    s = local_slurm.status()
    assert s["up"], s
    assert all(s["daemons"].values()), s["daemons"]
    assert "debug*" in s["sinfo"] and "idle" in s["sinfo"]
    r = subprocess.run([PYTHON, "-m", "harness.local_slurm", "status"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("running") == len(local_slurm.DAEMONS)


@pytest.mark.slow
def test_start_twice_is_idempotent(cluster):
    before = local_slurm.status()["daemons"]
    assert local_slurm.start() == cluster
    assert local_slurm.status()["daemons"] == before
    r = subprocess.run([PYTHON, "-m", "harness.local_slurm", "start"], capture_output=True,
                       text=True)
    assert r.returncode == 0 and "already running" in r.stderr, r.stderr


@pytest.mark.slow
def test_submitit_job_completes(executor):
    # jobs run stdlib functions: submitit pickles functions by reference, and this test module
    # is not importable on the node
    job = executor.submit(operator.add, 41, 1)
    _wait_done(job)
    assert job.result() == 42
    assert _sacct_state(job.job_id, "COMPLETED") == "COMPLETED"


@pytest.mark.slow
def test_submitit_job_failure_is_reported(executor):
    import submitit

    job = executor.submit(int, "boom from the job")  # ValueError on the node
    _wait_done(job)
    with pytest.raises(submitit.core.utils.FailedJobError, match="boom from the job"):
        job.result()
    assert _sacct_state(job.job_id, "FAILED") == "FAILED"


@pytest.mark.slow
def test_jobs_run_side_by_side(executor):
    """4 advertised CPUs: four 1-CPU jobs run at once even on a 2-core machine."""
    jobs = executor.map_array(time.sleep, [3] * 4)
    end = time.monotonic() + 60
    running = 0
    while time.monotonic() < end and running < 4:
        r = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i"], capture_output=True,
                           text=True)
        running = max(running, len(r.stdout.split()))
        time.sleep(0.2)
    for job in jobs:
        _wait_done(job)
    assert running == 4
    for job in jobs:  # steps end after the result file is written
        assert _sacct_state(job.job_id, "COMPLETED") == "COMPLETED"


@pytest.mark.slow
def test_signalled_job_is_checkpointed_requeued_and_resumes(executor, tmp_path):
    """What a time-out does (SIGUSR2 before the limit); a requeued job waits ~11 s, not 121 s."""
    marker = tmp_path / "runs"
    job = executor.submit(_Resumable(), str(marker))
    end = time.monotonic() + 60
    while not marker.exists():
        assert time.monotonic() < end, f"job {job.job_id} did not start"
        time.sleep(0.1)
    time.sleep(1)  # let the job install its signal handler
    job._interrupt(timeout=True)
    _wait_done(job, timeout=120)
    assert job.result() == 2
    r = subprocess.run(["sacct", "-n", "-X", "-D", "-P", "-o", "State", "-j", job.job_id],
                       capture_output=True, text=True)
    assert r.stdout.split()[:1] == ["REQUEUED"], r.stdout
    assert _sacct_state(job.job_id, "COMPLETED") == "COMPLETED"
