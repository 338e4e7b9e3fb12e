"""Pruning (harness.prune): a diverged trial stops at its evaluation as "pruned", in any run; an Optuna
search over lrs that include far-too-large ones prunes those after their first evaluation (the study
holds them PRUNED with their step, result.json says pruned, the best trial is complete); the
pruner's own decision through a real journal storage; a pruning search killed with SIGKILL and run
again reruns nothing complete or pruned and goes on; the report, status and index show pruned
trials as pruned, never as failures."""

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.trial import TrialState

from harness.errors import ConfigError
from harness.prune import link_override, running_key, validate_prune
from harness.prune.optuna_link import OptunaLink, storage_for
from tests.conftest import ROOT, run_harness

optuna.logging.set_verbosity(optuna.logging.WARNING)
TINY = ["model=tiny", "logger=none", "threads=1", "trainer.steps=4", "trainer.eval_every=1", "task.num_eval=16"]
# +sweeps=search_pruned (MedianPruner, prune.val_accuracy_floor 0.05) over a range whose top half is far
# too large for the tiny model: its validation accuracy is 0 after one step at any lr >= 3
SEARCH = ["-m", "+sweeps=search_pruned", *TINY, "optimizer.lr=tag(log, interval(1e-2, 1e4))"]
FAR_TOO_LARGE = 3.0


def test_running_value_of_an_objective():
    assert running_key("eval/val_accuracy_final") == ("eval/val_accuracy", False)
    assert running_key("eval/val_accuracy_best") == ("eval/val_accuracy", True)
    assert running_key("train/reward_mean") == ("train/reward_mean", False)


def test_bad_prune_values_are_one_line(tmp_path):
    class P:
        val_accuracy_floor, sweep = 1.5, None

    with pytest.raises(ConfigError, match=r"prune.val_accuracy_floor=1.5: must be in \[0, 1\]"):
        validate_prune(P)
    P.val_accuracy_floor, P.sweep = None, {"kind": "ray"}
    with pytest.raises(ConfigError, match="prune.sweep.kind='ray': allowed values are asha, optuna"):
        validate_prune(P)
    p = run_harness("model=tiny", "prune.val_accuracy_floor=-1", f"hydra.run.dir={tmp_path}/r")
    assert p.returncode == 2 and "prune.val_accuracy_floor=-1" in p.stderr.strip().splitlines()[-1], p.stderr[-2000:]


def test_the_link_override_round_trips_through_hydras_grammar():
    o = link_override(kind="optuna", storage="sqlite:////tmp/a b'c/study.db", study="s", dir="/x")
    assert OverridesParser.create().parse_override(o).value() == {
        "kind": "optuna", "storage": "sqlite:////tmp/a b'c/study.db", "study": "s", "dir": "/x"}


def test_a_diverged_trial_stops_at_its_evaluation(cache_dir, tmp_path):
    """One run, no sweeper: SGD at lr 1000 leaves the tiny model at accuracy 0 after its first step."""
    p = run_harness(*TINY, "optimizer.lr=1000", "prune.val_accuracy_floor=0.05", f"hydra.run.dir={tmp_path}/r")
    assert p.returncode == 0, p.stderr[-3000:]  # pruned is not failed
    r = json.loads((tmp_path / "r" / "result.json").read_text())
    assert r["status"] == "pruned" and r["error"] is None and r["prune/by"] == "divergence"
    assert r["prune/step"] == 1 and r["prune/value"] == 0.0 and "< prune.val_accuracy_floor 0.05" in r["prune/reason"]
    assert r["train/steps_done"] == 1 and [c["step"] for c in r["eval/val_curve"]] == [0, 1]
    assert "eval/accuracy_final" not in r  # no test evaluation: the trial stopped
    assert "trial pruned at step 1: diverged" in p.stdout


def _study(storage: str, name: str):
    return optuna.load_study(study_name=name, storage=storage_for(storage))


