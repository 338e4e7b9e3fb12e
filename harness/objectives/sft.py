"""Supervised fine-tuning in the same loop: teacher-forced cross-entropy on the reference answers.

    python -m harness trainer=sft                      # SFT on the task's train split
    python -m harness -m +sweeps=rl_vs_sft              # the paper's contrast: RL against SFT

Each step takes this rank's share of `trainer.prompts_per_step` train problems (the same seeded epoch
order as RL), writes each reference answer in the task's answer format (`task.answer_template`, e.g.
the bare number, or `\\boxed{...}`), ends it with the tokenizer's eos, and puts it after the same
chat prompt the RL objectives sample from. The loss is the token-mean negative log-likelihood of
those completion tokens (`trainer.loss_agg`, token-mean by default): the prompt is context only.
No rollout, no reward, no reference policy; everything else (micro-batches, optimizer step,
diagnostics, evaluation, checkpoints, FSDP2) is the loop's, shared with RL.
"""

from __future__ import annotations

from typing import Any

import torch

from harness.algo.logprobs import GroupBatch
from harness.objectives.base import OBJECTIVES, StepBatch


class SFTObjective:
    group_size = 1  # one completion (the reference answer) per prompt

    def __init__(self, t: Any):
        self.t = t
        self._target_cache: dict[str, list[int]] = {}

    def uses_reference(self, t: Any) -> bool:
        return False

    def target_ids(self, tr: Any, text: str) -> list[int]:
        """The answer's tokens followed by eos (the end of the assistant turn the model must learn)."""
        if text not in self._target_cache:
            ids = tr.tok(text, add_special_tokens=False)["input_ids"]
            self._target_cache[text] = list(ids) + [tr.tok.eos_token_id]
        return self._target_cache[text]

    def batch(self, tr: Any, step: int) -> StepBatch:
        with tr.phases.phase("batch"):
            problems = [p for _, p in tr.step_problems(step)]
            prompts = [tr.encode(p) for p in problems]
            texts = [tr.task.target(p) for p in problems]
            completions = [self.target_ids(tr, x) for x in texts]
        return StepBatch(problems, GroupBatch(prompts, completions, 1), texts, [True] * len(problems))

    def loss_state(self, tr: Any, sb: StepBatch) -> None:
        return None

    def loss(self, t: Any, logp: torch.Tensor, ref_logp: torch.Tensor, local_ids: torch.Tensor,
             state: None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        nll = -logp  # [N] cross-entropy of each reference token
        return nll, {}

    def update_metrics(self, tr: Any, state: None, num_seqs: int) -> dict[str, Any]:
        return {}

    def step_metrics(self, tr: Any, sb: StepBatch, secs: dict[str, float]) -> dict[str, Any]:
        return {}

    def sample_rows(self, sb: StepBatch, limit: int) -> list[tuple]:
        return [(p.question, p.answer, x, None) for p, x in list(zip(sb.problems, sb.texts))[:limit]]


@OBJECTIVES.register("sft")
def build_sft(t: Any) -> SFTObjective:
    return SFTObjective(t)


build_sft.kind = "SFT"  # harness.objectives.kind
