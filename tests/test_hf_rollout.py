"""rollout=hf on the tiny model (fp32): per-prompt seeded sampling and the shared prefill.

    python -m pytest -q tests/test_hf_rollout.py

A prompt's samples depend on its seed only: alone, in a batch of 8, in another order, split over
several generate calls, with or without the shared prefill, they are the same tokens.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.rollout.base import Sampling, sample_seeds
from harness.rollout.hf import HFRollout, SeededSampler

REPO = Path(__file__).resolve().parents[1]
SUMS = [(3, 4), (12, 9), (1, 1), (7, 15), (20, 20), (5, 18), (11, 2), (9, 9)]


@pytest.fixture(scope="module")
def tiny(cache_dir):
    from omegaconf import OmegaConf

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.models import resolve_model_dir

    model_cfg = OmegaConf.load(REPO / "conf" / "model" / "tiny.yaml")  # the model node alone: no composition
    model_dir = resolve_model_dir(model_cfg, cache_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).train()
    prompts = []
    for a, b in SUMS:  # different lengths: "3 + 4" vs "12 + 9", so the batch is left-padded
        msgs = [{"role": "user", "content": f"What is {a} + {b}? Answer with just the number."}]
        prompts.append(tok(tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False),
                           add_special_tokens=False).input_ids)
    assert len({len(p) for p in prompts}) > 1
    return model, tok, prompts


def _ids(groups) -> list[list[list[int]]]:
    return [[g.completion_ids for g in group] for group in groups]


def test_a_prompts_samples_do_not_depend_on_its_batch(tiny):
    model, tok, prompts = tiny
    seeds = tuple(1000 + 7 * i for i in range(len(prompts)))
    s = dict(n=4, max_new_tokens=8, temperature=1.0, top_p=0.95)
    roll = HFRollout(model, tok.eos_token_id, tok.pad_token_id, torch.float32)
    batch = _ids(roll.generate(prompts, Sampling(**s, seeds=seeds)))
    alone = [_ids(roll.generate([p], Sampling(**s, seeds=(x,))))[0] for p, x in zip(prompts, seeds)]
    order = [5, 2, 7, 0, 3, 6, 1, 4]
    shuffled = _ids(roll.generate([prompts[i] for i in order], Sampling(**s, seeds=tuple(seeds[i] for i in order))))
    split = HFRollout(model, tok.eos_token_id, tok.pad_token_id, torch.float32, batch_size=12)  # 3 prompts a call
    calls = _ids(split.generate(prompts, Sampling(**s, seeds=seeds)))
    plain = HFRollout(model, tok.eos_token_id, tok.pad_token_id, torch.float32, share_prefill=False)
    no_share = _ids(plain.generate(prompts, Sampling(**s, seeds=seeds)))
    assert batch == alone == calls == no_share
    assert [shuffled[order.index(i)] for i in range(len(prompts))] == batch
    assert model.training  # restored after generating
    # seeds matter: other seeds give other samples (8 prompts x 4 samples of up to 8 tokens)
    other = _ids(roll.generate(prompts, Sampling(**s, seeds=tuple(x + 1 for x in seeds))))
    assert other != batch
    assert len({tuple(c) for group in batch for c in group}) > len(prompts)  # samples within groups differ


def test_min_new_tokens_masks_eos_until_then(tiny):
    """trainer.min_new_tokens: eos cannot be drawn before that many tokens; = max_new_tokens: every
    completion runs to the limit (the same work for every backend in a benchmark)."""
    model, tok, prompts = tiny
    eos = tok.eos_token_id
    roll = HFRollout(model, eos, tok.pad_token_id, torch.float32)
    s = dict(n=4, max_new_tokens=8, temperature=1.0, seeds=tuple(range(len(prompts))))
    free = [g for group in roll.generate(prompts, Sampling(**s)) for g in group]
    assert any(g.finished and len(g.completion_ids) <= 3 for g in free)  # the tiny model ends early unmasked
    some = [g for group in roll.generate(prompts, Sampling(**s, min_new_tokens=4)) for g in group]
    assert all(eos not in g.completion_ids[:4] and len(g.completion_ids) >= 4 for g in some)
    assert any(g.finished for g in some)  # eos still ends completions after the minimum
    full = [g for group in roll.generate(prompts, Sampling(**s, min_new_tokens=8)) for g in group]
    assert all(len(g.completion_ids) == 8 and eos not in g.completion_ids and not g.finished for g in full)


def test_greedy_matches_plain_generate_and_is_copied(tiny):
    model, tok, prompts = tiny
    roll = HFRollout(model, tok.eos_token_id, tok.pad_token_id, torch.float32)
    out = roll.generate(prompts[:3], Sampling(n=3, max_new_tokens=8, temperature=0.0))
    eos = tok.eos_token_id
    with torch.no_grad():
        for p, group in zip(prompts, out):
            ref = model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                 do_sample=False, max_new_tokens=8, eos_token_id=eos, pad_token_id=eos)[0, len(p):].tolist()
            ref = ref[:ref.index(eos) + 1] if eos in ref else ref
            assert [g.completion_ids for g in group] == [ref] * 3
            assert all(g.finished == (ref[-1] == eos) for g in group)


def test_a_bf16_generation_copy_follows_the_trained_weights(tiny):
    model, tok, prompts = tiny
    roll = HFRollout(model, tok.eos_token_id, tok.pad_token_id, torch.float32, generation_dtype=torch.bfloat16)
    assert roll.model is not model and next(roll.model.parameters()).dtype == torch.bfloat16
    s = Sampling(n=2, max_new_tokens=6, temperature=1.0, seeds=tuple(range(len(prompts))))
    before = _ids(roll.generate(prompts, s))
    head = model.get_output_embeddings().weight
    saved = head.detach().clone()
    try:
        with torch.no_grad():
            head.mul_(-1.0)  # an "optimizer step" that changes every logit
        assert _ids(roll.generate(prompts, s)) == before  # not synced yet: the copy is unchanged
        roll.sync_weights(model)
        for name, p in model.named_parameters():
            assert torch.equal(dict(roll.model.named_parameters())[name], p.detach().to(torch.bfloat16)), name
        assert _ids(roll.generate(prompts, s)) != before
    finally:
        with torch.no_grad():
            head.copy_(saved)
    assert model.training and next(model.parameters()).dtype == torch.float32


def test_seed_count_must_match_prompts(tiny):
    model, tok, prompts = tiny
    roll = HFRollout(model, tok.eos_token_id, tok.pad_token_id, torch.float32)
    with pytest.raises(ValueError, match="2 seeds for 3 prompts"):
        roll.generate(prompts[:3], Sampling(n=2, max_new_tokens=2, temperature=1.0, seeds=(1, 2)))


def test_seeded_sampler_draws_from_the_warped_distribution():
    """4000 rows with their own seeds: frequencies follow softmax(logits / T) restricted to top_p;
    a token outside the nucleus (or of probability 0) is never drawn."""
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0]))  # [V]
    rows = 4000
    scores = logits.expand(rows, -1).clone()  # [R, V]
    seeds = [x for s in range(rows // 4) for x in sample_seeds(s, 4)]
    out = SeededSampler(seeds, temperature=1.0, top_p=0.9)(torch.zeros(rows, 1, dtype=torch.long), scores)
    assert torch.isinf(out).sum(dim=1).eq(4).all() and out.max(dim=1).values.eq(0).all()  # one token per row
    freq = torch.bincount(out.argmax(dim=1), minlength=5).float() / rows
    assert freq[3] == 0 and freq[4] == 0  # top_p=0.9 keeps {0.5, 0.3, 0.15}
    assert torch.allclose(freq[:3], torch.tensor([0.5, 0.3, 0.15]) / 0.95, atol=0.03)
    hot = SeededSampler(seeds, temperature=0.5, top_p=1.0)(None, scores.clone())  # T=0.5 sharpens
    assert (hot.argmax(dim=1) == 0).float().mean() > freq[0] + 0.1


def test_sample_seeds_do_not_collide_between_neighbouring_prompts():
    a, b = sample_seeds(41, 4), sample_seeds(42, 4)
    assert len(set(a) | set(b)) == 8 and all(0 <= x < 2**63 for x in a + b)
    assert sample_seeds(41, 4) == a  # a pure function of the prompt seed