@pytest.mark.slow  # real sweeps of several trials
def test_optuna_search_prunes_far_too_large_lrs_after_their_first_evaluation(cache_dir, tmp_path):
    sweep = tmp_path / "search"
    p = run_harness(*SEARCH, "hydra.sweeper.n_trials=6", f"hydra.sweep.dir={sweep}")
    assert p.returncode == 0, p.stderr[-3000:]
    trials = _study(f"sqlite:///{sweep / 'study.db'}", sweep.name).get_trials()
    assert len(trials) == 6
    large = [t for t in trials if t.params["optimizer.lr"] >= FAR_TOO_LARGE]
    assert large and len(large) < 6, [t.params for t in trials]  # the seeded sampler drew both kinds
    for t in large:
        assert t.state == TrialState.PRUNED and t.last_step == 1 and t.intermediate_values == {1: 0.0}
        assert t.user_attrs["pruned"]["step"] == 1 and t.user_attrs["pruned"]["slurm_job_id"] is None
        r = json.loads((sweep / t.user_attrs["dir"] / "result.json").read_text())
        assert r["status"] == "pruned" and r["prune/step"] == 1 and r["train/steps_done"] == 1
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert complete and all(set(t.intermediate_values) == {1, 2, 3} for t in complete)  # reported at every evaluation
    best = _study(f"sqlite:///{sweep / 'study.db'}", sweep.name).best_trial
    assert best.state == TrialState.COMPLETE and best.params["optimizer.lr"] < FAR_TOO_LARGE
    # the report, the status and the sweep index say pruned, never failed
    md = (sweep / "report.md").read_text()
    n = len([t for t in trials if t.state == TrialState.PRUNED])
    assert f"{n} pruned (stopped early, below)" in md and "## Pruned trials" in md and "pruned_curves.png" in md
    assert "0 failed" in md and md.split("## Failed and missing trials")[1].split("##")[0].strip() == "None."
    assert (sweep / "pruned_curves.png").stat().st_size > 1000
    assert f"{n} pruned, " in md.split("## Optuna search")[1]
    from harness.status import summary

    lines = summary(sweep)
    assert f"ok {6 - n}, failed 0, not finished 0, pruned {n}" in lines[0] and sum("pruned   trial_" in x for x in lines) == n
    index = json.loads((sweep / "sweep_index.json").read_text())
    assert sorted(e["status"] for e in index) == ["ok"] * (6 - n) + ["pruned"] * n
    # the same command again: nothing runs, the study is unchanged
    p = run_harness(*SEARCH, "hydra.sweeper.n_trials=6", f"hydra.sweep.dir={sweep}")
    assert p.returncode == 0 and "Launching" not in p.stdout + p.stderr, p.stderr[-3000:]
    assert len(_study(f"sqlite:///{sweep / 'study.db'}", sweep.name).get_trials()) == 6


def test_the_pruner_decides_through_a_journal_storage(tmp_path):
    """A trial's link (as in its SLURM job): it finds its own running trial by folder, reports, hears
    MedianPruner's decision from the study's storage (a journal file), and marks itself PRUNED."""
    journal = str(tmp_path / "study.log")
    study = optuna.create_study(study_name="s", storage=storage_for(journal), direction="maximize")
    study.set_user_attr("pruner", {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 1})
    done = study.ask()
    done.report(0.3, 1)
    study.tell(done, 0.3)
    mine = study.ask()
    mine.set_user_attr("dir", "trial_0001")
    link = OptunaLink({"kind": "optuna", "storage": journal, "study": "s", "dir": str(tmp_path)}, tmp_path / "trial_0001", [])
    assert type(link.pruner).__name__ == "MedianPruner" and link.trial.number == mine.number
    link.report(1, 0.4)
    assert link.decide(1, 0.4) is None  # above the median
    link.report(2, 0.0)
    assert link.decide(2, 0.0) is None  # no complete trial reported at step 2: nothing to compare
    later = study.ask()
    later.set_user_attr("dir", "trial_0002")
    link2 = OptunaLink({"kind": "optuna", "storage": journal, "study": "s", "dir": str(tmp_path)}, tmp_path / "trial_0002", [])
    link2.report(1, 0.1)
    what, reason = link2.decide(1, 0.1)
    assert what == "stop" and "MedianPruner at step 1" in reason
    link2.finish("pruned", 1, reason)
    t = _study(journal, "s").get_trials()[2]
    assert t.state == TrialState.PRUNED and t.intermediate_values == {1: 0.1} and t.user_attrs["pruned"]["step"] == 1
    with pytest.raises(ConfigError, match="0 running trials in trial_0009"):
        OptunaLink({"kind": "optuna", "storage": journal, "study": "s", "dir": str(tmp_path)}, tmp_path / "trial_0009", [])


def _snapshot(sweep, trials):
    """{folder: (result.json bytes, its mtime, metrics.jsonl bytes)} of the finished trials."""
    out = {}
    for t in trials:
        d = sweep / t.user_attrs["dir"]
        out[d.name] = ((d / "result.json").read_bytes(), (d / "result.json").stat().st_mtime_ns,
                       (d / "metrics.jsonl").read_bytes())
    return out


