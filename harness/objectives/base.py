"""The objective registry and what an objective hands the training loop: one step's sequences
(harness.objectives explains the rest)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from harness.algo.logprobs import GroupBatch
from harness.registry import Registry
from harness.tasks.base import Problem

OBJECTIVES: Registry = Registry("trainer.objective")  # name -> builder(trainer_cfg) -> objective; builder.kind: RL | SFT


@dataclass
class StepBatch:
    problems: list[Problem]  # this rank's prompts of the step, in stream order
    batch: GroupBatch  # prompts and their completions (group_size per prompt; 1 for SFT)
    texts: list[str]  # decoded completions, prompt-major
    finished: list[bool]  # whether each completion ended by itself (eos) rather than at the length limit
    rewards: Optional[torch.Tensor] = None  # [B] the verifier's score of each completion (RL); None for SFT
