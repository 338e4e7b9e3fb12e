"""A new objective: plain REINFORCE with the group-mean baseline, `trainer=reinforce`.

The loss per completion token is -A * log pi(token), with A = r - mean(r) over the prompt's group:
the score-function estimator that GRPO refines with a ratio clip, std normalisation and a KL
penalty. It reuses the RL objective's rollout, reward and metrics, and replaces only the loss; with
no KL term it never needs the reference policy's log-probs.
"""

from __future__ import annotations

import torch

from harness.algo.grpo import group_advantages
from harness.objectives.base import OBJECTIVES
from harness.objectives.rl import RLObjective


class Reinforce(RLObjective):
    def uses_reference(self, t) -> bool:
        return False  # no KL term: the loop skips the reference forward

    def loss(self, t, logp: torch.Tensor, ref_logp: torch.Tensor, local_ids: torch.Tensor, adv: torch.Tensor):
        a = adv.to(logp.device)[local_ids]  # [N] the sequence's advantage on each of its tokens
        pg = -a * logp  # [N]
        return pg, {"train/pg_loss": pg}  # the per-token loss, and the parts logged as token means


@OBJECTIVES.register("reinforce")
def build_reinforce(t) -> Reinforce:
    return Reinforce(t, lambda rewards: group_advantages(rewards, t.group_size, norm_by_std=False))


build_reinforce.kind = "RL"  # which side of the report's RL-vs-SFT section it is on
