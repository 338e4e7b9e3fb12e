"""A new rollout backend, `rollout=plain`: decode token by token with the policy's own forward
(docs/extending.md, run by tests/test_docs.py).

A backend is an object with the three methods of harness.rollout.base.Rollout (generate,
sync_weights, close), built by a function registered in ROLLOUTS under the name `rollout.backend`
picks, together with its plan: the memory and FLOPs `python -m harness.plan` counts for it
(harness.rollout.plan). The trainer and the planner never know which backend they have. This one
runs no `generate()`: each prompt's n samples are one batch of n equal rows (no padding), and each
row draws its token with the harness's seeded sampler, so a prompt's samples depend only on its
seed, as in every backend. In the harness it would be harness/rollout/plain.py, registered in
harness/rollout/__init__.py.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from harness.rollout import ROLLOUTS
from harness.rollout.base import Generation, Sampling, prompt_seeds, sample_seeds
from harness.rollout.hf import SeededSampler  # [R, V] scores -> -inf except each row's drawn token
from harness.rollout.plan import RolloutPlan


@dataclass
class PlainRolloutConfig:
    backend: str = MISSING  # the ROLLOUTS entry: plain
    use_cache: bool = MISSING  # keep the KV cache between decode steps (false: recompute the whole sequence)


ConfigStore.instance().store(group="schema", name="rollout_plain", node=PlainRolloutConfig)


class PlainRollout:
    def __init__(self, model: torch.nn.Module, eos_token_id: int, compute_dtype: torch.dtype, use_cache: bool):
        self.model, self.eos, self.compute_dtype, self.use_cache = model, eos_token_id, compute_dtype, use_cache

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], sampling: Sampling) -> list[list[Generation]]:
        greedy = sampling.temperature == 0.0
        seeds = None if greedy else prompt_seeds(sampling, len(prompts))
        was_training = self.model.training
        self.model.eval()
        try:
            with self._autocast():
                out = []
                for i, prompt in enumerate(prompts):
                    rows = 1 if greedy else sampling.n  # greedy: one answer, copied n times
                    sampler = None if greedy else SeededSampler(sample_seeds(seeds[i], rows), sampling.temperature,
                                                                sampling.top_p)
                    gens = self._decode(prompt, rows, sampling, sampler)
                    out.append(gens * sampling.n if greedy else gens)
                return out
        finally:
            self.model.train(was_training)

    def _decode(self, prompt: list[int], rows: int, sampling: Sampling, sampler) -> list[Generation]:
        device = next(self.model.parameters()).device
        seq = torch.tensor([prompt] * rows, device=device)  # [R, Lp]
        step_input, cache = seq, None
        new: list[list[int]] = [[] for _ in range(rows)]
        done = [False] * rows
        for t in range(sampling.max_new_tokens):
            out = self.model(input_ids=step_input, past_key_values=cache, use_cache=self.use_cache)
            scores = out.logits[:, -1].float()  # [R, V]
            if t < sampling.min_new_tokens:
                scores[:, self.eos] = float("-inf")
            if sampler is not None:
                scores = sampler(seq, scores)  # [R, V]
            token = scores.argmax(dim=-1)  # [R]
            for r, tok in enumerate(token.tolist()):
                if not done[r]:
                    new[r].append(tok)
                    done[r] = tok == self.eos
            if all(done):
                break
            seq = torch.cat([seq, token[:, None]], dim=1)  # [R, Lp+t+1]
            step_input, cache = (token[:, None], out.past_key_values) if self.use_cache else (seq, None)
        return [Generation(ids, finished) for ids, finished in zip(new, done)]

    def _autocast(self):
        param_dtype = next(self.model.parameters()).dtype
        if self.compute_dtype == param_dtype:
            return contextlib.nullcontext()
        return torch.autocast(next(self.model.parameters()).device.type, dtype=self.compute_dtype)

    def sync_weights(self, model: torch.nn.Module) -> None:
        pass  # generates with the trained module itself: nothing to copy

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class PlainPlan(RolloutPlan):
    """What the planner counts for rollout=plain, per device (x: harness.plan.estimate.Inputs)."""

    use_cache: bool

    @classmethod
    def from_config(cls, cfg_rollout, cfg_plan, device, max_positions: int) -> "PlainPlan":
        return cls(bool(cfg_rollout.use_cache))

    def engine(self, x) -> dict[str, float]:
        rows, tokens = x.group_size, x.prompt_tokens + x.new_tokens  # one prompt's samples at a time
        kv = rows * tokens * 2 * x.kv_dim * x.layers * x.compute_bytes if self.use_cache else 0.0
        return {"plain: KV cache (one prompt's samples)": kv, "plain: logits (at most)": rows * tokens * x.vocab * 4}

    def flops(self, x) -> float:
        rows = x.prompts_per_step * x.group_size
        if self.use_cache:  # every row prefills its prompt, then one token per decode step
            return 2 * x.params * rows * (x.prompt_tokens + x.new_tokens)
        return 2 * x.params * rows * sum(x.prompt_tokens + t for t in range(x.new_tokens))  # the whole sequence each step


@ROLLOUTS.register("plain", plan=PlainPlan.from_config)
def build(cfg, *, model, tokenizer, model_dir, compute_dtype, seed, device) -> PlainRollout:
    return PlainRollout(model, tokenizer.eos_token_id, compute_dtype, cfg.use_cache)
