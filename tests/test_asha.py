"""The grid sweeper's ASHA-style stop rule (harness.prune.asha): the rule worked out by hand; its
decisions never depend on the order of the reports (every order of random arms checked against the
decisions of the complete reports); a trial waits only for running trials, and at most max_wait_s;
and real grids on the tiny model, 4 lrs of one arm in two orders and as parallel jobs: the two
far-too-large lrs stop at the rung (step 2), the others finish with the same results in both orders."""

import json
import math
import random
import time

import pytest

from harness.prune.asha import STATE_DIR, AshaLink, Member, Rule, Seen, State, decisions, rungs, trial_key, verdict
from tests.conftest import run_harness


def test_verdict_by_hand():
    # 4 trials at a rung, eta 2: the top 2 go on
    assert verdict(better=0, reached=4, pending=0, eta=2) == "keep"
    assert verdict(better=1, reached=4, pending=0, eta=2) == "keep"
    assert verdict(better=2, reached=4, pending=0, eta=2) == "stop"
    # alone so far with 3 to come: 0..3 of them may beat it and the cut is 1..2: not decided
    assert verdict(better=0, reached=1, pending=3, eta=2) is None
    # 2 better already, 1 to come: the cut is at most max(1, 4 // 2) = 2: stopped whatever comes
    assert verdict(better=2, reached=3, pending=1, eta=2) == "stop"
    # best of 3 with 1 to come: in the top max(1, 3 // 2) = 1 or the top 2 of 4 whatever it reports
    assert verdict(better=0, reached=3, pending=1, eta=2) == "keep"
    assert verdict(better=0, reached=1, pending=0, eta=3) == "keep"  # at least one goes on


def test_rungs_are_the_evaluations_before_the_last_step():
    assert rungs(2, 8, 0) == [2, 4, 6]
    assert rungs(2, 8, 3) == [4, 6]
    assert rungs(4, 4, 0) == [] and rungs(0, 8, 0) == []


def test_ties_at_the_cut_go_on_and_ended_trials_leave_the_rung():
    seen = {k: Seen({2: v}, "paused") for k, v in (("a", 0.5), ("b", 0.3), ("c", 0.3), ("d", 0.1))}
    table, _ = decisions(_arm(seen, [2, 4]), eta=2, maximize=True)
    assert {k: table[k][2] for k in seen} == {"a": "keep", "b": "keep", "c": "keep", "d": "stop"}  # cut 2, b and c tie
    # rung 4: a reported, b failed before it, c is still to come, d was stopped at rung 2
    seen["a"] = Seen({2: 0.5, 4: 0.2}, "waiting")
    seen["b"] = Seen({2: 0.3}, "ended", ended=True)
    table, pending = decisions(_arm(seen, [2, 4]), eta=2, maximize=True)
    assert pending[4] == {"c"} and table["a"][4] is None  # c above a: the top 1 of 2, a stops; else a goes on
    seen["c"] = Seen({2: 0.3}, "ended", ended=True)
    assert decisions(_arm(seen, [2, 4]), eta=2, maximize=True)[0]["a"][4] == "keep"


def _arm(seen: dict, steps: list) -> dict:
    return {k: Member(tuple(steps), v) for k, v in seen.items()}


def _complete(values: dict, fails: dict, steps: list, eta: int) -> dict:
    """The decisions of the complete reports: rung by rung, a trial reports at a rung if it was kept at
    every earlier one and did not fail before it."""
    seen = {k: Seen({}, "ended", ended=True) for k in values}
    for s in steps:
        table, _ = decisions(_arm(seen, steps), eta, True)
        for k in values:
            if (fails[k] is None or s < fails[k]) and all(table[k].get(r) == "keep" for r in steps if r < s):
                seen[k].values[s] = values[k][s]
    return decisions(_arm(seen, steps), eta, True)[0]