@pytest.mark.slow  # real sweeps of several trials
def test_a_killed_pruning_search_goes_on_without_rerunning_finished_trials(cache_dir, tmp_path):
    """SIGKILL to the whole sweep (sweeper and the trial running in it) once the study holds a pruned
    and a complete trial and another is running; then the same command. Journal storage."""
    sweep, journal = tmp_path / "search", str(tmp_path / "search" / "study.log")
    args = [*SEARCH, "hydra.sweeper.n_trials=7", f"hydra.sweeper.storage={journal}", f"hydra.sweep.dir={sweep}"]
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while True:
            assert proc.poll() is None, f"the sweep ended before the kill: {(tmp_path / 'first.log').read_text()[-2000:]}"
            assert time.monotonic() < deadline, "no pruned, complete and running trials after 600 s"
            trials = _study(journal, sweep.name).get_trials() if os.path.exists(journal) else []
            states = [t.state for t in trials]
            if TrialState.PRUNED in states and TrialState.COMPLETE in states and TrialState.RUNNING in states:
                break
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    before = _study(journal, sweep.name).get_trials()
    finished = [t for t in before if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    snap = _snapshot(sweep, finished)
    p = run_harness(*args)
    assert p.returncode == 0, p.stderr[-3000:]
    after = _study(journal, sweep.name).get_trials()
    assert len(after) == 7 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in after)
    assert _snapshot(sweep, finished) == snap  # not one finished trial ran again
    for t in finished:
        again = after[t.number]
        assert (again.state, again.params, again.value, again.intermediate_values) == \
            (t.state, t.params, t.value, t.intermediate_values)
    assert sorted(p.name for p in sweep.glob("trial_*")) == [f"trial_{i:04d}" for i in range(7)]  # the killed one resumed in its folder
    for t in after:
        r = json.loads((sweep / t.user_attrs["dir"] / "result.json").read_text())
        assert r["status"] == ("pruned" if t.state == TrialState.PRUNED else "ok")


def _linked_trial(study, journal, tmp_path, n):
    t = study.ask()
    t.set_user_attr("dir", f"trial_{n:04d}")
    return OptunaLink({"kind": "optuna", "storage": journal, "study": "s", "dir": str(tmp_path)}, tmp_path / f"trial_{n:04d}", [])


@pytest.mark.parametrize("node, pruned_second", [
    ({"_target_": "optuna.pruners.SuccessiveHalvingPruner", "min_resource": 1, "reduction_factor": 2}, True),
    ({"_target_": "optuna.pruners.HyperbandPruner", "min_resource": 1, "max_resource": 4, "reduction_factor": 2}, None),
    ({"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 0}, False),  # no complete trial yet: no median
])
def test_each_pruner_is_built_from_its_node_and_decides_in_the_trial(tmp_path, node, pruned_second):
    """The sweeper stores the pruner's `_target_` node in the study; each trial builds it with its own
    keys and asks it. Successive halving at its first rung (reduction factor 2): of two running trials
    the worse one stops. Hyperband puts trials in brackets by their number: only that it answers."""
    journal = str(tmp_path / "study.log")
    study = optuna.create_study(study_name="s", storage=storage_for(journal), direction="maximize")
    study.set_user_attr("pruner", node)
    first, second = _linked_trial(study, journal, tmp_path, 0), _linked_trial(study, journal, tmp_path, 1)
    assert type(first.pruner).__name__ == node["_target_"].rsplit(".", 1)[1]
    first.report(1, 0.5)
    assert first.decide(1, 0.5) is None
    second.report(1, 0.1)
    decision = second.decide(1, 0.1)
    if pruned_second is not None:
        assert (decision is not None and decision[0] == "stop") == pruned_second, decision


def test_a_pruner_without_evaluations_to_act_at_stops_before_any_trial(tmp_path):
    p = run_harness(*SEARCH, "trainer.eval_every=0", f"hydra.sweep.dir={tmp_path}/s")
    assert p.returncode == 2 and "needs 0 < trainer.eval_every < trainer.steps (got 0, 4)" in p.stderr, p.stderr[-2000:]
    p = run_harness(*SEARCH, "hydra.sweeper.pruner=null", "trainer.eval_every=0", "hydra.sweeper.n_trials=0",
                    f"hydra.sweep.dir={tmp_path}/t")
    assert p.returncode == 0, p.stderr[-2000:]  # no pruner: nothing to check
