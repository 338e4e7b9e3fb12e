"""`python -m harness.bench.gpu --device cpu --small`: the GPU check's code, run here with small shapes so it
cannot rot before a GPU is lent.

    python -m pytest -q -s tests/test_bench_gpu.py     # ~3 min on a 2-core machine
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def _bench(out, *args: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.bench.gpu", "--device", "cpu", "--small", "--out", str(out),
                           "--work", str(out / "work"), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow  # the whole bench, several processes
def test_small_cpu_run_prints_the_table_with_planner_ratios(cache_dir, tmp_path):
    p = _bench(tmp_path)
    print(p.stdout)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert list(report["parts"]) == ["memory", "speed", "fsdp2", "bf16"]
    assert all(part["status"] == "ok" for part in report["parts"].values())
    mem = report["parts"]["memory"]
    assert mem["state_bytes_per_param_adamw_minus_sgd"] == pytest.approx(8.0, abs=0.01)  # AdamW's two fp32 moments
    assert mem["sgd"]["params/initial_bf16_grid_fraction"] == 1.0  # random weights start on the bf16 grid
    rows = re.findall(r"^\| (sgd|adamw) \| (rollout|update: [a-z/ ]+|trial peak) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$",
                      p.stdout, re.M)
    assert len(rows) == 6, p.stdout  # every phase has measured, planned and the ratio filled in
    for _, _, measured, planned, ratio in rows:
        assert float(ratio) == pytest.approx(float(measured) / float(planned), abs=0.02)
        assert 0.2 < float(ratio) < 5  # the planner is in the right range of the measured peak
    speed = report["parts"]["speed"]["tokens_per_s"]
    assert set(speed) == {"2", "8"} and all(v > 0 for v in speed.values())
    f = report["parts"]["fsdp2"]
    assert f["backend"] == "gloo" and f["ok"] and f["reward_curve_equal"] and f["weights_max_abs_diff"] <= 1e-6
    assert report["parts"]["bf16"]["losses_finite"]
    assert (tmp_path / "gpu.md").read_text() == p.stdout[p.stdout.index("# harness.bench.gpu"):]


@pytest.mark.slow  # the whole bench, several processes
def test_a_part_over_its_limit_is_reported_and_the_others_still_run(cache_dir, tmp_path):
    p = _bench(tmp_path, "--parts", "fsdp2,bf16", "--limit", "fsdp2=3")
    assert p.returncode == 1  # not every part ended ok
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert report["parts"]["fsdp2"]["status"] == "timed out after 3 s"
    assert report["parts"]["fsdp2"]["seconds"] < 30  # killed with its trials, not waited for
    assert report["parts"]["bf16"]["status"] == "ok"
    assert "| fsdp2 | timed out after 3 s |" in p.stdout


def test_an_unknown_part_fails_before_any_work(tmp_path):
    p = _bench(tmp_path, "--parts", "memory,warp", timeout=120)
    assert p.returncode != 0 and "harness.bench.gpu part='warp': allowed values are bf16, fsdp2, memory, speed" in p.stderr
    assert not (tmp_path / "gpu.json").exists()
