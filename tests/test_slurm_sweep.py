"""Sweeps on a real SLURM cluster (one node on loopback, harness.local_slurm), through
hydra/launcher=slurm_local: results in place, a failing trial recorded while the others finish;
a trial signalled with SLURM's pre-timeout SIGUSR2 (`scancel --signal`) mid-training checkpoints,
is requeued and resumes with the same final metrics as an uninterrupted run; and a trial held
past its real time limit (waiting on a lock, not computing: certain on any machine) is signalled,
requeued and finishes. Every wait has a deadline and polls its condition: no timing calibration."""

import csv
import fcntl
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_harness
from tests.test_local_slurm import cluster  # noqa: F401 - the module-scoped cluster fixture

pytestmark = pytest.mark.slow
TINY = ["model=tiny", "logger=none", "threads=1", "trainer.eval_every=0", "task.num_eval=4", "task.num_val=4"]


def _results(sweep):
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.rglob("result.json")}


def test_sweep_on_slurm_with_a_failing_trial(cluster, cache_dir, tmp_path):  # noqa: F811
    sweep = tmp_path / "sweep"
    p = run_harness("-m", *TINY, "hydra/launcher=slurm_local", "trainer.steps=6", "optimizer.lr=0.05,0.01,1e30",
                    f"hydra.sweep.dir={sweep}", timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    res = {next(x for x in k.split(",") if x.startswith("optimizer.lr=")): v for k, v in _results(sweep).items()}
    assert set(res) == {"optimizer.lr=0.05", "optimizer.lr=0.01", "optimizer.lr=1e+30"}
    assert res["optimizer.lr=0.05"]["status"] == "ok" and res["optimizer.lr=0.01"]["status"] == "ok"
    assert res["optimizer.lr=1e+30"]["status"] == "failed" and "diverged" in res["optimizer.lr=1e+30"]["error"]
    job_ids = {r["trial"]["slurm_job_id"] for r in res.values()}
    assert None not in job_ids and len(job_ids) >= 1  # each trial knows its SLURM job (array) id
    rows = list(csv.DictReader((sweep / "report.csv").open()))
    assert len(rows) == 2 and "diverged" in (sweep / "report.md").read_text()
    from harness.status import summary

    lines = summary(sweep)
    assert "3 trials: ok 2, failed 1, not finished 0" in lines[0]
    assert lines[1].startswith("SLURM jobs: completed")


def _wait_for(what: str, cond, timeout: float, proc=None, every: float = 0.2):
    """cond()'s first true value, polled until `timeout`; fails early if `proc` (the sweep) ended."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the sweep ended (exit {proc.returncode}) before {what}", pytrace=False)
        time.sleep(every)
    pytest.fail(f"no {what} after {timeout:.0f} s", pytrace=False)


def _sweep(args, sweep, log):
    """The sweep as a background process (the test acts on its SLURM job meanwhile); output to a file."""
    return subprocess.Popen([sys.executable, "-m", "harness", "-m", *args, "hydra/launcher=slurm_local",
                             f"hydra.sweep.dir={sweep}"], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, text=True)


def _job_id(sweep):
    """The one SLURM job of a one-trial sweep: submitit's folder `.submitit/%j` is named by it."""
    d = sweep / ".submitit"
    folders = [f for f in d.iterdir() if f.is_dir() and re.fullmatch(r"\d+(_\d+)?", f.name)] if d.is_dir() else []
    return folders[0].name if len(folders) == 1 else None


def _squeue_state(job: str) -> str:
    p = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, timeout=30)
    return p.stdout.strip()


def _stop(proc, sweep) -> None:
    """Nothing left running or queued, whether the test passed or not."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)
    job = _job_id(sweep)
    if job:
        subprocess.run(["scancel", job], capture_output=True, timeout=30)


def _same_metrics(got, want):
    for key in ("eval/accuracy_initial", "eval/accuracy_final", "train/reward_curve", "sparsity/changed_fraction_bf16",
                "sparsity/changed_fraction_fp32", "mem/optimizer_state_bytes"):
        assert key in want and got[key] == want[key], key


def test_usr2_requeue_resumes_with_the_same_metrics(cluster, cache_dir, tmp_path):  # noqa: F811
    """SLURM's own pre-timeout signal path, sent with `scancel --signal=USR2` while the trial trains:
    it checkpoints after the step in progress, submitit requeues the job, the job resumes from the
    checkpoint and ends with the same metrics as an uninterrupted run. The signal goes once step 1 is
    logged, with 29 steps to go: far longer than a signal's trip through slurmctld on any machine."""
    steps = 30
    args = [*TINY, "optimizer=adamw", f"trainer.steps={steps}"]
    ref = run_harness(*args, f"hydra.run.dir={tmp_path}/ref", timeout=900)
    assert ref.returncode == 0, ref.stderr[-3000:]
    want = json.loads((tmp_path / "ref" / "result.json").read_text())

    sweep, log_path = tmp_path / "sweep", tmp_path / "sweep.log"
    with log_path.open("w") as log:
        proc = _sweep([*args, "hydra.launcher.max_num_timeout=10"], sweep, log)
        try:
            metrics = _wait_for("training step logged", lambda: [p for p in sweep.glob("*/metrics.jsonl")
                                                                 if '"train/reward_mean"' in p.read_text()], 600, proc)
            job = _job_id(sweep)
            assert job and _squeue_state(job) == "RUNNING"
            subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)
            proc.wait(timeout=900)
        finally:
            _stop(proc, sweep)
    assert proc.returncode == 0, log_path.read_text()[-3000:]
    (got,) = _results(sweep).values()
    assert got["status"] == "ok", got["error"]
    assert 1 <= got.get("resumed_from_step", 0) < steps, "the signal must stop the trial part-way"
    print(f"stopped and resumed at step {got['resumed_from_step']} of {steps}")
    assert "checkpointing after this step" in log_path.read_text() + "".join(
        p.read_text() for p in (sweep / ".submitit").rglob("*_log.err"))
    logged = [json.loads(line)["step"] for line in metrics[0].read_text().splitlines() if '"train/reward_mean"' in line]
    assert logged == list(range(1, steps + 1))  # every step once: none lost or repeated by the resume
    _same_metrics(got, want)


