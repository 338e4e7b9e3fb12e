"""Pruning across SLURM jobs, on the one-node cluster on loopback (harness.local_slurm):

    python -m pytest -q tests/test_pruning_slurm.py -m slow

- an Optuna search with a journal storage whose trials run as SLURM jobs: the far-too-large lrs are
  pruned after their first evaluation from inside their jobs (their SLURM job id is in the study);
- the grid's ASHA rule with the trials as SLURM jobs, 4 lrs of one arm: the same two stop at the rung."""

import json

import optuna
import pytest
from optuna.trial import TrialState

from harness.prune.optuna_link import storage_for
from tests.conftest import run_harness
from tests.test_local_slurm import cluster  # noqa: F401 - the module-scoped cluster fixture
from tests.test_pruning import FAR_TOO_LARGE, SEARCH, TINY

pytestmark = pytest.mark.slow


def test_optuna_pruning_from_inside_slurm_jobs_with_a_journal(cluster, cache_dir, tmp_path):  # noqa: F811
    sweep, journal = tmp_path / "search", str(tmp_path / "shared" / "search.log")
    p = run_harness(*SEARCH, "hydra/launcher=slurm_local", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2",
                    f"hydra.sweeper.storage={journal}", f"hydra.sweep.dir={sweep}", timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    trials = optuna.load_study(study_name=sweep.name, storage=storage_for(journal)).get_trials()
    assert len(trials) == 4 and not (sweep / "study.db").exists()
    large = [t for t in trials if t.params["optimizer.lr"] >= FAR_TOO_LARGE]
    assert large, [t.params for t in trials]  # the seeded sampler drew some
    for t in trials:
        r = json.loads((sweep / t.user_attrs["dir"] / "result.json").read_text())
        assert r["trial"]["slurm_job_id"], r["trial"]
        if t in large:
            assert t.state == TrialState.PRUNED and t.last_step == 1 and r["status"] == "pruned" and r["prune/step"] == 1
            where = t.user_attrs["pruned"]
            assert where["slurm_job_id"] and where["step"] == 1  # told PRUNED by the job itself
        else:
            assert t.state in (TrialState.COMPLETE, TrialState.PRUNED) and r["status"] in ("ok", "pruned")


def test_grid_asha_across_slurm_jobs(cluster, cache_dir, tmp_path):  # noqa: F811
    sweep = tmp_path / "grid"
    p = run_harness("-m", *[a for a in TINY if not a.startswith("trainer.eval_every")], "trainer.eval_every=2",
                    "hydra.sweeper.stop.eta=2", "hydra/launcher=slurm_local", "optimizer.lr=1000,0.05,3,0.02",
                    f"hydra.sweep.dir={sweep}", timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    results = {json.loads(f.read_text())["trial"]["lr"]: json.loads(f.read_text()) for f in sweep.glob("*/result.json")}
    assert {lr: r["status"] for lr, r in results.items()} == {0.05: "ok", 0.02: "ok", 3.0: "pruned", 1000.0: "pruned"}
    for lr in (3.0, 1000.0):
        assert results[lr]["prune/step"] == 2 and results[lr]["prune/by"] == "asha" and results[lr]["trial"]["slurm_job_id"]
