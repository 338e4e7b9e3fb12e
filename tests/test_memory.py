"""Bytes of params, grads, optimizer state; peak memory: python -m pytest tests/test_memory.py"""

import gc
import time

import pytest
import torch
from torch import nn

from harness.measure.memory import (
    PeakMemory,
    PhaseTracker,
    current_rss_bytes,
    grad_bytes,
    optimizer_state_bytes,
    param_bytes,
    tensor_bytes,
)

MB = 2**20
N_PARAMS = 10 * 20 + 20 + 20 * 5 + 5  # 325 in 4 tensors
N_TENSORS = 4


def model_after_one_step(make_opt):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
    opt = make_opt(model.parameters())
    model(torch.randn(3, 10)).square().sum().backward()
    opt.step()
    return model, opt


def test_tensor_bytes():
    a = torch.zeros(10)  # 40 bytes
    b = torch.zeros(3, dtype=torch.bfloat16)  # 6 bytes
    assert tensor_bytes([a, None, b]) == 46
    assert tensor_bytes([a, a, b]) == 46  # the same tensor twice counts once
    assert tensor_bytes([a, a.view(10), a.view(2, 5)]) == 40 + 40  # same memory, new shape: kept
    assert tensor_bytes([torch.zeros(10), torch.zeros(10)]) == 80  # distinct storages
    assert tensor_bytes([]) == 0


def test_param_and_grad_bytes():
    model, _ = model_after_one_step(lambda p: torch.optim.SGD(p, lr=0.1))
    assert param_bytes(model) == 4 * N_PARAMS
    assert grad_bytes(model) == 4 * N_PARAMS
    model.zero_grad(set_to_none=True)
    assert grad_bytes(model) == 0
    tied = nn.Linear(4, 4, bias=False)
    pair = nn.ModuleDict({"a": tied, "b": tied})  # a tied weight is one parameter
    assert param_bytes(pair) == 4 * 16


def test_sgd_without_momentum_has_no_state():
    _, opt = model_after_one_step(lambda p: torch.optim.SGD(p, lr=0.1))
    assert optimizer_state_bytes(opt) == 0


def test_sgd_momentum_state_is_one_fp32_buffer():
    _, opt = model_after_one_step(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9))
    assert optimizer_state_bytes(opt) == 4 * N_PARAMS


def test_adamw_state_is_two_buffers_plus_scalar_step_tensors():
    # torch 2.13 AdamW keeps per parameter: exp_avg, exp_avg_sq (fp32, param-shaped) and
    # step (a 0-dim fp32 tensor, 4 bytes).
    _, opt = model_after_one_step(lambda p: torch.optim.AdamW(p, lr=1e-3))
    state = next(iter(opt.state.values()))
    assert state["step"].dim() == 0 and state["step"].dtype == torch.float32
    assert optimizer_state_bytes(opt) == 8 * N_PARAMS + 4 * N_TENSORS


def test_rmsprop_state_is_one_buffer_plus_step():
    _, opt = model_after_one_step(lambda p: torch.optim.RMSprop(p, lr=1e-3))
    assert optimizer_state_bytes(opt) == 4 * N_PARAMS + 4 * N_TENSORS


def test_cpu_peak_rss_tracks_a_200mb_allocation():
    pm = PeakMemory("cpu")
    assert pm.kind == "cpu_rss"
    if not pm.resettable:
        pytest.skip("/proc/self/clear_refs is not writable here")
    gc.collect()
    baseline = current_rss_bytes()
    pm.reset()
    x = torch.ones(50 * MB)  # 200 MB of fp32, every page touched
    peak_with = pm.read()
    assert peak_with - baseline >= 200 * MB
    del x
    pm.reset()
    peak_without = pm.read()
    assert peak_without < peak_with - 150 * MB  # the reset forgot the freed 200 MB


def test_phase_tracker_records_seconds_and_peaks():
    tracker = PhaseTracker("cpu")
    if not tracker.peak.resettable:
        pytest.skip("/proc/self/clear_refs is not writable here")
    gc.collect()
    base = current_rss_bytes()
    with tracker.phase("update"):
        x = torch.ones(25 * MB)  # 100 MB, freed before the nested phase resets the peak
        del x
        with tracker.phase("rollout"):
            time.sleep(0.01)
    assert tracker.peak_bytes["rollout"] - base < 50 * MB
    first_rollout_peak = tracker.peak_bytes["rollout"]
    with tracker.phase("rollout"):
        y = torch.ones(25 * MB)
        del y
        time.sleep(0.01)
    m = tracker.metrics()
    assert tracker.calls == {"rollout": 2, "update": 1}
    assert m["perf/update_seconds"] >= 0.01 and m["perf/rollout_seconds"] >= 0.01
    # rollout: max over both calls; 5% slack for pages the process returned after `base` was read
    assert m["mem/rollout_peak_bytes"] - base >= 95 * MB
    assert m["mem/update_peak_bytes"] - base >= 95 * MB
    assert tracker.last_peak_bytes["rollout"] == tracker.peak_bytes["rollout"] > first_rollout_peak


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_allocated():
    dev = torch.device("cuda")
    pm = PeakMemory(dev)
    assert pm.kind == "cuda_max_allocated"
    pm.reset()
    before = torch.cuda.memory_allocated(dev)
    x = torch.empty(64 * MB, device=dev)  # 256 MB
    assert pm.read() - before >= 256 * MB
    assert pm.read_reserved() >= pm.read()
    del x
    pm.reset()
    assert pm.read() < before + 256 * MB
