"""A grid sweep's trials as override lists: params x each arm x the command line, arms interleaved.

    python -m harness -m +sweeps=sgd_vs_adamw      # the grid sweeper runs these trials
    python -m harness.plan -m +sweeps=sgd_vs_adamw # the planner plans the same ones

Shared by the `grid` sweeper (harness.sweepers.grid) and the planner (harness.plan.sweep): it sits
below both, and imports nothing of the harness, so the sweeper -> SLURM checks -> planner chain
never leads back to the sweeper.
"""

from __future__ import annotations

from typing import Any, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser


def as_override_value(v: Any) -> str:
    """A sweep file's value as it would be written on the command line (a list: `a,b,c`)."""
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    return str(v)


def expand(common: list[str], arms: list[dict[str, Any]], arguments: list[str],
           parser: Optional[OverridesParser] = None) -> list[list[str]]:
    """Every trial's override list: the union over arms of (common x arm x command line).

    Later sources win on the same key: an arm's value replaces `common`'s, the command line both.
    Trials are interleaved across arms (arm 1's first, arm 2's first, ..., arm 1's second, ...), so
    a sweep stopped part-way has results for every arm, not all of the first arm's and none of the last.
    """
    parser = parser or OverridesParser.create()
    per_arm: list[list[list[str]]] = []
    for arm in arms or [{}]:
        arm_args = [f"{k}={as_override_value(v)}" for k, v in arm.items()]
        overrides = parser.parse_overrides(list(common) + arm_args + list(arguments))
        per_arm.append([job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch])
    jobs: list[list[str]] = []
    for i in range(max(len(a) for a in per_arm)):
        for arm_jobs in per_arm:
            if i < len(arm_jobs) and arm_jobs[i] not in jobs:
                jobs.append(arm_jobs[i])
    return jobs
