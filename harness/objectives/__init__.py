"""Training objectives: what one step's batch is and what its loss is (`trainer.objective`).

    python -m harness                       # trainer=grpo: GRPO (group-normalised advantages)
    python -m harness trainer=rloo          # RLOO: leave-one-out baseline, same clipped loss and KL
    python -m harness trainer=sft           # supervised fine-tuning on the train split's reference answers

The loop (harness.trainer.Trainer) owns everything else: steps, micro-batches, the optimizer step,
diagnostics, evaluation, checkpoints, logging and distribution. An objective is built by its
registry entry from the trainer config and gives the loop three things:

- `batch(trainer, step) -> StepBatch`: this rank's sequences of the step (rollouts and rewards for
  RL, prompt + reference answer for SFT), timing its own phases on `trainer.phases`;
- `loss_state(trainer, sb) -> Any`: per-step tensors the loss needs (the advantages, for RL), and
  `uses_reference(t)`: whether the loss reads the reference policy's log-probs;
- `loss(t, logp, ref_logp, seq_ids, state) -> (per_token [N], parts)`: the per-token loss the loop
  aggregates (`trainer.loss_agg`) and the per-token parts it logs (token means, by metric name);
- `step_metrics(trainer, sb, secs) -> dict`: the objective's own per-step metrics (global numbers).

A new objective is a module that registers a builder here, with its `kind` ("RL" or "SFT": which
side of the report's RL-vs-SFT section it is on); nothing outside this package branches on the
objective's name.
"""

from __future__ import annotations

from typing import Optional

from harness.objectives import rl as _rl  # noqa: F401 - registers grpo and rloo
from harness.objectives import sft as _sft  # noqa: F401 - registers sft
from harness.objectives.base import OBJECTIVES, StepBatch

__all__ = ["OBJECTIVES", "StepBatch", "build_objective", "kind"]


def build_objective(t):
    """The objective named by trainer config `t` (`t.objective`)."""
    return OBJECTIVES.build(t.objective, t)


def kind(name: str) -> Optional[str]:
    """The registered objective's kind, "RL" or "SFT"; None for a name that is not registered."""
    return getattr(OBJECTIVES[name], "kind", None) if name in OBJECTIVES else None

