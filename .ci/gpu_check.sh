#!/usr/bin/env bash
# bash .ci/gpu_check.sh OUTDIR [harness.bench.gpu options]     the GPU check, in one command, on a bare CUDA machine
#
# For the lent GPU machine (Python 3.12, torch, transformers, numpy, ...; no hydra, omegaconf, wandb,
# optuna, submitit, math-verify, gguf, vllm; no network). Before sending the working tree there:
#   bash .ci/gpu_wheels.sh          # here, with network: the missing pure-Python wheels into .whl/ (< 1 MiB)
# and send the ignored folder .whl/ with the tree (the device tool: carry [".whl"]); nothing else
# ignored is needed (no .venv, no model: the check builds random-weight models and the tiny model).
# There, from the repository root:
#   bash .ci/gpu_check.sh "$OUT"    # ~6 minutes on one H100 (each part has its own limit)
# It installs .whl/*.whl with `pip install --no-index --no-deps --target` into a temporary folder, puts
# it on PYTHONPATH, runs `python -m harness.bench.gpu`, and writes into OUTDIR: gpu.md (the table),
# gpu.json (every figure, the machine and date), gpu_check.log (everything printed) and env.txt.
# On a CPU, the same script with `--device cpu --small` (tests/test_gpu_ready.py runs it so).
set -euo pipefail
OUT=${1:?usage: bash .ci/gpu_check.sh OUTDIR [harness.bench.gpu options]}
shift
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
SITE=$(mktemp -d "${TMPDIR:-/tmp}/harness-gpu-site.XXXXXX")
export HARNESS_CACHE=${HARNESS_CACHE:-$(mktemp -d "${TMPDIR:-/tmp}/harness-gpu-cache.XXXXXX")}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
ls .whl/*.whl > /dev/null 2>&1 || { echo "error: no .whl/*.whl: run bash .ci/gpu_wheels.sh and send .whl/ with the tree" >&2; exit 2; }
{
  date -u +"%Y-%m-%d %H:%M:%S UTC"
  if "$PY" -m pip --version > /dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --target "$SITE" .whl/*.whl
  else  # no pip there: a pure-Python wheel unpacked is installed
    for w in .whl/*.whl; do "$PY" -m zipfile -e "$w" "$SITE"; done
  fi
  echo "installed $(ls .whl/*.whl | wc -l) wheels into $SITE"
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  "$PY" -c "import sys, torch, transformers, hydra, omegaconf; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__, 'hydra', hydra.__version__); print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device')" | tee "$OUT/env.txt"
  "$PY" -m harness.bench.gpu --out "$OUT" --work "$(mktemp -d "${TMPDIR:-/tmp}/harness-gpu-work.XXXXXX")" "$@"
} 2>&1 | tee "$OUT/gpu_check.log"
