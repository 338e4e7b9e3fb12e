"""RLOO's advantage as a pure tensor function: each sample's reward minus the mean of the others'.

REINFORCE Leave-One-Out (Kool et al. 2019; Ahmadian et al. 2024, "Back to Basics"): with G samples
of a prompt, sample i's baseline is the mean reward of the other G - 1 samples, so the baseline is
independent of the sample it judges. Equal to (G / (G - 1)) * (r_i - mean(r)): GRPO's advantage
without the std normalisation, scaled. Shapes as in harness.algo.grpo: [B] with a prompt's G samples adjacent.
"""

from __future__ import annotations

import torch


def leave_one_out_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """r_i - mean_{j != i} r_j for each sample of each group of `group_size` (>= 2): [B]."""
    if group_size < 2:
        raise ValueError(f"leave-one-out needs a group of at least 2 samples, got {group_size}")
    r = rewards.view(-1, group_size).float()  # [P, G]
    others = (r.sum(dim=1, keepdim=True) - r) / (group_size - 1)  # [P, G] mean of the other samples
    return (r - others).reshape(-1)  # [B]
