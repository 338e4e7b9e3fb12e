"""One trial over 2 ranks (torchrun, gloo, FSDP2) against the same trial in one process.

    python -m pytest -q tests/test_fsdp_trial.py

Sampling is seeded per prompt, so both runs train on the same samples: the reward curve is
identical, and the losses, gradient norms and weights agree up to the order of the floating-point
sums (the ranks' gradients are summed across processes instead of within one).
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, run_harness

pytestmark = pytest.mark.slow  # every test starts torchrun (2 ranks) or long trials

ARGS = ["model=tiny", "logger=none", "threads=1", "trainer.steps=3", "trainer.eval_every=0", "task.num_eval=8",
        "task.num_val=8", "trainer.keep_checkpoint=true", "trainer.checkpoint_every=3"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, env=None, timeout=600, nproc=2) -> subprocess.CompletedProcess:
    e = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-port", str(_port()),
           "-m", "harness", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=e)


def _rows(folder: Path) -> list[dict]:
    return [r for r in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines()) if "train/loss" in r]


def _weights(folder: Path, cache_dir: str) -> dict[str, torch.Tensor]:
    """The final fp32 weights from the kept checkpoint (one-process file or DCP folder)."""
    if (folder / "checkpoint.pt").exists():
        return torch.load(folder / "checkpoint.pt", weights_only=False)["model"]
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    dcp_to_torch_save(str(folder / "checkpoint"), str(folder / "flat.pt"))
    return torch.load(folder / "flat.pt", weights_only=False)["model"]


@pytest.mark.parametrize("opt", [["optimizer=sgd"], ["optimizer=sgd", "optimizer.lr=0.01", "optimizer.momentum=0.9"],
                                 ["optimizer=adamw"]], ids=["sgd", "sgd_momentum", "adamw"])
def test_two_ranks_equal_one_process(cache_dir, tmp_path, opt):
    one = run_harness(*ARGS, *opt, f"hydra.run.dir={tmp_path}/one")
    assert one.returncode == 0, one.stderr[-3000:]
    two = torchrun(*ARGS, *opt, "distributed=fsdp2", f"hydra.run.dir={tmp_path}/two")
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = (json.loads((tmp_path / d / "result.json").read_text()) for d in ("one", "two"))
    assert a["status"] == b["status"] == "ok"
    assert b["train/reward_curve"] == a["train/reward_curve"]  # the same samples, the same rewards
    assert b["mem/optimizer_state_bytes"] == a["mem/optimizer_state_bytes"]  # summed over the ranks' shards
    assert b["mem/param_bytes"] == a["mem/param_bytes"] and b["params/total"] == a["params/total"]
    assert len(b["mem/peak_bytes_by_rank"]) == 2
    for ra, rb in zip(_rows(tmp_path / "one"), _rows(tmp_path / "two")):
        for key in ("train/grad_norm", "optim/update_norm"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-5), (ra["step"], key)
        # the GRPO loss is a sum of +-advantage terms that cancel to ~1e-9: compare it at the gradients' scale
        for key in ("train/loss", "train/pg_loss", "train/kl"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-5, abs=1e-7), (ra["step"], key)
        assert rb["train/reward_mean"] == ra["train/reward_mean"]
        assert rb["mem/optimizer_state_bytes"] == ra["mem/optimizer_state_bytes"]
        for key in ("sparsity/step_changed_fraction_fp32", "sparsity/changed_fraction_fp32",
                    "sparsity/step_changed_fraction_bf16", "sparsity/changed_fraction_bf16"):
            # counts of ~150k entries: equal but for entries within a sum-order rounding of a boundary
            assert abs(rb[key] - ra[key]) * a["params/total"] <= 3, (ra["step"], key, ra[key], rb[key])
    wa, wb = _weights(tmp_path / "one", cache_dir), _weights(tmp_path / "two", cache_dir)
    assert set(wa) <= set(wb)
    worst = max((wa[n].float() - wb[n].float()).abs().max().item() for n in wa)
    assert worst <= 1e-6, worst
    print(f"max |w_1 - w_2| = {worst:.3g}; sparsity counts differ by at most "
          f"{max(abs(rb[k] - ra[k]) * a['params/total'] for ra, rb in zip(_rows(tmp_path / 'one'), _rows(tmp_path / 'two')) for k in ('sparsity/changed_fraction_bf16', 'sparsity/changed_fraction_fp32')):.0f} entries")


def test_fault_on_rank_1_fails_the_trial_with_its_reason(cache_dir, tmp_path):
    t0 = time.monotonic()
    p = torchrun(*ARGS, "distributed=fsdp2", f"hydra.run.dir={tmp_path}", "trainer.steps=5",
                 env={"HARNESS_INJECT_FAULT": "1:2"}, timeout=300)
    elapsed = time.monotonic() - t0
    r = json.loads((tmp_path / "result.json").read_text())
    assert r["status"] == "failed"
    assert r["error"].startswith("rank 1: RuntimeError: injected fault"), r["error"]
    assert r["train/steps_done"] == 1  # step 1 done, the fault came as step 2 started
    assert p.returncode != 0
    assert elapsed < 120, elapsed  # bounded: a lost peer ends the trial, no hang until a timeout


def test_prompts_not_divisible_by_world_size_is_refused(tmp_path):
    p = torchrun("model=tiny", "logger=none", "distributed=fsdp2", "trainer.prompts_per_step=3",
                 f"hydra.run.dir={tmp_path}", env={"HARNESS_CACHE": str(tmp_path / "empty-cache")}, timeout=300)
    assert p.returncode != 0
    assert "error: trainer.prompts_per_step=3: must be a multiple of the world size 2" in p.stderr
    assert not (tmp_path / "empty-cache").exists()


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _steps_done(metrics: Path) -> int:
    if not metrics.exists():
        return 0
    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    return max([r["step"] for r in rows if "train/reward_mean" in r], default=0)


def test_sigusr2_checkpoints_both_ranks_and_resume_matches(cache_dir, tmp_path):
    """SIGUSR2 to a running 2-rank trial: a sharded checkpoint at one step agreed by both ranks, then a
    resumed run that ends with the same metrics as an uninterrupted one."""
    import signal

    args = ["model=tiny", "logger=none", "threads=1", "trainer.steps=20", "trainer.eval_every=10", "task.num_eval=8",
            "task.num_val=8", "optimizer=adamw", "distributed=fsdp2"]
    ref = torchrun(*args, f"hydra.run.dir={tmp_path}/ref")
    assert ref.returncode == 0, ref.stderr[-3000:]
    want = json.loads((tmp_path / "ref" / "result.json").read_text())

    out = tmp_path / "run"
    cmd = [*TORCHRUN, "--master-port", str(_port()), "-m", "harness", *args, f"hydra.run.dir={out}"]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.monotonic() + 300
    while _steps_done(out / "metrics.jsonl") < 2:
        assert p.poll() is None, p.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the trial never reached step 2"
        time.sleep(0.2)
    ranks = _children(p.pid)
    assert len(ranks) == 2
    for pid in ranks:  # as SLURM signals every task of the job
        os.kill(pid, signal.SIGUSR2)
    _, err = p.communicate(timeout=300)
    assert "checkpointing after this step" in err
    assert not (out / "result.json").exists()
    meta = json.loads((out / "checkpoint.json").read_text())
    assert 2 <= meta["step"] < 20 and (out / "checkpoint" / "checkpoint.json").exists()  # the sharded DCP folder
    assert sorted(x.name for x in out.glob("checkpoint.rank*.pt")) == [
        f"checkpoint.rank0.step{meta['step']}.pt", f"checkpoint.rank1.step{meta['step']}.pt"]

    again = torchrun(*args, f"hydra.run.dir={out}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed from the checkpoint at step {meta['step']}" in again.stderr
    got = json.loads((out / "result.json").read_text())
    assert got["status"] == "ok" and got["resumed_from_step"] == meta["step"]
    for key in ("train/reward_curve", "eval/val_curve", "eval/test_correct_final", "eval/accuracy_final",
                "sparsity/changed_fraction_bf16", "sparsity/changed_fraction_fp32", "mem/optimizer_state_bytes",
                "sparsity/update_rank_mean", "optim/update_norm_mean"):
        assert got[key] == want[key], key
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/reward_mean" in r] == list(range(1, 21))
    assert not (out / "checkpoint").exists()  # removed with its result
