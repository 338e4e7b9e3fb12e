#!/usr/bin/env bash
# bash .ci/gpu_wheels.sh    here (with network): the wheels a trial needs beyond the GPU image, into .whl/ (ignored)
# The lent GPU machine has Python 3.12, torch, transformers, numpy, pandas, pyarrow, matplotlib, tqdm,
# cloudpickle, safetensors, tokenizers and accelerate, and no network. What a `logger=none` trial needs
# besides (tests/test_gpu_ready.py finds it with the rest of this environment hidden) travels with the
# working tree as these pure-Python wheels; .ci/gpu_check.sh installs them there with
# `pip install --no-index --no-deps --target`. antlr4 4.9.3 (hydra's and math-verify's parser runtime)
# is on PyPI as a source archive only: it is built into a py3-none-any wheel here.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DEST=.whl
WHEELS=(
  hydra-core==1.3.8            # the config system
  omegaconf==2.3.1             # as here (hydra-core 1.3.8 allows >=2.2,<2.4)
  math-verify==0.9.0           # task=math's verifier (harness.tasks.verify)
  latex2sympy2_extended==1.11.0  # math-verify's LaTeX parser
)
rm -rf "$DEST" && mkdir -p "$DEST"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$DEST" "${WHEELS[@]}"
"$PY" -m pip wheel -q --no-deps -w "$DEST" antlr4-python3-runtime==4.9.3
for w in "$DEST"/*.whl; do
  case "$w" in *-py3-none-any.whl|*-py2.py3-none-any.whl) ;; *) echo "error: $w is not a pure-Python wheel" >&2; exit 1 ;; esac
done
ls -l "$DEST"
"$PY" - "$DEST" <<'EOF'
import sys
from pathlib import Path
import subprocess
files = sorted(Path(sys.argv[1]).glob("*.whl"))
total = sum(f.stat().st_size for f in files)
print(f"wheels: {len(files)} files, {total / 2**20:.2f} MiB in {sys.argv[1]}/")
# what travels to the GPU machine: the tracked and the untracked-not-ignored files, plus .whl/
tree = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], capture_output=True, text=True).stdout
size = sum(Path(f).stat().st_size for f in tree.split("\0") if f and Path(f).is_file())
print(f"working tree + {sys.argv[1]}/: {(size + total) / 2**20:.2f} MiB (the GPU machine takes at most 64 MiB)")
EOF
