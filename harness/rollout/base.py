"""The rollout interface: every backend (transformers, vLLM) generates groups of completions.

The trainer holds one `Rollout` and calls `generate` for each step's prompts and for greedy eval,
and `sync_weights` after every optimizer step. It never knows which backend it has.

Sampling is seeded per prompt: `Sampling.seeds[i]` alone decides prompt i's G samples (given the
model), whichever other prompts share the call, in whatever order, in however many calls. Sample j
of prompt i draws from its own generator, seeded with `sample_seeds(seeds[i], G)[j]` (the same
derivation in every backend), so a trial's samples do not depend on world size or batching.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

import torch

_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class Sampling:
    n: int  # completions per prompt (the GRPO group size; 1 for eval)
    max_new_tokens: int
    temperature: float  # 0.0 = greedy
    top_p: float = 1.0
    seeds: Optional[tuple[int, ...]] = None  # one per prompt; None: drawn from torch's global RNG
    min_new_tokens: int = 0  # eos cannot be drawn before this many new tokens (its probability is masked)


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


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def sample_seeds(prompt_seed: int, n: int) -> list[int]:
    """The seeds of a prompt's n samples: hashed, so nearby prompt seeds (s, s+1) share no sample
    seed (vLLM's own n > 1 fan-out uses s, s+1, ..., which would). In [0, 2**63)."""
    base = _splitmix64(int(prompt_seed) & _MASK64)
    return [_splitmix64((base + j) & _MASK64) >> 1 for j in range(n)]


def prompt_seeds(sampling: Sampling, num_prompts: int) -> tuple[int, ...]:
    """`sampling.seeds`, checked against the prompt count, or fresh ones from torch's global RNG."""
    if sampling.seeds is None:
        return tuple(int(s) for s in torch.randint(0, 2**62, (num_prompts,)).tolist())
    if len(sampling.seeds) != num_prompts:
        raise ValueError(f"Sampling.seeds has {len(sampling.seeds)} seeds for {num_prompts} prompts")
    return tuple(int(s) for s in sampling.seeds)