@pytest.mark.parametrize("seed", range(40))
def test_decisions_do_not_depend_on_the_order_of_reports(seed):
    """Random arms (ties and NaN included, some trials failing before a rung), reported in a random
    order in which a trial reports at a rung only once its previous rung is decided "keep" (before
    that it waits or is paused): every decision taken on the reports so far is the decision of the
    complete reports, and the simulated sweep always ends."""
    rnd = random.Random(seed)
    n, eta, steps = rnd.randint(2, 7), rnd.choice([2, 3]), [2, 4, 6]
    values = {f"t{i}": {s: rnd.choice([0.0, 0.1, 0.2, 0.3, 0.5, math.nan]) for s in steps} for i in range(n)}
    fails = {k: rnd.choice([None, None, None, 4, 6]) for k in values}  # the rung it fails before
    final = _complete(values, fails, steps, eta)
    seen = {k: Seen({}, "running") for k in values}
    while True:
        table, _ = decisions(_arm(seen, steps), eta, True)
        for k in values:
            for s, d in table[k].items():
                assert d is None or d == final[k][s], (k, s, d, final[k][s])
        moves = []
        for k in (k for k in values if not seen[k].ended):
            nxt = next((s for s in steps if s not in seen[k].values), None)
            earlier = [table[k].get(r) for r in steps if nxt is None or r < nxt]
            if nxt is None or "stop" in earlier or (fails[k] is not None and nxt >= fails[k]):
                moves.append((k, None))  # it ends: finished, stopped or failed
            elif all(d == "keep" for d in earlier):
                moves.append((k, nxt))
        if not moves:
            break
        k, step = rnd.choice(moves)
        if step is None:
            seen[k] = Seen(dict(seen[k].values), "ended", ended=True)
        else:
            seen[k].values[step] = values[k][step]
    assert all(v.ended for v in seen.values()), "a sweep where every trial waits for another"


def _state(tmp_path, others: dict, status: str = "running", max_wait_s: float = 600.0) -> tuple:
    """A manifest with trial "me" (overrides ["lr=1"]) and others {overrides: (status, value at 2 or None)};
    status "not started": no state file."""
    rule = Rule(eta=2, direction="maximize", min_step=0, max_wait_s=max_wait_s, poll_s=0.05)
    state = State(tmp_path / STATE_DIR)
    jobs = [["lr=1"], *([o] for o in others)]
    state.write_manifest(rule, {trial_key(j): {"arm": 0, "rungs": [2], "overrides": j} for j in jobs})
    for o, (st, v) in others.items():
        if st != "not started":
                state.write(trial_key([o]), {"status": st, "values": {} if v is None else {"2": v}})
    return state, {"kind": "asha", "dir": str(tmp_path)}


def test_a_trial_pauses_at_once_when_the_trials_it_needs_are_not_running(tmp_path):
    state, sweep = _state(tmp_path, {"lr=2": ("not started", None), "lr=3": ("ended", 0.1)})
    link = AshaLink(sweep, tmp_path / "t", ["lr=1", "prune.sweep={kind:asha}"])  # the link override is not its identity
    link.report(2, 0.5)
    t0 = time.monotonic()
    what, reason = link.decide(2, 0.5)  # lr=2 (not started) may come above it (cut 1 of 3) or not (top 1 of 2)
    assert what == "pause" and "none of them running" in reason and time.monotonic() - t0 < 5
    link.finish("paused", 2)
    assert state.paused() == {link.key: 2} and state.ready() == []
    state.write(trial_key(["lr=2"]), {"status": "ended", "values": {"2": 0.9}})  # it came above: cut 1 of 3
    assert state.ready() == [link.key]
    again = AshaLink(sweep, tmp_path / "t", ["lr=1"])
    assert again.resume(2)[0] == "stop" and again.values == {"2": 0.5}  # the value reported before is kept


def test_the_wait_for_a_running_trial_is_bounded(tmp_path):
    _, sweep = _state(tmp_path, {"lr=2": ("running", None)}, max_wait_s=0.5)
    link = AshaLink(sweep, tmp_path / "t", ["lr=1"])
    link.report(2, 0.5)
    t0 = time.monotonic()
    what, reason = link.decide(2, 0.5)
    assert what == "pause" and "waited 0.5 s" in reason and time.monotonic() - t0 >= 0.5


def test_a_trial_goes_on_without_waiting_when_the_rule_needs_nobody(tmp_path):
    _, sweep = _state(tmp_path, {"lr=2": ("running", None), "lr=3": ("ended", 0.1), "lr=4": ("ended", 0.2)})
    link = AshaLink(sweep, tmp_path / "t", ["lr=1"])
    link.report(2, 0.5)
    assert link.decide(2, 0.5) is None  # best of 3 with one to come: in the top 2 of 4 whatever it reports
    assert link.decide(3, 0.5) is None  # not a rung


# ---------------------------------------------------------------- real grids on the tiny model

TINY = ["model=tiny", "logger=none", "threads=1", "trainer.steps=4", "trainer.eval_every=2", "task.num_eval=16",
        "hydra.sweeper.stop.eta=2"]
