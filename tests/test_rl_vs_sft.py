"""The paper's 2x2 end to end: the saved sweep rl_vs_sft on the tiny model, then the report's
RL-vs-SFT table with intervals and verdicts, as a user runs them."""

import subprocess
import sys

import pytest

from tests.conftest import ROOT, run_harness


@pytest.mark.slow
def test_rl_vs_sft_sweep_then_report_prints_the_contrast(cache_dir, tmp_path):
    sweep = tmp_path / "rl_vs_sft"
    p = run_harness("-m", "+sweeps=rl_vs_sft", "model=tiny", "trainer.steps=2", "seed=0,1", "logger=none", "threads=1",
                    "task.num_eval=16", "task.num_val=8", "hydra.sweep.subdir=${hydra.job.num}",
                    f"hydra.sweep.dir={sweep}", timeout=1800)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "ok 28, failed 0, missing 0" in p.stderr, p.stderr[-2000:]  # 14 trials per seed
    r = subprocess.run([sys.executable, "-m", "harness.report", str(sweep)], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    assert "RL against SFT" in out and "Diagnostics in RL against SFT" in out, out[-3000:]
    section = out[out.index("RL against SFT"):]
    # a gap row per objective for plain SGD at bf16 compute, each with a paired interval and a verdict word
    rows = [line for line in section.splitlines() if line.startswith("|") and "sgd" in line and "bfloat16" in line]
    assert any("grpo" in line for line in rows) and any("sft" in line for line in rows), section[:3000]
    assert all("[" in line and any(w in line for w in ("matches", "better", "worse", "inconclusive")) for line in rows[:2])
    assert (sweep / "rl_vs_sft.png").stat().st_size > 10_000
