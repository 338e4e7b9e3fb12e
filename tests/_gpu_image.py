"""The GPU machine's bare image, imitated on this machine: an interpreter that has only what the image has.

That image has Python 3.12 with torch, transformers and the packages in IMAGE (and what they
depend on), and none of the harness's other dependencies: those travel as wheels in .whl/
(.ci/gpu_wheels.sh). `image_python(folder)` makes a virtual environment (no pip, no system
packages) whose site-packages links only those distributions of this environment, so the
project's own environment is hidden: anything else must come from PYTHONPATH (`image_env`), e.g.
a folder the wheels were installed into with `pip install --target`. Child processes started with
sys.executable (torchrun ranks, the verifier worker, the benchmark's trials) see the same.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What the lent GPU image holds besides the standard library (/work/shared/ENVIRONMENT.md).
IMAGE = ("torch", "transformers", "tokenizers", "safetensors", "accelerate", "numpy", "pandas", "pyarrow",
         "matplotlib", "tqdm", "cloudpickle", "pytest", "sympy", "peft")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_distributions() -> list[metadata.Distribution]:
    """The installed distributions among IMAGE and everything they require (extras left out)."""
    seen: dict[str, metadata.Distribution] = {}
    todo = [_norm(r) for r in IMAGE]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen[name] = dist
        for req in dist.requires or []:
            if "extra ==" not in req:
                todo.append(_norm(re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0]))
    return list(seen.values())


def image_python(folder: str | os.PathLike) -> Path:
    """A venv in `folder` with only the image's distributions (linked from this environment); its python."""
    folder = Path(folder)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    site = folder / Path(sysconfig.get_path("purelib")).relative_to(sys.prefix)
    here = Path(sysconfig.get_path("purelib"))
    for dist in image_distributions():
        for f in dist.files or []:
            first = f.parts[0]
            src, dst = here / first, site / first
            if first in ("..", "__pycache__") or not src.exists() or dst.exists() or dst.is_symlink():
                continue
            dst.symlink_to(src, target_is_directory=src.is_dir())
    return folder / "bin" / "python"


def image_env(*paths: str | os.PathLike) -> dict[str, str]:
    """os.environ for the image's python: `paths` (e.g. the wheels' install folder) and the repository on
    PYTHONPATH, offline, the project's venv out of PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), str(ROOT)])
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env
