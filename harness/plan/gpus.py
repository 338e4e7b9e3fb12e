"""Devices the planner knows: memory as torch.cuda reports it (GiB) and dense bf16 peak FLOP/s.

    python -m harness.plan plan.gpu=h100-80gb         # a name below
    python -m harness.plan plan.gpu=h100-80gb plan.gpu_memory_gb=75
    python -m harness.plan plan.gpu=cpu                # this machine's RAM; process RSS predicted

Peak FLOP/s are the vendors' dense (no sparsity) bf16 tensor-core figures (SXM parts where both exist).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

from harness.errors import ConfigError

GIB = 1024 ** 3


@dataclass(frozen=True)
class Device:
    name: str
    memory_bytes: float
    peak_flops: Optional[float]  # None: no figure (CPU): times are not estimated
    kind: str  # cuda | cpu


# name: (memory GiB, bf16 dense TFLOP/s)
GPUS: dict[str, tuple[float, float]] = {
    "h100-80gb": (79.2, 989.0),    # H100 SXM 80 GB
    "h100-pcie": (79.2, 756.0),
    "h200": (139.8, 989.0),        # H200 141 GB
    "a100-40gb": (39.4, 312.0),
    "a100-80gb": (79.2, 312.0),
    "l40s": (44.4, 362.0),
    "l4": (22.0, 121.0),
    "b200": (178.0, 2250.0),
    "mi300x": (191.5, 1307.0),
}


def _host_memory() -> float:
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def resolve(plan: Any) -> Device:
    """The device of `plan.gpu` (auto: this machine's first CUDA GPU, else the CPU)."""
    name = str(plan.gpu)
    allowed = f"allowed values are auto, cpu, {', '.join(GPUS)}"
    if name == "auto":
        import torch

        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            known = _match(p.name, p.total_memory)
            flops = GPUS[known][1] * 1e12 if known else None
            dev = Device(known or p.name, float(p.total_memory), flops, "cuda")
        else:
            dev = Device("cpu", _host_memory(), None, "cpu")
    elif name == "cpu":
        dev = Device("cpu", _host_memory(), None, "cpu")
    elif name in GPUS:
        mem, tflops = GPUS[name]
        dev = Device(name, mem * GIB, tflops * 1e12, "cuda")
    else:
        raise ConfigError(f"plan.gpu={name!r}: {allowed} (or plan.gpu_memory_gb=N with one of them)")
    if plan.gpu_memory_gb is not None:
        if not plan.gpu_memory_gb > 0:
            raise ConfigError(f"plan.gpu_memory_gb={plan.gpu_memory_gb!r}: must be > 0 (GiB per device)")
        dev = Device(dev.name, float(plan.gpu_memory_gb) * GIB, dev.peak_flops, dev.kind)
    return dev


def _match(cuda_name: str, total: int) -> Optional[str]:
    """A table name for a torch.cuda device name ("NVIDIA H100 80GB HBM3"), or None."""
    n = cuda_name.lower()
    for key in GPUS:
        model = key.split("-")[0]
        if model in n.replace(" ", ""):
            same = [k for k in GPUS if k.split("-")[0] == model]
            return min(same, key=lambda k: abs(GPUS[k][0] * GIB - total))
    return None
