import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> str:
    """One model cache for the whole test session (the tiny model is built once, ~15 s)."""
    d = os.environ.get("HARNESS_TEST_CACHE") or str(tmp_path_factory.mktemp("harness-cache"))
    os.environ["HARNESS_CACHE"] = d
    return d


def run_harness(*args: str, cwd=ROOT, timeout=600, env=None) -> subprocess.CompletedProcess:
    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=e)
