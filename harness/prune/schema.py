"""The `prune` config node's schema (defaults: conf/prune/default.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import MISSING


@dataclass
class PruneConfig:
    val_accuracy_floor: Optional[float] = MISSING  # stop as diverged below this eval/val_accuracy; null: off
    sweep: Any = MISSING  # a mapping or null: set by the sweeper on each trial it launches: where to report


def register_schema(cs) -> None:
    """Store the schema as `schema/prune` (conf/prune/default.yaml names it in its defaults list)."""
    cs.store(group="schema", name="prune", node=PruneConfig)