def test_a_trial_past_its_time_limit_is_signalled_requeued_and_finishes(cluster, cache_dir, tmp_path):  # noqa: F811
    """A real time limit: the job waits on the model cache's lock, held here as if another trial
    were building the model, so it outlives its 1-minute limit whatever the machine's speed. SLURM
    sends SIGUSR2 ahead of the limit (`signal_delay_s`), submitit requeues the job as timed out;
    then the lock is released with the model in place, the requeued job (given room now) trains,
    and its metrics are those of a trial that was never held up."""
    from hydra import compose, initialize_config_dir

    from harness.config import register
    from harness.models import resolve_model_dir

    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        model_cfg = compose("config", overrides=["model=tiny"]).model
    built = Path(resolve_model_dir(model_cfg, cache_dir))
    held_cache = tmp_path / "cache"
    held_cache.mkdir()
    args = [*TINY, "optimizer=adamw", "trainer.steps=4"]
    ref = run_harness(*args, f"hydra.run.dir={tmp_path}/ref", timeout=900)
    assert ref.returncode == 0, ref.stderr[-3000:]
    want = json.loads((tmp_path / "ref" / "result.json").read_text())

    sweep, log_path = tmp_path / "sweep", tmp_path / "sweep.log"
    with log_path.open("w") as log, (held_cache / f".{built.name}.lock").open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # harness.models._build_cached waits on this lock
        proc = _sweep([*args, f"cache_dir={held_cache}", "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=30",
                       "hydra.launcher.max_num_timeout=3"], sweep, log)
        try:
            try:
                err = _wait_for("job log", lambda: list((sweep / ".submitit").rglob("*_log.err")), 300, proc)[0]
                started = time.monotonic()
                _wait_for("pre-timeout signal", lambda: "Caught signal SIGUSR2" in err.read_text(), 180, proc)
                signalled_after = time.monotonic() - started
                assert "this job is timed-out" in err.read_text()
                job = _job_id(sweep)
                # nothing here signals the job: SLURM does, from these (0-30 s after the start: Slurm
                # checks limits every ~30 s and may signal up to a minute early)
                script = next((sweep / ".submitit" / job).glob("*_submission.sh")).read_text()
                assert "#SBATCH --time=1\n" in script and "#SBATCH --signal=USR2@30\n" in script
                _wait_for("requeued job", lambda: _squeue_state(job) == "PENDING", 60, proc)
                subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=30"], check=True, timeout=30)
                shutil.copytree(built, held_cache / built.name)  # the "build" is done (its marker file included)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
            proc.wait(timeout=900)
        finally:
            _stop(proc, sweep)
    assert proc.returncode == 0, log_path.read_text()[-3000:]
    print(f"SIGUSR2 {signalled_after:.1f} s after the job started")
    (got,) = _results(sweep).values()
    assert got["status"] == "ok", got["error"]
    assert "resumed_from_step" not in got or not got["resumed_from_step"]  # held before any step: nothing to resume
    _same_metrics(got, want)


def test_optuna_search_on_slurm(cluster, cache_dir, tmp_path):  # noqa: F811
    """The same Optuna search runs its trials as SLURM jobs; values told to the study are the
    trials' result.json objectives."""
    import optuna
    from optuna.trial import TrialState

    sweep = tmp_path / "search"
    p = run_harness("-m", "+sweeps=search_sgd", *TINY, "trainer.steps=2", "hydra/launcher=slurm_local",
                    "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", f"hydra.sweep.dir={sweep}", timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    study = optuna.load_study(study_name=sweep.name, storage=f"sqlite:///{sweep / 'study.db'}")
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    for t in trials:
        r = json.loads((sweep / t.user_attrs["dir"] / "result.json").read_text())
        assert t.value == r["eval/val_accuracy_final"] and r["trial"]["slurm_job_id"]


def test_distributed_trials_on_slurm_tasks(cluster, cache_dir, tmp_path):  # noqa: F811
    """A 2-trial grid of FSDP2 trials, each one SLURM job of 2 tasks (ranks): both end ok, with two
    ranks, and train on the same samples as the same trials in one process."""
    args = [*TINY, "trainer.steps=3", "optimizer=sgd", "optimizer.lr=0.05,0.02"]
    sweep = tmp_path / "sweep"
    p = run_harness("-m", *args, "distributed=fsdp2", "hydra/launcher=slurm_local", "hydra.launcher.tasks_per_node=2",
                    f"hydra.sweep.dir={sweep}", timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    one = run_harness("-m", *args, f"hydra.sweep.dir={tmp_path}/one", timeout=900)
    assert one.returncode == 0, one.stderr[-3000:]
    got, want = _results(sweep), _results(tmp_path / "one")
    assert len(got) == 2
    for name, r in got.items():
        ref = want[name.replace(",distributed=fsdp2", "").replace("distributed=fsdp2,", "")]
        assert r["status"] == "ok", r["error"]
        assert len(r["mem/peak_bytes_by_rank"]) == 2 and r["trial"]["slurm_job_id"]
        assert r["train/reward_curve"] == ref["train/reward_curve"]
        assert r["mem/optimizer_state_bytes"] == ref["mem/optimizer_state_bytes"]
