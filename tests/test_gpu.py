"""GPU checks, for a machine with CUDA (skipped elsewhere; the same logic runs on CPU in
tests/test_fsdp_trial.py and tests/test_vllm_rollout.py).

    python -m pytest -q -s -m gpu tests/test_gpu.py tests/test_memory.py
    bash .ci/gpu_check.sh OUTDIR     # the one-call GPU check on a bare machine: python -m harness.bench.gpu

- FSDP2 over NCCL in a world of one equals the one-process trial on CUDA;
- a bf16 trial with vLLM rollouts and sleep mode ends ok, and its memory figures are printed.
"""

import json

import pytest
import torch

from tests.conftest import run_harness
from tests.test_fsdp_trial import ARGS, _rows, torchrun

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_fsdp2_world_of_one_on_cuda_equals_one_process(cache_dir, tmp_path):
    common = [*ARGS, "device=cuda", "optimizer=adamw"]
    one = run_harness(*common, f"hydra.run.dir={tmp_path}/one")
    assert one.returncode == 0, one.stderr[-3000:]
    two = torchrun(*common, "distributed=fsdp2", f"hydra.run.dir={tmp_path}/fsdp", nproc=1)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = (json.loads((tmp_path / d / "result.json").read_text()) for d in ("one", "fsdp"))
    assert b["train/reward_curve"] == a["train/reward_curve"]
    assert b["mem/optimizer_state_bytes"] == a["mem/optimizer_state_bytes"]
    for ra, rb in zip(_rows(tmp_path / "one"), _rows(tmp_path / "fsdp")):
        assert rb["train/grad_norm"] == pytest.approx(ra["train/grad_norm"], rel=1e-5)
    print(f"\nCUDA peak allocated: one process {a['mem/peak_bytes'] / 1e6:.1f} MB, FSDP2 {b['mem/peak_bytes'] / 1e6:.1f} MB; "
          f"step {a['perf/step_s_mean']:.3f} s vs {b['perf/step_s_mean']:.3f} s")


def test_bf16_trial_with_vllm_and_sleep_mode(cache_dir, tmp_path):
    pytest.importorskip("vllm")
    p = run_harness("model=smollm2-135m", "logger=none", "device=cuda", "rollout=vllm", "rollout.enable_sleep_mode=true",
                    "rollout.gpu_memory_utilization=0.3", "trainer.steps=3", "task.num_eval=32", "task.num_val=16",
                    f"hydra.run.dir={tmp_path}")
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads((tmp_path / "result.json").read_text())
    assert r["status"] == "ok" and r["mem/peak_kind"] == "cuda_max_allocated"
    print(f"\nvLLM bf16 + sleep mode: rollout {r['perf/rollout_s_mean']:.3f} s/step, sync {r['perf/sync_s_mean']:.3f} s, "
          f"update {r['perf/update_s_mean']:.3f} s; peak allocated {r['mem/peak_bytes'] / 1e9:.2f} GB "
          f"(rollout {r['mem/peak_bytes_rollout'] / 1e9:.2f}, update {r['mem/peak_bytes_update'] / 1e9:.2f}); "
          f"test accuracy {r['eval/accuracy_initial']:.3f} -> {r['eval/accuracy_final']:.3f}")
