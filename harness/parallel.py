"""How a trial is spread over processes (`distributed.strategy`), picked by name from a registry.

    python -m harness                                                 # none: one process, one device
    torchrun --nproc-per-node 2 -m harness model=tiny distributed=fsdp2  # fsdp2: the model sharded over the ranks

Layers read one way: this module registers `none` and imports the strategies (`fsdp2`:
harness.distributed.strategy), which import what they share from harness.distributed.base.

A strategy's `setup(cfg_dist, device)` gives a `Parallel`: the process group view the trainer
reduces through (`dist`), how the model is wrapped, how checkpoints are written, and the device
this rank computes on. Only the rank with `dist.is_main` writes the trial's files and W&B.
"""

from __future__ import annotations

from typing import Any

import torch

import harness.distributed.strategy  # noqa: F401 - registers distributed=fsdp2
from harness.checkpoint import TorchCheckpoint
from harness.distributed.base import STRATEGIES, OneProcess, Parallel
from harness.errors import check

__all__ = ["STRATEGIES", "OneProcess", "Parallel", "setup"]


def _check_one_process(cfg: Any) -> None:
    from harness.distributed.env import read_launch

    launch = read_launch()
    check(launch.world_size == 1, "distributed.strategy", cfg.distributed.strategy,
          f"{launch.source} started {launch.world_size} processes: use distributed=fsdp2 (or start one process)")


@STRATEGIES.register("none", validate=_check_one_process)
def _none(cfg: Any, device: torch.device, **_: Any) -> Parallel:
    return Parallel(OneProcess(), device, lambda model: model, TorchCheckpoint)


def setup(cfg_dist: Any, device: torch.device, **kwargs: Any) -> Parallel:
    return STRATEGIES.build(cfg_dist.strategy, cfg_dist, device, **kwargs)

