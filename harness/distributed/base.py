"""What every distribution strategy gives the trial: `Parallel` (its defaults are the one-process
ones), `OneProcess` (the `dist` of a one-process trial) and the STRATEGIES registry they register in.

    python -m harness distributed=none                                   # harness.parallel registers `none`
    torchrun --nproc-per-node 2 -m harness model=tiny distributed=fsdp2  # harness.distributed.strategy: `fsdp2`

The lowest layer of the two: strategies import it; `harness.parallel` (what the trial calls) imports
the strategies, never the other way round.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

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

    def failure_reason(self, error: BaseException, folder: Path, step: Optional[int] = None) -> str:
        """The one-line reason recorded for a failed trial (`step`: the step in progress, if any)."""
        return f"{type(error).__name__}: {error}".splitlines()[0][:500]

    def generation(self, model: torch.nn.Module) -> Any:
        """The context rollouts and eval generate in (FSDP2 gathers the parameters once per call)."""
        return contextlib.nullcontext()

    reference: Optional[torch.nn.Module] = None  # a separate reference model (sharded); None: the trainer keeps the initial weights

    def close(self) -> None:
        self.dist.close()
