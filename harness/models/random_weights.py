"""Any architecture with seeded random weights: measure memory and speed before downloading anything.

    python -m harness model=qwen3-1.7b model.source=random
    python -m harness model=qwen3-8b model.source=random +model.random.arch.num_hidden_layers=2
    python -m harness.plan model=qwen3-1.7b model.source=random    # the same config, planned

The architecture is the model's config.json as the planner finds it without network
(harness.plan.archs: a local folder, the Hugging Face cache, or the shipped table of Qwen3-1.7B/8B,
Qwen2.5-Math-1.5B, SmolLM2 and Llama-3.1-8B), with `model.random.arch` changed over it. `build`
makes a standard Hugging Face folder (config.json, model.safetensors, tokenizer, generation_config.json):
- the model, initialised by transformers as for pretraining (seeded by `model.random.seed`) and
  saved in bfloat16, so its weights are on the bf16 grid like every published checkpoint;
- a byte-level BPE tokenizer with ChatML (the tiny model's, trained offline on its corpus), filled
  with merges of byte pairs and triples up to the model's vocabulary size, so every id the model
  can sample decodes to text.
The model answers nothing: rewards are 0. Its shapes, FLOPs and memory are the real model's.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Iterator

FORMAT_VERSION = 1  # bump when the build changes in a way the config does not show (part of the cache key)


def validate(cfg_model: Any) -> None:
    """model.random is set, its seed an integer, its arch a mapping of keys of model.name's config.json
    (ConfigError otherwise); reads no weights."""
    from harness.errors import ConfigError, check
    from harness.plan.archs import random_config

    spec = getattr(cfg_model, "random", None)
    if spec is None:
        raise ConfigError("model.source=random needs model.random (seed, arch): see conf/base/model.yaml")
    check(isinstance(spec.seed, int) and not isinstance(spec.seed, bool), "model.random.seed", spec.seed,
          "must be an integer")
    arch = spec.arch
    check(arch is None or hasattr(arch, "keys"), "model.random.arch", arch,
          "must be a mapping of config.json keys to values, e.g. +model.random.arch.num_hidden_layers=2")
    random_config(cfg_model)  # model.name has a config.json to build from, and the changed keys are in it


def cache_key(name: str, conf: dict[str, Any], seed: int) -> str:
    blob = json.dumps({"name": name, "config": conf, "seed": seed, "version": FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def folder_name(name: str, conf: dict[str, Any], seed: int) -> str:
    slug = "".join(c if c.isalnum() or c in "-." else "-" for c in name.split("/")[-1].lower())
    return f"random-{slug}-{cache_key(name, conf, seed)}"


def _fillers(alphabet: list[str], vocab: dict[str, int]) -> Iterator[tuple[str, str]]:
    """Merges (a, b) whose result a+b is not in vocab yet: byte pairs first, then pairs + a byte."""
    for a in alphabet:
        for b in alphabet:
            if a + b not in vocab:
                yield a, b
    for a in alphabet:
        for b in alphabet:
            for c in alphabet:
                if a + b + c not in vocab:
                    yield a + b, c


def build_tokenizer(vocab_size: int):
    """tiny's tokenizer (ChatML, byte-level BPE) with exactly vocab_size ids: trained merges, then fillers."""
    from tokenizers import Tokenizer, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from harness.models import tiny

    trained = tiny.build_tokenizer(min(vocab_size, 4096))  # the corpus runs out of merges well before
    spec = json.loads(trained.backend_tokenizer.to_str())
    vocab: dict[str, int] = spec["model"]["vocab"]
    merges: list = spec["model"]["merges"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    fill = _fillers(alphabet, vocab)
    while len(vocab) < vocab_size:
        a, b = next(fill)
        vocab[a + b] = len(vocab)
        merges.append([a, b])
    tok = Tokenizer.from_str(json.dumps(spec))
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=tiny.EOS, pad_token=tiny.EOS, unk_token=None, bos_token=None,
        additional_special_tokens=[t for t in tiny.SPECIAL_TOKENS if t != tiny.EOS],
        padding_side="left", model_max_length=1 << 30,
    )
    hf.chat_template = tiny.CHAT_TEMPLATE
    return hf


def build(name: str, conf: dict[str, Any], seed: int, out_dir: str | Path) -> dict[str, Any]:
    """Tokenizer + model of config `conf` with weights drawn from `seed`, saved in bfloat16 to out_dir."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    from harness.models import tiny

    t0 = time.perf_counter()
    tokenizer = build_tokenizer(conf["vocab_size"])
    eos = tokenizer.convert_tokens_to_ids(tiny.EOS)
    d = {k: v for k, v in conf.items() if k not in ("dtype", "torch_dtype", "architectures", "model_type")}
    d.update(bos_token_id=None, eos_token_id=eos, pad_token_id=eos)
    config = AutoConfig.for_model(conf["model_type"], **d)
    with torch.random.fork_rng(devices=[]):  # the caller's RNG stays as it was; the draws do not depend on threads
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=eos)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {"params": sum(p.numel() for p in model.parameters()), "vocab_size": len(tokenizer),
            "build_s": round(time.perf_counter() - t0, 2)}

