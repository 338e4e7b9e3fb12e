"""Ready for the lent GPU machine: the trial path runs from the wheels in .whl/ alone, on an interpreter that
has only what that machine's image has (tests/_gpu_image.py), and .ci/gpu_check.sh runs there.

    python -m pytest -q -s tests/test_gpu_ready.py     # ~2 min; downloads .whl/ first if it is missing

The wheels are installed as .ci/gpu_check.sh installs them there (`pip install --no-index --no-deps
--target`); the project's own environment is hidden.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests._gpu_image import image_env, image_python
from tests.conftest import ROOT

WHL = ROOT / ".whl"
MAX_MIB = 40  # the tree may be at most 64 MiB with them


@pytest.fixture(scope="module")
def wheels() -> list[Path]:
    if not list(WHL.glob("*.whl")):  # pip downloads from PyPI
        p = subprocess.run(["bash", ".ci/gpu_wheels.sh"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                           env={**os.environ, "PYTHON": sys.executable})
        assert p.returncode == 0, p.stderr[-3000:]
    return sorted(WHL.glob("*.whl"))


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    return image_python(tmp_path_factory.mktemp("gpu-image") / "venv")


@pytest.fixture(scope="module")
def site(wheels, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("wheels") / "site"
    p = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(target),
                        *map(str, wheels)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return target


def test_wheels_are_pure_python_and_small(wheels):
    names = [w.name for w in wheels]
    assert all(n.endswith(("-py3-none-any.whl", "-py2.py3-none-any.whl")) for n in names), names
    for pkg in ("hydra_core", "omegaconf", "antlr4_python3_runtime", "math_verify", "latex2sympy2_extended"):
        assert any(n.startswith(pkg + "-") for n in names), (pkg, names)
    total = sum(w.stat().st_size for w in wheels) / 2 ** 20
    print(f"\n.whl/: {len(wheels)} wheels, {total:.2f} MiB: {', '.join(names)}")
    assert total < MAX_MIB


def test_working_tree_and_wheels_fit_what_the_gpu_machine_takes(wheels):
    """What travels there: tracked and untracked-not-ignored files, plus .whl/; at most 64 MiB."""
    files = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\0")
    tree = sum((ROOT / f).stat().st_size for f in files if f and (ROOT / f).is_file())
    total = (tree + sum(w.stat().st_size for w in wheels)) / 2 ** 20
    print(f"\nworking tree {tree / 2 ** 20:.2f} MiB + .whl/ = {total:.2f} MiB (limit 64 MiB)")
    assert total < 64


def _run(image: Path, site: Path | None, *args: str, timeout: int = 600, **env: str) -> subprocess.CompletedProcess:
    e = {**image_env(*([site] if site else [])), **env}
    return subprocess.run([str(image), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=e)


def test_the_image_lacks_what_the_wheels_bring(image):
    p = _run(image, None, "-c", "import torch, transformers, numpy, pandas, pyarrow, tokenizers, safetensors, accelerate")
    assert p.returncode == 0, p.stderr[-2000:]
    for mod in ("hydra", "omegaconf", "antlr4", "math_verify", "wandb", "optuna", "submitit", "vllm", "gguf"):
        p = _run(image, None, "-c", f"import {mod}")
        assert p.returncode != 0 and "ModuleNotFoundError" in p.stderr, mod
    p = _run(image, None, "-m", "harness", "model=tiny")
    assert p.returncode != 0 and "No module named 'hydra'" in p.stderr


def test_the_trial_path_imports_from_the_wheels_alone(image, site):
    code = ("import harness.__main__, harness.trial, harness.bench.gpu, harness.tasks.math as m, hydra, omegaconf, antlr4, math_verify\n"
            "assert m.verify_boxed('so \\\\boxed{\\\\frac{1}{2}}', '0.5') == 1.0\n"
            "print(hydra.__file__, omegaconf.__file__, antlr4.__file__, math_verify.__file__)")
    p = _run(image, site, "-c", code)
    assert p.returncode == 0, p.stderr[-3000:]
    assert all(f.startswith(str(site)) for f in p.stdout.split()), p.stdout


@pytest.mark.slow  # a real trial in an imitated GPU image
def test_a_logger_none_trial_runs_on_the_image(image, site, tmp_path, cache_dir):
    p = _run(image, site, "-m", "harness", "model=tiny", "logger=none", "threads=1", "trainer.steps=2", "task.num_val=8",
             "task.num_eval=8", f"hydra.run.dir={tmp_path}", HARNESS_CACHE=cache_dir)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads((tmp_path / "result.json").read_text())
    assert r["status"] == "ok" and r["train/steps_done"] == 2
    assert r["provenance"]["versions"].get("hydra") == "1.3.8" and "wandb" not in r["provenance"]["versions"]


@pytest.mark.slow  # a real trial in an imitated GPU image
def test_gpu_check_script_runs_on_the_image(image, wheels, tmp_path, cache_dir):
    """The script as the GPU machine runs it (installing .whl/ itself), on one part of the CPU run."""
    out = tmp_path / "out"
    p = subprocess.run(["bash", ".ci/gpu_check.sh", str(out), "--device", "cpu", "--small", "--parts", "bf16"], cwd=ROOT,
                       capture_output=True, text=True, timeout=600,
                       env={**image_env(), "PYTHON": str(image), "HARNESS_CACHE": cache_dir})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert sorted(f.name for f in out.iterdir()) == ["env.txt", "gpu.json", "gpu.md", "gpu_check.log"]
    report = json.loads((out / "gpu.json").read_text())
    assert report["parts"]["bf16"]["status"] == "ok" and report["parts"]["bf16"]["losses_finite"]
    assert "| bf16 trial (model=tiny model.dtype=bfloat16, 3 steps) | ok:" in (out / "gpu.md").read_text()
    assert "no CUDA device" in (out / "env.txt").read_text()
