"""Rollouts with transformers' `generate`, using the policy model's own weights (sync is a no-op)."""

from __future__ import annotations

import contextlib

import torch
from transformers import GenerationConfig

from harness.rollout.base import Generation, Sampling


class HFRollout:
    def __init__(self, model: torch.nn.Module, eos_token_id: int, pad_token_id: int,
                 compute_dtype: torch.dtype, batch_size: int = 0):
        self.model, self.eos, self.pad = model, eos_token_id, pad_token_id
        self.compute_dtype, self.batch_size = compute_dtype, batch_size

    def _autocast(self):
        if self.compute_dtype == next(self.model.parameters()).dtype:
            return contextlib.nullcontext()
        device_type = next(self.model.parameters()).device.type
        return torch.autocast(device_type=device_type, dtype=self.compute_dtype)

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], sampling: Sampling) -> list[list[Generation]]:
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        per_call = max(1, (self.batch_size or len(prompts) * sampling.n) // sampling.n)
        out: list[list[Generation]] = []
        was_training = self.model.training
        self.model.eval()
        try:
            for s in range(0, len(prompts), per_call):
                out.extend(self._generate(prompts[s:s + per_call], sampling))
        finally:
            self.model.train(was_training)
        return out

    def _generate(self, prompts: list[list[int]], sampling: Sampling) -> list[list[Generation]]:
        device = next(self.model.parameters()).device
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad, dtype=torch.long)  # [P, Lp] left-padded
        mask = torch.zeros((len(prompts), width), dtype=torch.long)  # [P, Lp]
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        greedy = sampling.temperature == 0.0
        gen_cfg = GenerationConfig(
            do_sample=not greedy, temperature=None if greedy else sampling.temperature,
            top_p=None if greedy else sampling.top_p, top_k=0, num_return_sequences=sampling.n,  # 0: no top-k (None means 50)
            max_new_tokens=sampling.max_new_tokens, eos_token_id=self.eos, pad_token_id=self.pad,
            use_cache=True)
        with self._autocast():
            seqs = self.model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                       generation_config=gen_cfg)  # [P*n, Lp+Lnew]
        new = seqs[:, width:].tolist()
        gens = []
        for row in new:
            if self.eos in row:
                gens.append(Generation(row[:row.index(self.eos) + 1], True))
            else:
                gens.append(Generation(row, False))
        return [gens[i * sampling.n:(i + 1) * sampling.n] for i in range(len(prompts))]

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Nothing to do: generation uses the trained module itself."""

    def close(self) -> None:
        pass
