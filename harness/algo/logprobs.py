"""Log-probabilities of completion tokens under a causal LM, without the naive waste.

Two ways to compute the same numbers (tests check they agree):
- `shared_prefix=True` (default): each prompt runs through the model ONCE per group; its KV cache
  is repeated for the G completions, which then run on top of it. Gradients flow through the
  cache into the prompt's forward. With prompts longer than completions this does most of the
  work G times less often.
- `shared_prefix=False`: each sequence prompt+completion runs whole (needed with gradient
  checkpointing, which can't keep a cache).
Both compute logits only at the positions that predict completion tokens (no prompt or padding
logits: the [N, V] logits are the biggest activation of a small model), and trim padding to the
longest sequence of each micro-batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.algo.grpo import token_logprobs


@dataclass
class GroupBatch:
    """K prompts with G completions each; sequences ordered prompt-major (k*G + g)."""

    prompts: list[list[int]]  # K prompt token lists
    completions: list[list[int]]  # K*G completion token lists (each >= 1 token)
    group_size: int

    @property
    def num_tokens(self) -> int:
        return sum(len(c) for c in self.completions)

    def targets(self) -> torch.Tensor:
        """Completion tokens flattened in (sequence, position) order: [N]."""
        return torch.tensor([t for c in self.completions for t in c], dtype=torch.long)

    def seq_index(self) -> torch.Tensor:
        """For each target token, the index of its sequence in this batch: [N]."""
        return torch.tensor([i for i, c in enumerate(self.completions) for _ in c], dtype=torch.long)


def _pad(rows: list[list[int]], pad: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        sl = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, sl] = torch.tensor(r, dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask


def completion_logprobs(model: torch.nn.Module, batch: GroupBatch, pad_id: int,
                        shared_prefix: bool = True) -> torch.Tensor:
    """log pi(completion token | context) for every completion token of the batch: [N]."""
    device = next(model.parameters()).device
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    targets = batch.targets().to(device)  # [N]
    if shared_prefix:
        hidden = _shared_prefix_hidden(decoder, batch, pad_id, device)
    else:
        hidden = _full_sequence_hidden(decoder, batch, pad_id, device)
    return token_logprobs(hidden, head, targets)  # [N]


def _full_sequence_hidden(decoder, batch: GroupBatch, pad_id: int, device) -> torch.Tensor:
    G = batch.group_size
    seqs = [batch.prompts[i // G] + c for i, c in enumerate(batch.completions)]
    ids, _ = _pad(seqs, pad_id, left=False)  # [B, L] right-padded: no mask needed under causality
    h = decoder(input_ids=ids.to(device), use_cache=False).last_hidden_state  # [B, L, H]
    # position t predicts token t+1: completion token j of sequence i is predicted at len(prompt)+j-1
    rows, cols = [], []
    for i, c in enumerate(batch.completions):
        start = len(batch.prompts[i // G]) - 1
        rows += [i] * len(c)
        cols += range(start, start + len(c))
    return h[torch.tensor(rows, device=device), torch.tensor(cols, device=device)]  # [N, H]


def _shared_prefix_hidden(decoder, batch: GroupBatch, pad_id: int, device) -> torch.Tensor:
    G = batch.group_size
    p_ids, p_mask = _pad(batch.prompts, pad_id, left=True)  # [K, Lp]
    p_pos = (p_mask.cumsum(-1) - 1).clamp(min=0)  # [K, Lp]
    out = decoder(input_ids=p_ids.to(device), attention_mask=p_mask.to(device),
                  position_ids=p_pos.to(device), use_cache=True)
    cache = out.past_key_values
    cache.batch_repeat_interleave(G)  # every cached K/V: [K, ...] -> [K*G, ...], still in the graph
    first = out.last_hidden_state[:, -1].repeat_interleave(G, dim=0)  # [K*G, H] predicts token 0
    rest = [c[:-1] for c in batch.completions]  # inputs whose outputs predict tokens 1..
    if max(len(r) for r in rest) == 0:
        return first
    c_ids, c_mask = _pad([r or [pad_id] for r in rest], pad_id, left=False)  # [K*G, Lc-1]
    for i, r in enumerate(rest):
        if not r:
            c_mask[i, 0] = 0
    lens = torch.tensor([len(p) for p in batch.prompts]).repeat_interleave(G)  # [K*G]
    c_pos = lens[:, None] + torch.arange(c_ids.shape[1])[None, :]  # [K*G, Lc-1]
    mask = torch.cat([p_mask.repeat_interleave(G, dim=0), c_mask], dim=1)  # [K*G, Lp+Lc-1]
    h = decoder(input_ids=c_ids.to(device), attention_mask=mask.to(device), position_ids=c_pos.to(device),
                past_key_values=cache, use_cache=True).last_hidden_state  # [K*G, Lc-1, H]
    parts = []
    for i, r in enumerate(rest):
        parts.append(first[i:i + 1])
        if r:
            parts.append(h[i, :len(r)])
    return torch.cat(parts)  # [N, H]
