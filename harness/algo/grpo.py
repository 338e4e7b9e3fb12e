"""GRPO as pure tensor functions: group advantages, clipped policy loss, KL estimators, aggregation.

Shapes: G = group size, P = prompts, B = P*G sequences, T = completion tokens (padded) per
sequence, or N = completion tokens of a batch flattened. The formulas follow verl 0.5 (the paper's
code base): `compute_grpo_outcome_advantage`, `compute_policy_loss_vanilla`, `kl_penalty`, `agg_loss`.
"""

from __future__ import annotations

import torch

from harness.registry import Registry

KL_ESTIMATORS: Registry = Registry("trainer.kl_estimator")  # (logp [N], ref_logp [N]) -> per-token KL [N]
LOSS_AGG: Registry = Registry("trainer.loss_agg")  # (per_token [N], seq_ids [N], num_seqs, total_tokens) -> scalar


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


@KL_ESTIMATORS.register("k1")
def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """log(pi/ref): unbiased, high variance, can be negative."""
    return logp - ref_logp  # [N]


@KL_ESTIMATORS.register("k2")
def kl_k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """0.5 * (log(pi/ref))^2."""
    return 0.5 * (logp - ref_logp).square()  # [N]


@KL_ESTIMATORS.register("k3")
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
    """Reduce a per-token loss [N] to a scalar for a (micro-)batch, by the aggregation named `mode`.

    The normalisers are global (whole step, all ranks), so the sum over micro-batches and ranks
    equals the loss of the full batch: token-mean divides by `total_tokens`, the seq-mean modes by
    `num_seqs`. seq_ids: [N] index of each token's sequence within the step (0..num_seqs-1).
    """
    return LOSS_AGG[mode](per_token, seq_ids, num_seqs, total_tokens)


@LOSS_AGG.register("token-mean")
def token_mean(per_token: torch.Tensor, seq_ids: torch.Tensor, num_seqs: int, total_tokens: int) -> torch.Tensor:
    return per_token.sum() / total_tokens


def _per_seq(values: torch.Tensor, seq_ids: torch.Tensor, num_seqs: int) -> torch.Tensor:
    out = torch.zeros(num_seqs, dtype=values.dtype, device=values.device)  # [B]
    return out.index_add(0, seq_ids, values)  # [B] sums per sequence


@LOSS_AGG.register("seq-mean-token-sum")
def seq_mean_token_sum(per_token: torch.Tensor, seq_ids: torch.Tensor, num_seqs: int, total_tokens: int) -> torch.Tensor:
    return _per_seq(per_token, seq_ids, num_seqs).sum() / num_seqs


@LOSS_AGG.register("seq-mean-token-mean")
def seq_mean_token_mean(per_token: torch.Tensor, seq_ids: torch.Tensor, num_seqs: int, total_tokens: int) -> torch.Tensor:
    counts = _per_seq(torch.ones_like(per_token), seq_ids, num_seqs)  # [B] tokens per sequence
    return (_per_seq(per_token, seq_ids, num_seqs) / counts.clamp(min=1)).sum() / num_seqs


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
