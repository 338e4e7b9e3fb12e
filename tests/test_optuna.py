"""The optuna sweeper: Hydra's grammar mapped to Optuna distributions; real searches on the tiny model
whose SQLite study holds every trial with the objective from its result.json; a second run continues
the study (n_trials is the total), an interrupted trial is resumed, diverged trials are FAIL and the
search goes on (through submitit's local launcher); a bad search space stops before any trial; the
report section reads the study."""

import json
import shutil

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from harness.config import register
from harness.report.study import study_section
from harness.sweepers.optuna import SweepError, objective_value, override_value, search_space
from tests.conftest import ROOT, run_harness

register()
optuna.logging.set_verbosity(optuna.logging.WARNING)
TINY = ["model=tiny", "logger=none", "trainer.steps=1", "trainer.prompts_per_step=4", "trainer.group_size=2",
        "task.num_eval=8", "task.num_val=8", "hydra.sweeper.n_jobs=2"]


def _space(*overrides):
    return search_space(OverridesParser.create().parse_overrides(list(overrides)))


def test_grammar_maps_to_optuna_distributions():
    space, fixed = _space("optimizer.lr=tag(log, interval(1e-3, 1))", "x=interval(0, 2)", "n=tag(int, interval(1, 8))",
                          "k=range(1, 9, 2)", "y=range(0.1, 0.5, 0.1)", "optimizer.momentum=choice(0.0, 0.9)",
                          "optimizer=sgd,adamw", "seed=3", "+trainer.extra='a b'")
    assert space["optimizer.lr"] == FloatDistribution(1e-3, 1.0, log=True)
    assert space["x"] == FloatDistribution(0.0, 2.0)
    assert space["n"] == IntDistribution(1, 8)
    assert space["k"] == IntDistribution(1, 7, step=2)  # the values range() yields: 1, 3, 5, 7
    assert isinstance(space["y"], FloatDistribution) and space["y"].step == 0.1 and space["y"].low == 0.1
    assert space["optimizer.momentum"] == CategoricalDistribution([0.0, 0.9])
    assert space["optimizer"] == CategoricalDistribution(["sgd", "adamw"])
    assert fixed == ["seed=3", "+trainer.extra='a b'"]
    # the command line (later) wins over params for the same key
    space, fixed = _space("optimizer.lr=tag(log, interval(1e-3, 1))", "optimizer.lr=0.1")
    assert space == {} and fixed == ["optimizer.lr=0.1"]
    with pytest.raises(SweepError):
        _space("k=range(5, 5)")


def test_sampled_values_round_trip_through_the_grammar():
    parser = OverridesParser.create()
    for v in (0.044303752452182654, 4.4248e29, 1e-7, 3, True, None, "adamw", "a b", "it's", "1e-3", "null"):
        o = parser.parse_override(f"k={override_value(v)}")
        assert o.value() == v, (v, override_value(v))


def test_objective_value_accepts_numbers_only(tmp_path):
    ok = JobReturn(_return_value=0.25, status=JobStatus.COMPLETED)
    assert objective_value(ok, tmp_path / "result.json", "eval/accuracy_final") == (0.25, None)
    for bad in (None, float("nan"), float("inf"), "0.3", True):
        value, reason = objective_value(JobReturn(_return_value=bad, status=JobStatus.COMPLETED),
                                        tmp_path / "result.json", "eval/accuracy_final")
        assert value is None and reason
    raised = JobReturn(_return_value=RuntimeError("boom"), status=JobStatus.FAILED)
    assert objective_value(raised, tmp_path / "result.json", "x") == (None, "job raised RuntimeError: boom")
    # the launcher failed (no JobReturn): the trial's result.json decides
    assert objective_value(None, tmp_path / "result.json", "x")[0] is None
    (tmp_path / "result.json").write_text(json.dumps({"status": "ok", "x": 0.5}))
    assert objective_value(None, tmp_path / "result.json", "x") == (0.5, None)
    (tmp_path / "result.json").write_text(json.dumps({"status": "failed", "error": "diverged", "x": 0.5}))
    assert objective_value(None, tmp_path / "result.json", "x") == (None, "diverged")


@pytest.mark.parametrize("name", ["search_sgd", "search_adamw", "search_rmsprop"])
def test_search_files_pick_the_optuna_sweeper(name):
    from harness.sweepers import register as register_sweepers

    register_sweepers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra.searchpath=[file://{ROOT}]", f"+sweeps={name}"],
                      return_hydra_config=True)
    sw = cfg.hydra.sweeper
    assert sw._target_ == "hydra_plugins.harness.OptunaSweeper"
    assert cfg.optimizer.name == name.split("_")[1]
    assert sw.sampler.seed == 0 and sw.direction == "maximize" and sw.storage is None and sw.study_name is None
    assert sw.n_trials > 0 and sw.n_jobs >= 1
    space, _ = _space(*(f"{k}={v}" for k, v in sw.params.items()))
    lr = space["optimizer.lr"]
    assert isinstance(lr, FloatDistribution) and lr.log and lr.low < cfg.optimizer.lr < lr.high
    assert ("optimizer.momentum" in space) == (name == "search_sgd")


def _study(sweep):
    return optuna.load_study(study_name=sweep.name, storage=f"sqlite:///{sweep / 'study.db'}")


def _check_values_match_result_files(study, sweep):
    """Every complete trial's value is result.json[objective] in its own folder, with its params."""
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        r = json.loads((sweep / t.user_attrs["dir"] / "result.json").read_text())
        assert r["status"] == "ok"
        assert t.value == r["eval/val_accuracy_final"]
        assert r["trial"]["lr"] == t.params["optimizer.lr"] and r["trial"]["momentum"] == t.params["optimizer.momentum"]


