"""bench.peer: the harness and TRL's GRPOTrainer side by side on the tiny model (2 steps, 1 round).

    python -m pytest -q tests/test_bench_peer.py

Real runs of both sides, each in a fresh process; no timing asserts (speed is measured by running
the benchmark, see docs/benchmarks.md). Skipped when TRL is not installed, except in CI (CI=true), which installs
the `peer` extra (.ci/setup.sh test).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from harness.bench.peer import have_trl
from harness.bench.trl_trial import MISSING_TRL
from tests.conftest import ROOT

needs_trl = pytest.mark.skipif(not have_trl() and not os.environ.get("CI"),
                               reason="TRL not installed (pip install -e '.[peer]'); CI runs this")


def test_without_trl_one_line_and_exit_2():
    code = ("import sys; sys.modules['trl'] = None  # hide TRL, installed or not\n"
            "from harness.bench.peer import main\n"
            "sys.exit(main(['--steps', '2', 'model=tiny']))\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr[-2000:]
    assert p.stderr.strip() == MISSING_TRL and "\n" not in MISSING_TRL and ".[peer]" in MISSING_TRL


def test_settings_trl_cannot_match_are_refused_in_one_line():
    from harness.bench.trl_trial import check, compose
    from harness.errors import ConfigError

    check(compose(["model=tiny"]))  # the defaults map onto TRL
    for override, key in (("trainer.loss_agg=seq-mean-token-sum", "trainer.loss_agg"),
                          ("trainer.kl_estimator=k1", "trainer.kl_estimator"),
                          ("trainer.micro_batch_size=5", "trainer.micro_batch_size")):
        with pytest.raises(ConfigError, match=key) as e:
            check(compose(["model=tiny", override]))
        assert "\n" not in str(e.value)


@pytest.mark.slow
@needs_trl
def test_peer_bench_on_the_tiny_model(cache_dir, tmp_path):
    from harness.allocator import glibc_tunables
    from harness.bench.trl_trial import compose, trainer_problems
    from harness.tasks import build_task

    out, keep = tmp_path / "peer.md", tmp_path / "runs"
    p = subprocess.run([sys.executable, "-m", "harness.bench.peer", "--optimizers", "sgd", "--steps", "2",
                        "--rounds", "1", "--out", str(out), "--keep", str(keep), "model=tiny"],
                       cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stderr[-3000:]
    assert out.read_text().strip() in p.stdout  # printed and written
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in p.stdout.splitlines() if line.startswith("| ") and "---" not in line}
    assert rows["median over timed steps"] == ["harness sgd", "TRL sgd", "ratio", "TRL sgd, harness malloc", "ratio"]
    for metric in ("step s", "rollout (generate) s", "rest of the step s", "peak RSS GB (whole process)"):
        harness, trl, r, trl_malloc, r_malloc = rows[metric]
        assert float(harness) > 0 and float(trl) > 0 and float(trl_malloc) > 0, metric
        assert float(r) == pytest.approx(float(harness) / float(trl), rel=0.05, abs=0.01), metric
    assert "diagnostics / step" in rows and "sparsity / step" in rows
    assert "Settings that differ, and why:" in p.stdout and "GLIBC_TUNABLES" in p.stdout

    # TRL saw the harness's prompts, in the harness's order, one step at a time
    cfg = compose(["model=tiny", "trainer.steps=2"])
    expected = [q.question for q in trainer_problems(build_task(cfg.task, cfg.seed), cfg.trainer, cfg.seed, 2)]
    P = cfg.trainer.prompts_per_step
    for variant, tunables in (("TRL sgd-0", None), ("TRL sgd, harness malloc-0", glibc_tunables())):
        steps = [json.loads(x) for x in (keep / variant / "metrics.jsonl").read_text().splitlines()]
        assert [s["peer/questions"] for s in steps] == [expected[:P], expected[P:2 * P]]
        peer = json.loads((keep / variant / "result.json").read_text())["peer"]
        assert peer["ref_model"] and peer["glibc_tunables"] == tunables  # beta > 0: TRL keeps a reference
    harness_steps = [json.loads(x) for x in (keep / "harness sgd-0" / "metrics.jsonl").read_text().splitlines()]
    assert sum("train/reward_mean" in s for s in harness_steps) == 2
