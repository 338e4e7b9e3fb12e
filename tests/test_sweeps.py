"""Sweeps: saved sweep files compose and expand to the sum of their arms' grids; a real two-trial
sweep on the tiny model writes results, W&B runs and the report; re-running skips finished trials."""

import csv
import json
import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from harness.config import register
from harness.sweepers.grid import expand
from tests.conftest import ROOT, run_harness

register()
SWEEPS = sorted(p.stem for p in (ROOT / "sweeps").glob("*.yaml"))


def _compose_sweep(name, extra=()):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"hydra.searchpath=[file://{ROOT}]", f"+sweeps={name}", *extra],
                       return_hydra_config=True)


@pytest.mark.parametrize("name", SWEEPS)
def test_every_sweep_file_composes_and_validates(name):
    from harness.sweepers import register as register_sweepers
    from harness.validate import validate

    register_sweepers()
    extra = ["task.path=data.jsonl"] if name in ("qwen3_gpu", "qwen3_8b_gpu") else []
    cfg = _compose_sweep(name, extra)
    sw = cfg.hydra.sweeper
    assert sw._target_.startswith("hydra_plugins.harness."), sw._target_
    if "arms" in sw and sw.arms:
        jobs = expand([f"{k}={v}" for k, v in (sw.params or {}).items()], OmegaConf.to_container(sw.arms), [])
        for job in jobs:  # every trial of the sweep is a valid config
            with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
                trial = compose("config", overrides=[f"hydra.searchpath=[file://{ROOT}]", f"+sweeps={name}", *extra, *job])
            if trial.rollout.backend != "vllm":
                validate(trial)


def test_sgd_vs_adamw_is_the_sum_of_the_grids_not_the_product():
    cfg = _compose_sweep("sgd_vs_adamw")
    sw = cfg.hydra.sweeper
    arms = OmegaConf.to_container(sw.arms)
    jobs = expand([f"{k}={v}" for k, v in sw.params.items()], arms, [])
    grid_sizes = [len(str(a["optimizer.lr"]).split(",")) for a in arms]
    assert len(jobs) == sum(grid_sizes) * 3 == 36  # 4 arms x 3 lrs x 3 seeds; the product would be 4*12*3
    assert sorted({j for job in jobs for j in job if j.startswith("optimizer=")}) == [
        "optimizer=adamw", "optimizer=rmsprop", "optimizer=sgd"]
    adamw_lrs = {j for job in jobs if "optimizer=adamw" in job for j in job if j.startswith("optimizer.lr=")}
    assert adamw_lrs == {"optimizer.lr=1e-05", "optimizer.lr=3e-05", "optimizer.lr=0.0001"}  # Hydra normalises floats


def test_expand_command_line_wins_and_dedupes():
    jobs = expand(["seed=0,1"], [{"optimizer": "sgd", "optimizer.lr": "0.1,0.2"}, {"optimizer": "adamw", "optimizer.lr": [1e-5]}],
                  ["seed=7"])
    assert jobs == [["seed=7", "optimizer=sgd", "optimizer.lr=0.1"], ["seed=7", "optimizer=adamw", "optimizer.lr=1e-05"],
                    ["seed=7", "optimizer=sgd", "optimizer.lr=0.2"]]  # interleaved across arms


def _trial_dirs(sweep: Path):
    return sorted(p.parent for p in sweep.rglob("result.json"))


@pytest.mark.slow  # real sweeps of several trials
def test_real_two_trial_sweep_report_and_rerun(cache_dir, tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "model=tiny", "optimizer=sgd,adamw", "trainer.steps=2", "task.num_eval=8", "task.num_val=8",
            f"hydra.sweep.dir={sweep}", "logger.wandb.project=test"]
    p = run_harness(*args)
    assert p.returncode == 0, p.stderr[-3000:]
    trials = _trial_dirs(sweep)
    # a trial's folder is named by its overrides, so the same command finds it again
    assert [t.name for t in trials] == [f"logger.wandb.project=test,model=tiny,optimizer={o},task.num_eval=8,task.num_val=8,trainer.steps=2"
                                        for o in ("adamw", "sgd")]
    for t in trials:
        r = json.loads((t / "result.json").read_text())
        assert r["status"] == "ok", r["error"]
        runs = list((t / "wandb").glob("offline-run-*"))
        assert len(runs) == 1 and any(runs[0].glob("*.wandb"))
        assert r["wandb_run_id"] in runs[0].name
    rows = list(csv.DictReader((sweep / "report.csv").open()))
    assert sorted(r["optimizer"] for r in rows) == ["adamw", "sgd"]
    assert (sweep / "report.md").read_text().count("| sgd") >= 1
    index = json.loads((sweep / "sweep_index.json").read_text())
    assert sorted(i["status"] for i in index) == ["ok", "ok"]
    assert "[sweep] trial" in p.stderr and "[sweep] finished: 2 trials, ok 2" in p.stderr
    from harness.status import main as status_main

    assert status_main([str(sweep)]) == 0
    table = (sweep / "report.csv").read_text()

    # the same command again: no training, same table
    mtimes = {t: (t / "result.json").stat().st_mtime_ns for t in trials}
    p2 = run_harness(*args)
    assert p2.returncode == 0, p2.stderr[-3000:]
    assert p2.stderr.count("already finished, skipped") == 2
    assert {t: (t / "result.json").stat().st_mtime_ns for t in trials} == mtimes
    assert (sweep / "report.csv").read_text() == table

    # delete one trial's result: only that trial runs again
    (trials[0] / "result.json").unlink()
    p3 = run_harness(*args)
    assert p3.returncode == 0, p3.stderr[-3000:]
    assert p3.stderr.count("already finished, skipped") == 1
    assert (trials[0] / "result.json").exists()
    assert (trials[1] / "result.json").stat().st_mtime_ns == mtimes[trials[1]]


@pytest.mark.slow  # real sweeps of several trials
def test_failed_trial_does_not_stop_the_sweep(cache_dir, tmp_path):
    sweep = tmp_path / "sweep"
    p = run_harness("-m", "model=tiny", "logger=none", "optimizer.lr=0.05,1e30", "trainer.steps=6",
                    "trainer.eval_every=0", "task.num_eval=4", "task.num_val=4", f"hydra.sweep.dir={sweep}")
    assert p.returncode == 0, p.stderr[-3000:]
    results = {next(x for x in t.name.split(",") if x.startswith("optimizer.lr=")): json.loads((t / "result.json").read_text())
               for t in _trial_dirs(sweep)}
    assert results["optimizer.lr=0.05"]["status"] == "ok"
    assert results["optimizer.lr=1e+30"]["status"] == "failed"
    assert "diverged" in results["optimizer.lr=1e+30"]["error"]
    report = (sweep / "report.md").read_text()
    assert "diverged" in report


def test_bad_value_in_a_sweep_stops_before_any_trial(tmp_path):
    p = run_harness("-m", "model=tiny", "logger=none", "optimizer.lr=0.05,-1", f"hydra.sweep.dir={tmp_path}/s")
    assert p.returncode == 2
    assert "error: optimizer.lr=-1: must be a number > 0" in p.stderr
    assert not list((tmp_path / "s").rglob("result.json"))