@pytest.mark.slow  # real searches of several trials
def test_search_is_persistent_resumable_and_tells_result_values(cache_dir, tmp_path):
    sweep = tmp_path / "search"
    p = run_harness("-m", "+sweeps=search_sgd", *TINY, "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={sweep}")
    assert p.returncode == 0, p.stderr[-3000:]
    study = _study(sweep)
    assert study.user_attrs["objective"] == "eval/val_accuracy_final"
    first = study.get_trials()
    assert [t.state for t in first] == [TrialState.COMPLETE] * 3
    assert all(isinstance(t.value, float) and 0 <= t.value <= 1 for t in first)
    assert [t.user_attrs["dir"] for t in first] == ["trial_0000", "trial_0001", "trial_0002"]
    _check_values_match_result_files(study, sweep)
    assert (sweep / "optimization_results.yaml").is_file() and (sweep / "report.md").is_file()

    # the same command with n_trials=5: two more trials, in new folders, at new points
    p = run_harness("-m", "+sweeps=search_sgd", *TINY, "hydra.sweeper.n_trials=5", f"hydra.sweep.dir={sweep}")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "already finished, skipped" not in p.stderr
    trials = _study(sweep).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 5
    assert [(t.params, t.value) for t in trials[:3]] == [(t.params, t.value) for t in first]
    assert len({t.params["optimizer.lr"] for t in trials}) == 5  # the seed moved on: no replayed points
    assert len({t.user_attrs["dir"] for t in trials}) == 5
    _check_values_match_result_files(_study(sweep), sweep)

    # a sweep killed after trial 5 finished but before Optuna heard of it: the trial is RUNNING in the
    # study; the next run resumes it in its folder (whose result.json is read, no training) and stops
    study = _study(sweep)
    study.enqueue_trial(trials[0].params)
    stale = study.ask(fixed_distributions=trials[0].distributions)
    shutil.copytree(sweep / "trial_0000", sweep / "trial_0005")
    stale.set_user_attr("overrides", trials[0].user_attrs["overrides"])
    stale.set_user_attr("dir", "trial_0005")
    p = run_harness("-m", "+sweeps=search_sgd", *TINY, "hydra.sweeper.n_trials=6", f"hydra.sweep.dir={sweep}")
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stderr.count("already finished, skipped") == 1
    trials = _study(sweep).get_trials()
    assert len(trials) == 6 and trials[5].state == TrialState.COMPLETE
    assert (trials[5].params, trials[5].value) == (trials[0].params, trials[0].value)

    # the report section: the best trials and the plot of every sampled point
    md = study_section(sweep)
    assert md is not None and f"Study `{sweep.name}`" in md and "6 trials, 6 complete" in md
    assert "| sgd | 1 |" in md and "![study_lr](study_lr.png)" in md
    assert (sweep / "study_lr.png").stat().st_size > 1000

    # the study is gone but its trial folders are not: refuse to reuse them for other parameters
    (sweep / "study.db").rename(tmp_path / "old.db")
    p = run_harness("-m", "+sweeps=search_sgd", *TINY, "hydra.sweeper.n_trials=6", f"hydra.sweep.dir={sweep}")
    assert p.returncode == 2 and "holds trial folders that study" in p.stderr, p.stderr[-3000:]
    assert not (sweep / "study.db").exists()


@pytest.mark.slow  # real searches of several trials
def test_diverged_trials_are_fail_and_the_search_goes_on(cache_dir, tmp_path):
    """Through submitit's local executor (the SLURM code path): the two trials run as parallel jobs.
    Divergence is certain whatever the model samples: weight decay moves every weight by
    lr * weight_decay * w (>= 1e49 |w|: inf in float32) in the first update, with or without a
    policy gradient (a step whose groups all had equal rewards has none)."""
    sweep = tmp_path / "diverge"
    p = run_harness("-m", "+sweeps=search_sgd", "hydra/launcher=local", *TINY, "trainer.steps=3", "trainer.max_consecutive_skips=1",
                    "trainer.eval_every=0", "optimizer.lr=tag(log, interval(1e29, 1e30))", "optimizer.weight_decay=1e20",
                    "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}")
    assert p.returncode == 0, p.stderr[-3000:]
    trials = _study(sweep).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL] * 2
    for t in trials:
        assert t.value is None and "weights became non-finite after the optimizer step" in t.user_attrs["error"]
        assert 1e29 <= t.params["optimizer.lr"] <= 1e30
        r = json.loads((sweep / t.user_attrs["dir"] / "result.json").read_text())
        assert r["status"] == "failed" and r["error"] == t.user_attrs["error"]
    md = study_section(sweep)
    assert "2 trials, 0 complete, 2 failed" in md and "No complete trials." in md


@pytest.mark.parametrize("space, message", [
    ("optimizer.lr=interval(-1, 1)", "must be a number > 0"),
    ("optimizer.lr=tag(log, interval(-1, 1))", "`low > 0` must hold"),
    ("optimizer.nosuchkey=choice(1, 2)", "nosuchkey"),
])
def test_bad_search_space_stops_before_any_trial(tmp_path, space, message):
    p = run_harness("-m", "+sweeps=search_sgd", *TINY, space, f"hydra.sweep.dir={tmp_path}/s")
    assert p.returncode == 2, p.stderr[-3000:]
    assert "error:" in p.stderr and message in p.stderr
    assert not (tmp_path / "s" / "study.db").exists() and not list((tmp_path / "s").rglob("result.json"))


def test_study_section_is_none_without_a_study(tmp_path):
    assert study_section(tmp_path) is None
