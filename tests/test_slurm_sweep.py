"""Sweeps on a real SLURM cluster (one node on loopback, harness.local_slurm), through
hydra/launcher=slurm_local: results in place, a failing trial recorded while the others finish,
and a trial that times out, is requeued and resumes from its checkpoint with the same final
metrics as an uninterrupted run. Every wait has a deadline (subprocess timeouts)."""

import csv
import json

import pytest

from tests.conftest import run_harness
from tests.test_local_slurm import cluster  # noqa: F401 - the module-scoped cluster fixture

pytestmark = pytest.mark.slow
TINY = ["model=tiny", "logger=none", "threads=1", "trainer.eval_every=0", "task.num_eval=4"]


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


def _steps_lasting(seconds, tmp_path):
    """How many steps make the AdamW tiny trial last about `seconds` on this machine: machines
    differ by 2x and more, so a fixed step count is too short on some and too slow on others."""
    p = run_harness(*TINY, "optimizer=adamw", "trainer.steps=40", f"hydra.run.dir={tmp_path}/calib", timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads((tmp_path / "calib" / "result.json").read_text())
    per_step = r["perf/step_s_mean"]
    overhead = r["perf/total_s"] - 40 * per_step
    return max(100, int((seconds - overhead) / per_step))


def test_timeout_requeue_resumes_with_the_same_metrics(cluster, cache_dir, tmp_path):  # noqa: F811
    steps = _steps_lasting(110, tmp_path)  # outlasts the 1-minute limit with room to spare
    args = [*TINY, "optimizer=adamw", f"trainer.steps={steps}"]
    ref = run_harness(*args, f"hydra.run.dir={tmp_path}/ref", timeout=900)
    assert ref.returncode == 0, ref.stderr[-3000:]
    want = json.loads((tmp_path / "ref" / "result.json").read_text())
    assert want["perf/total_s"] > 65, "the trial must outlast the 1-minute limit for this test to mean anything"

    # SIGUSR2 30 s before the 1-minute limit, i.e. 30-60 s in (SLURM checks every ~30 s): after
    # submitit has installed its handler, which it does only once the job's pickle is loaded
    sweep = tmp_path / "sweep"
    p = run_harness("-m", *args, "hydra/launcher=slurm_local", "hydra.launcher.timeout_min=1",
                    "hydra.launcher.signal_delay_s=30", "hydra.launcher.max_num_timeout=10",
                    f"hydra.sweep.dir={sweep}", timeout=1200)
    assert p.returncode == 0, p.stderr[-3000:]
    (got,) = _results(sweep).values()
    assert got["status"] == "ok", got["error"]
    assert got.get("resumed_from_step", 0) > 0  # it was stopped by the time limit and resumed
    for key in ("eval/accuracy_initial", "eval/accuracy_final", "train/reward_curve", "sparsity/changed_fraction_bf16",
                "sparsity/changed_fraction_fp32", "mem/optimizer_state_bytes"):
        assert got[key] == want[key], key


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
        assert t.value == r["eval/accuracy_final"] and r["trial"]["slurm_job_id"]
