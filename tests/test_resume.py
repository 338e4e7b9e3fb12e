"""Checkpoint and resume: a trial stopped by the pre-timeout signal (SIGUSR2) saves a checkpoint
and exits; run again, it resumes and ends with the same final metrics as an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, run_harness

pytestmark = pytest.mark.slow  # long trials, interrupted and resumed

STEPS = 30  # ~0.1 s a step: the signal, sent after step 2 (polled every 0.2 s), lands well before the end
ARGS = ["model=tiny", "logger=none", "threads=1", f"trainer.steps={STEPS}", "trainer.eval_every=10", "task.num_eval=8", "task.num_val=8"]
SAME = ["eval/accuracy_initial", "eval/accuracy_final", "eval/val_curve", "eval/test_correct_final", "train/reward_curve", "train/steps_done",
        "sparsity/changed_fraction_bf16", "sparsity/changed_fraction_fp32", "sparsity/changed_fraction_tol1e-5",
        "mem/optimizer_state_bytes", "sparsity/update_rank_mean"]


def _steps_done(metrics):
    if not metrics.exists():
        return 0
    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    return max([r["step"] for r in rows if "train/reward_mean" in r], default=0)


def test_signal_checkpoints_and_resume_matches_uninterrupted(cache_dir, tmp_path):
    ref = run_harness(*ARGS, "optimizer=adamw", f"hydra.run.dir={tmp_path}/ref")
    assert ref.returncode == 0, ref.stderr[-2000:]
    want = json.loads((tmp_path / "ref" / "result.json").read_text())

    out = tmp_path / "interrupted"
    cmd = [sys.executable, "-m", "harness", *ARGS, "optimizer=adamw", f"hydra.run.dir={out}"]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    deadline = time.monotonic() + 300
    while _steps_done(out / "metrics.jsonl") < 2:  # let it get into training
        assert p.poll() is None, p.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the trial never reached step 2"
        time.sleep(0.2)
    p.send_signal(signal.SIGUSR2)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 128 + signal.SIGUSR2, err[-2000:]
    assert "checkpointing after this step" in err
    assert not (out / "result.json").exists()  # no result: the trial is not over
    meta = json.loads((out / "checkpoint.json").read_text())
    assert 2 <= meta["step"] < STEPS and (out / "checkpoint.pt").exists()

    again = run_harness(*ARGS, "optimizer=adamw", f"hydra.run.dir={out}")
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resumed from the checkpoint at step {meta['step']}" in again.stderr
    got = json.loads((out / "result.json").read_text())
    assert got["status"] == "ok" and got["resumed_from_step"] == meta["step"]
    for key in SAME:
        assert got[key] == want[key], key
    assert not (out / "checkpoint.pt").exists()  # removed once the trial has its result
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/reward_mean" in r] == list(range(1, STEPS + 1))  # no step twice


def test_checkpoint_every_keeps_a_checkpoint(cache_dir, tmp_path):
    p = run_harness("model=tiny", "logger=none", "trainer.steps=2", "trainer.checkpoint_every=1",
                    "trainer.keep_checkpoint=true", "trainer.eval_every=0", "task.num_eval=4", "task.num_val=4", f"hydra.run.dir={tmp_path}")
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads((tmp_path / "checkpoint.json").read_text())["step"] == 2
    import torch

    sd = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert sd["trainer"]["step"] == 2 and "optimizer" in sd and "rng" in sd and len(sd["trainer"]["history"]["steps"]) == 2
