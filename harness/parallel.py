"""How a trial is spread over processes (`distributed.strategy`), picked by name from a registry.

    python -m harness                                                 # none: one process, one device
    torchrun --nproc-per-node 2 -m harness model=tiny distributed=fsdp2  # fsdp2: the model sharded over the ranks

A strategy's `setup(cfg_dist, device)` gives a `Parallel`: the process group view the trainer
reduces through (`dist`), how the model is wrapped, how checkpoints are written, and the device
this rank computes on. Only the rank with `dist.is_main` writes the trial's files and W&B.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from harness.checkpoint import TorchCheckpoint
from harness.errors import check
from harness.registry import Registry

STRATEGIES: Registry = Registry("distributed.strategy")


class OneProcess:
    """The `dist` of a one-process trial: every reduction is the identity."""

    rank, world_size, is_main = 0, 1, True

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        return list(values)

    def all_gather_object(self, obj: Any) -> list[Any]:
        return [obj]

    def agree(self, obj: Any) -> Any:
        return obj

    def barrier(self) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class Parallel:
    """What a strategy gives the trial. The defaults are the one-process ones."""

    dist: Any
    device: torch.device
    wrap: Callable[[torch.nn.Module], torch.nn.Module]  # applied once to the loaded model
    checkpoint: Callable[[Path], Any]  # trial folder -> an object with save(trainer) / load(trainer)

    def final_sparsity(self, initial: Any, model: torch.nn.Module, rank_energy: float, block: int) -> dict:
        """The update-sparsity measurement at the end (harness.measure.sparsity)."""
        from harness.measure.sparsity import update_sparsity

        return update_sparsity(initial, dict(model.named_parameters()), rank_energy=rank_energy,
                               block=block)

    def memory_report(self, trainer: Any) -> dict:
        """Extra memory keys (per-rank peaks in a distributed trial)."""
        return {}

    def failure_reason(self, error: BaseException, folder: Path) -> str:
        """The one-line reason recorded for a failed trial."""
        return f"{type(error).__name__}: {error}".splitlines()[0][:500]

    def generation(self, model: torch.nn.Module) -> Any:
        """The context rollouts and eval generate in (FSDP2 gathers the parameters once per call)."""
        return contextlib.nullcontext()

    reference: Optional[torch.nn.Module] = None  # a separate reference model (sharded); None: the trainer keeps the initial weights

    def close(self) -> None:
        self.dist.close()


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


import harness.distributed.strategy  # noqa: E402,F401 - registers distributed=fsdp2
