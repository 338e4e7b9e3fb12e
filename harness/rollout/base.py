"""The rollout interface: every backend (transformers, vLLM) generates groups of completions.

The trainer holds one `Rollout` and calls `generate` for each step's prompts and for greedy eval,
and `sync_weights` after every optimizer step. It never knows which backend it has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

import torch


@dataclass(frozen=True)
class Sampling:
    n: int  # completions per prompt (the GRPO group size; 1 for eval)
    max_new_tokens: int
    temperature: float  # 0.0 = greedy
    top_p: float = 1.0
    seed: Optional[int] = None  # seeds this call's sampling


@dataclass
class Generation:
    completion_ids: list[int]  # generated tokens; ends with the eos token when `finished`
    finished: bool  # True: stopped at eos; False: cut at max_new_tokens


class Rollout(Protocol):
    def generate(self, prompts: list[list[int]], sampling: Sampling) -> list[list[Generation]]:
        """For each prompt (token ids, no padding), `sampling.n` generations: out[prompt][sample]."""
        ...

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Make the engine generate with `model`'s current weights (after an optimizer step)."""
        ...

    def close(self) -> None: ...