LRS = ("0.05", "0.02", "3", "1000")  # 3 and 1000: the tiny model's validation accuracy is 0 after one step


def _grid(tmp_path, name, lrs):
    sweep = tmp_path / name
    p = run_harness("-m", *TINY, f"optimizer.lr={','.join(lrs)}", f"hydra.sweep.dir={sweep}")
    assert p.returncode == 0, p.stderr[-3000:]
    results = {}
    for f in sweep.glob("*/result.json"):
        r = json.loads(f.read_text())
        steps = [json.loads(line)["step"] for line in (f.parent / "metrics.jsonl").read_text().splitlines()]
        results[r["trial"]["lr"]] = (r, steps)
    return results, p.stderr


@pytest.mark.slow  # real sweeps of several trials
def test_grid_asha_stops_the_same_trials_whatever_the_order(cache_dir, tmp_path):
    """Two orders of one arm's 4 lrs, run one trial at a time (the local launcher): the two far-too-large
    lrs stop at the rung (step 2) in both. Good lrs first: they reach the rung with nobody else there
    and pause (checkpoint), the bad ones are stopped at once, then the sweeper resumes the good ones.
    Bad lrs first: they pause, the good ones are decided at once and go on, then the bad ones are
    resumed and stopped. The survivors' results are those of a run never paused."""
    first, _ = _grid(tmp_path, "good_first", LRS)
    second, _ = _grid(tmp_path, "bad_first", tuple(reversed(LRS)))
    for results in (first, second):
        assert set(results) == {0.05, 0.02, 3.0, 1000.0}
        for lr in (3.0, 1000.0):
            r, steps = results[lr]
            assert r["status"] == "pruned" and r["prune/step"] == 2 and r["prune/by"] == "asha", r
            assert r["prune/value"] == 0.0 and "top 1/2" in r["prune/reason"] and max(steps) == 2
        for lr in (0.05, 0.02):
            assert results[lr][0]["status"] == "ok" and max(results[lr][1]) == 4
    assert first[0.05][0].get("resumed_from_step") == 2 and first[0.02][0].get("resumed_from_step") == 2
    assert not second[0.05][0].get("resumed_from_step") and not second[0.02][0].get("resumed_from_step")
    assert second[3.0][0].get("resumed_from_step") == 2  # paused, then resumed only to hear it stops
    for lr in (0.05, 0.02):
        for key in ("eval/val_accuracy_final", "eval/accuracy_final", "train/reward_curve"):
            assert first[lr][0][key] == second[lr][0][key], (lr, key)
    for lr in LRS:
        assert first[float(lr)][0]["prune/value" if float(lr) > 1 else "eval/val_curve"] == \
            second[float(lr)][0]["prune/value" if float(lr) > 1 else "eval/val_curve"]


@pytest.mark.slow  # real sweeps of several trials
def test_grid_asha_with_parallel_jobs(cache_dir, tmp_path):
    """The same arm through submitit's local executor (the SLURM code path, all 4 trials at once): a
    trial at the rung waits for the others that are running (one that has not started yet is not
    waited for: then it pauses), and the same two stop."""
    sweep = tmp_path / "parallel"
    p = run_harness("-m", *TINY, "hydra/launcher=local", f"optimizer.lr={','.join(LRS)}", f"hydra.sweep.dir={sweep}")
    assert p.returncode == 0, p.stderr[-3000:]
    results = {json.loads(f.read_text())["trial"]["lr"]: json.loads(f.read_text()) for f in sweep.glob("*/result.json")}
    assert {lr: r["status"] for lr, r in results.items()} == {0.05: "ok", 0.02: "ok", 3.0: "pruned", 1000.0: "pruned"}


def test_a_bad_stop_rule_stops_before_any_trial(tmp_path):
    p = run_harness("-m", "model=tiny", "optimizer.lr=0.1,0.2", "hydra.sweeper.stop.eta=1", f"hydra.sweep.dir={tmp_path}/s")
    assert p.returncode == 2 and "hydra.sweeper.stop.eta=1: must be an integer >= 2" in p.stderr, p.stderr[-2000:]
    p = run_harness("-m", "model=tiny", "optimizer.lr=0.1,0.2", "trainer.eval_every=0", "hydra.sweeper.stop.eta=2",
                    f"hydra.sweep.dir={tmp_path}/t")
    assert p.returncode == 2 and "nothing to stop at" in p.stderr, p.stderr[-2000:]
    assert not list(tmp_path.rglob("result.json"))
