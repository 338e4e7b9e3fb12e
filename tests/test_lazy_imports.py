"""A trial imports only what it uses: with logger=none, the default (grid) sweeper and no SLURM, none of
wandb, optuna, submitit or vllm is imported (the GPU image has none of them). Checked in fresh
interpreters through sys.modules.

    python -m pytest -q tests/test_lazy_imports.py     # ~1 min (tiny-model trials)
"""

from __future__ import annotations

import pytest
import json
import subprocess
import sys

from tests.conftest import ROOT

UNUSED = ("wandb", "optuna", "submitit", "vllm", "gguf")
TINY = ["model=tiny", "threads=1", "trainer.steps=1", "task.num_val=4", "task.num_eval=4", "trainer.eval_every=0"]
# `python -m harness ARGS`, then the top-level names in sys.modules (also when Hydra exits) into a file
RUN = ("import json, runpy, sys\nout = sys.argv.pop(1)\ntry:\n    runpy.run_module('harness', run_name='__main__', alter_sys=True)\n"
       "finally:\n    json.dump(sorted({m.split('.')[0] for m in sys.modules}), open(out, 'w'))\n")


def _modules(tmp_path, name: str, *args: str) -> set[str]:
    out = tmp_path / f"{name}.json"
    p = subprocess.run([sys.executable, "-c", RUN, str(out), *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return set(json.loads(out.read_text()))


@pytest.mark.slow  # real trials in fresh interpreters
def test_a_logger_none_trial_and_grid_import_no_unused_package(cache_dir, tmp_path):
    one = _modules(tmp_path, "one", *TINY, "logger=none", f"hydra.run.dir={tmp_path}/one")
    assert {"torch", "transformers", "hydra", "harness"} <= one  # the record is real
    assert not one & set(UNUSED), sorted(one & set(UNUSED))
    grid = _modules(tmp_path, "grid", "-m", *TINY, "logger=none", "seed=0,1", f"hydra.sweep.dir={tmp_path}/grid")
    assert len(list((tmp_path / "grid").rglob("result.json"))) == 2  # both trials ran, the report was written
    assert not grid & set(UNUSED), sorted(grid & set(UNUSED))


@pytest.mark.slow  # real trials in fresh interpreters
def test_each_package_comes_in_with_the_config_that_uses_it(cache_dir, tmp_path):
    wandb = _modules(tmp_path, "wandb", *TINY, "logger=wandb", "logger.wandb.mode=disabled", f"hydra.run.dir={tmp_path}/w")
    assert "wandb" in wandb and "optuna" not in wandb
    optuna = _modules(tmp_path, "optuna", "-m", "+sweeps=search_sgd", *TINY, "logger=none", "hydra.sweeper.n_trials=1",
                      f"hydra.sweep.dir={tmp_path}/o")
    assert "optuna" in optuna and "wandb" not in optuna


def test_importing_the_harness_imports_no_optional_package():
    code = ("import json, sys\nimport harness, harness.config, harness.preflight, harness.validate, harness.trial, "
            "harness.models, harness.plan.trial, harness.bench.gpu\nfrom harness.config import register\nregister()\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    mods = set(json.loads(p.stdout.splitlines()[-1]))
    assert not mods & set(UNUSED), sorted(mods & set(UNUSED))
