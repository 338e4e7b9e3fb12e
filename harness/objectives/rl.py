"""RL objectives: sample G completions per prompt, score them with the task's verifier, and minimise
the clipped policy loss plus a KL penalty to the initial policy (verl 0.5, the paper's code base).

    python -m harness                 # grpo: advantage (r - mean) / (std + eps) within each group
    python -m harness trainer=rloo    # rloo: advantage r - mean of the group's other rewards

The two differ only in the advantage (harness.algo.grpo.group_advantages,
harness.algo.rloo.leave_one_out_advantages); rollouts, the loss, the KL and every metric are shared.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from harness.algo.grpo import KL_ESTIMATORS, clipped_policy_loss, group_advantages
from harness.algo.logprobs import GroupBatch
from harness.algo.rloo import leave_one_out_advantages
from harness.objectives.base import OBJECTIVES, StepBatch
from harness.rollout.base import Sampling


def sample_seed(seed: int, step: int, index: int) -> int:
    """The sampling seed of the prompt at position `index` of the data stream, at `step`."""
    return (seed * 1_000_003 + step * 10_007 + index) % (2**63 - 1)


class RLObjective:
    """Rollout -> verifiable reward -> advantages -> clipped policy loss + KL (per token)."""

    def __init__(self, t: Any, advantages: Callable[[torch.Tensor], torch.Tensor]):
        self.t = t
        self.group_size = t.group_size
        self.advantages = advantages  # rewards [B] -> advantages [B]
        self.kl_fn = KL_ESTIMATORS[t.kl_estimator]

    def uses_reference(self, t: Any) -> bool:
        return t.kl_coef > 0

    def batch(self, tr: Any, step: int) -> StepBatch:
        with tr.phases.phase("rollout"):
            sb = self.rollout(tr, step)
        with tr.phases.phase("reward"):
            sb.rewards = self.score(tr, sb)
        return sb

    def rollout(self, tr: Any, step: int) -> StepBatch:
        t = self.t
        indexed = tr.step_problems(step)
        problems = [p for _, p in indexed]
        prompts = [tr.encode(p) for p in problems]
        sampling = Sampling(n=t.group_size, max_new_tokens=t.max_new_tokens, temperature=t.temperature,
                            top_p=t.top_p, min_new_tokens=t.min_new_tokens,
                            seeds=tuple(sample_seed(tr.seed, step, k) for k, _ in indexed))
        with tr.generation(tr.model):
            gens = tr.rollout.generate(prompts, sampling)
        flat = [g for group in gens for g in group]
        completions = [g.completion_ids or [tr.tok.eos_token_id] for g in flat]
        texts = tr.tok.batch_decode(completions, skip_special_tokens=True)
        return StepBatch(problems, GroupBatch(prompts, completions, t.group_size), texts, [g.finished for g in flat])

    def score(self, tr: Any, sb: StepBatch) -> torch.Tensor:
        answers = [p.answer for p in sb.problems for _ in range(self.t.group_size)]
        scores, stats = tr.verifier(sb.texts, answers)
        tr.verify_errors += stats.errors
        tr.verify_timeouts += stats.timeouts
        self._last_verify = stats
        return torch.tensor(scores, dtype=torch.float32)  # [B] this rank's sequences

    def loss_state(self, tr: Any, sb: StepBatch) -> torch.Tensor:
        return self.advantages(sb.rewards)  # [B]

    def loss(self, t: Any, logp: torch.Tensor, ref_logp: torch.Tensor, local_ids: torch.Tensor,
             adv: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        a = adv.to(logp.device)[local_ids]  # [N] the sequence's advantage on each of its tokens
        pg, clipped = clipped_policy_loss(logp, logp.detach(), a, t.clip_ratio)  # [N], [N]
        kl = self.kl_fn(logp, ref_logp)  # [N]
        per_token = pg + t.kl_coef * kl  # [N]
        return per_token, {"train/pg_loss": pg, "train/kl": kl, "train/clip_frac": clipped}

    def update_metrics(self, tr: Any, adv: torch.Tensor, num_seqs: int) -> dict[str, Any]:
        (adv_abs,) = tr.dist.all_reduce_sum([adv.abs().sum().item()])
        return {"train/advantage_abs_mean": adv_abs / num_seqs}

    def step_metrics(self, tr: Any, sb: StepBatch, secs: dict[str, float]) -> dict[str, Any]:
        G, rewards = self.t.group_size, sb.rewards
        r = rewards.view(-1, G)
        (r_sum, r_sq, n, equal, tok, fin, errs, touts) = tr.dist.all_reduce_sum([
            rewards.sum().item(), rewards.square().sum().item(), float(rewards.numel()),
            (r.max(dim=1).values == r.min(dim=1).values).float().sum().item(), float(sb.batch.num_tokens),
            float(sum(sb.finished)), float(self._last_verify.errors), float(self._last_verify.timeouts)])
        mean = r_sum / n
        return {"train/reward_mean": mean,
                "train/reward_std": math.sqrt(max(0.0, (r_sq - n * mean * mean) / max(1.0, n - 1))),
                "train/groups_all_equal": equal / (n / G),
                "train/finished_frac": fin / n,
                "train/verify_errors": int(errs), "train/verify_timeouts": int(touts),
                "perf/rollout_s": secs["rollout"], "perf/reward_s": secs["reward"],
                "perf/rollout_tokens_per_s": tok / max(secs["rollout"], 1e-9),
                "mem/peak_bytes_rollout": tr.phases.last_peak_bytes.get("rollout")}

    def sample_rows(self, sb: StepBatch, limit: int) -> list[tuple]:
        G = self.t.group_size
        return [(sb.problems[i // G].question, sb.problems[i // G].answer, sb.texts[i], sb.rewards[i].item())
                for i in range(min(limit, len(sb.texts)))]


@OBJECTIVES.register("grpo")
def build_grpo(t: Any) -> RLObjective:
    return RLObjective(t, lambda rewards: group_advantages(rewards, t.group_size, t.norm_adv_by_std))


build_grpo.kind = "RL"  # harness.objectives.kind


@OBJECTIVES.register("rloo")
def build_rloo(t: Any) -> RLObjective:
    return RLObjective(t, lambda rewards: leave_one_out_advantages(rewards, t.group_size))


build_rloo.kind = "RL"
