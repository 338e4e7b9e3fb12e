"""The benchmark entry points run the real trial path and print their table (no timing asserts:
speed is measured by running them, see docs/benchmarks.md)."""

import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow  # real trials; tests/test_bench_cli.py is the quick check
def test_optimizer_bench_prints_the_table(cache_dir):
    p = subprocess.run([sys.executable, "-m", "harness.bench.optimizers", "--steps", "2", "--rounds", "1",
                        "model=tiny"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in p.stdout.splitlines() if line.startswith("| ") and not line.startswith("| metric")}
    for metric in ("rollout s", "update s", "step s", "rollout tok/s", "optimizer state MB", "peak update MB",
                   "sparsity / step"):
        assert metric in rows, metric
    sgd, adamw, _ = rows["optimizer state MB"]
    assert float(sgd) == 0.0 and float(adamw) > 1.0  # AdamW: 8 bytes x ~148k params


@pytest.mark.slow
def test_malloc_bench_shows_the_updates_page_faults(cache_dir):
    """bench.malloc runs the trial under three allocator settings; each row is per update (harness.bench.probe)."""
    p = subprocess.run([sys.executable, "-m", "harness.bench.malloc", "--steps", "2", "--rounds", "1", "model=tiny"],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    header = next(line for line in p.stdout.splitlines() if line.startswith("| metric"))
    assert [c.strip() for c in header.split("|")[2:-1]] == ["glibc", "bounded", "retain", "retain / glibc"]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in p.stdout.splitlines() if line.startswith("| ") and not line.startswith("| metric")}
    for metric in ("update s", "update minor faults", "update sys s", "peak RSS MB"):
        assert metric in rows, metric
    assert all(float(x) > 0 for x in rows["peak RSS MB"][:3])
