"""GRPO as pure tensor functions: group advantages, clipped policy loss, KL estimators, aggregation.

Shapes: G = group size, P = prompts, B = P*G sequences, T = completion tokens (padded) per
sequence, or N = completion tokens of a batch flattened. The formulas follow verl 0.5 (the paper's
code base): `compute_grpo_outcome_advantage`, `compute_policy_loss_vanilla`, `kl_penalty`, `agg_loss`.
"""

from __future__ import annotations

from typing import Callable

import torch

KL_ESTIMATORS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {}
LOSS_AGG = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")


def group_advantages(rewards: torch.Tensor, group_size: int, norm_by_std: bool = True,
                     eps: float = 1e-6) -> torch.Tensor:
    """Outcome advantage of each sample relative to its group: (r - mean) / (std + eps).

    rewards: [B] with the G samples of a prompt adjacent. std is the unbiased one (torch.std),
    as in verl; a group whose rewards are all equal gets advantage 0.
    """
    r = rewards.view(-1, group_size).float()  # [P, G]
    adv = r - r.mean(dim=1, keepdim=True)  # [P, G]
    if norm_by_std:
        adv = adv / (r.std(dim=1, keepdim=True) + eps)  # [P, G]
    return adv.reshape(-1)  # [B]


def register_kl(name: str):
    def deco(fn):
        KL_ESTIMATORS[name] = fn
        return fn

    return deco


@register_kl("k1")
def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """log(pi/ref): unbiased, high variance, can be negative."""
    return logp - ref_logp  # [N]


@register_kl("k2")
def kl_k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """0.5 * (log(pi/ref))^2."""
    return 0.5 * (logp - ref_logp).square()  # [N]


@register_kl("k3")
def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 ("low_var_kl" in verl): ref/pi - log(ref/pi) - 1 >= 0, clamped to [-10, 10]."""
    log_ratio = (ref_logp - logp).clamp(-20.0, 20.0)  # [N]
    return (log_ratio.exp() - log_ratio - 1.0).clamp(-10.0, 10.0)  # [N]


def clipped_policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                        clip_ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate per token: -min(ratio * A, clip(ratio, 1-eps, 1+eps) * A).

    logp, old_logp, advantages: [N] (the sequence's advantage repeated over its tokens).
    Returns (loss per token [N], clipped indicator [N] as float).
    """
    ratio = (logp - old_logp).clamp(-20.0, 20.0).exp()  # [N]
    unclipped = -advantages * ratio  # [N]
    clipped = -advantages * ratio.clamp(1.0 - clip_ratio, 1.0 + clip_ratio)  # [N]
    return torch.maximum(unclipped, clipped), (clipped > unclipped).float()  # [N], [N]


def aggregate(per_token: torch.Tensor, seq_ids: torch.Tensor, num_seqs: int, mode: str,
              total_tokens: int) -> torch.Tensor:
    """Reduce a per-token loss [N] to a scalar for a (micro-)batch.

    The normalisers are global (whole step), so the sum over micro-batches equals the loss of the
    full batch: token-mean divides by `total_tokens`, the seq-mean modes by `num_seqs`.
    seq_ids: [N] index of each token's sequence within the step (0..num_seqs-1).
    """
    if mode == "token-mean":
        return per_token.sum() / total_tokens
    per_seq = torch.zeros(num_seqs, dtype=per_token.dtype, device=per_token.device)  # [B]
    per_seq = per_seq.index_add(0, seq_ids, per_token)  # [B] token sums
    if mode == "seq-mean-token-sum":
        return per_seq.sum() / num_seqs
    if mode == "seq-mean-token-mean":
        counts = torch.zeros(num_seqs, dtype=per_token.dtype, device=per_token.device)
        counts = counts.index_add(0, seq_ids, torch.ones_like(per_token))  # [B]
        return (per_seq / counts.clamp(min=1)).sum() / num_seqs
    raise ValueError(f"trainer.loss_agg={mode!r}: allowed values are {list(LOSS_AGG)}")


def token_logprobs(hidden: torch.Tensor, lm_head: torch.nn.Module, targets: torch.Tensor,
                   chunk: int = 1024) -> torch.Tensor:
    """log p(target) for each position from hidden states, computing logits only for these rows.

    hidden: [N, H] the hidden states at the positions that predict `targets` [N]. Logits [chunk, V]
    are built a chunk at a time in float32, so memory stays O(chunk * V) rather than O(N * V).
    """
    out = []
    for s in range(0, hidden.shape[0], chunk):
        logits = lm_head(hidden[s:s + chunk]).float()  # [c, V]
        out.append(logits.gather(-1, targets[s:s + chunk, None]).squeeze(-1) - logits.logsumexp(-1))  # [c]
    return torch.cat(out) if out else hidden.new_zeros(0)  # [N]
