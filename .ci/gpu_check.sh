#!/usr/bin/env bash
# bash .ci/gpu_check.sh   on a machine with CUDA: the GPU checks (FSDP2 on NCCL vs one process, a bf16 vLLM trial
# with sleep mode), printing their figures. Needs the GPU build of vLLM for the second (pip install -e '.[vllm]').
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0), torch.__version__)"
"$PY" -m pytest -q -s -m gpu tests/test_gpu.py tests/test_memory.py
