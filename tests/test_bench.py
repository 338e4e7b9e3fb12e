"""The benchmark entry points run the real trial path and print their table (no timing asserts:
speed is measured by running them, see README)."""

import subprocess
import sys

from tests.conftest import ROOT


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
