"""python -m pytest -q tests/test_bench_cli.py

The benchmark entry points, quickly: each parses its command line and documents itself (`--help`),
and bench.distributed builds the commands it runs. Running them (real trials, minutes) is
tests/test_bench.py's job (marked slow where it takes minutes).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness.bench import distributed, malloc, optimizers, rollout


@pytest.mark.parametrize("module", [distributed, malloc, optimizers, rollout], ids=lambda m: m.__name__.rsplit(".")[-1])
def test_bench_entry_points_document_themselves(module, capsys):
    name = module.__name__.rsplit(".", 1)[-1]
    with pytest.raises(SystemExit) as e:
        module.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert f"python -m harness.bench.{name}" in out and "--rounds" in out


def test_bench_distributed_runs_one_process_then_torchrun(tmp_path):
    from harness.bench.distributed import COMMON, command

    one = command(1, ["model=tiny"], tmp_path)
    assert one == [sys.executable, "-m", "harness", "model=tiny", *COMMON, f"hydra.run.dir={tmp_path}"]
    two = command(2, ["model=tiny"], tmp_path)
    assert two[:5] == [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    assert two[two.index("-m", 3):][:3] == ["-m", "harness", "distributed=fsdp2"] and two[-1] == f"hydra.run.dir={Path(tmp_path)}"

