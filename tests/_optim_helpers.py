"""Shared by tests/test_optim.py and tests/test_optim_groups.py: the optimizer and model nodes composed
by Hydra from the real conf/ files (only those groups), and the default model's parameters without
its weights."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from harness.config import register

CONF = Path(__file__).resolve().parent.parent / "conf"
_DIR = Path(tempfile.mkdtemp(prefix="optim-conf-"))
for _group in ("optimizer", "model", "base"):
    if (CONF / _group).is_dir():
        (_DIR / _group).symlink_to(CONF / _group, target_is_directory=True)
(_DIR / "config.yaml").write_text("defaults:\n  - optimizer: sgd\n  - model: tiny\n  - _self_\n")
register()


def compose_config(*overrides: str):
    """The `optimizer` and `model` groups as `python -m harness <overrides>` composes them."""
    with initialize_config_dir(config_dir=str(_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def compose_optimizer(*overrides: str):
    """cfg.optimizer as `python -m harness <overrides>` composes it (struct mode: new keys need +)."""
    return compose_config(*overrides).optimizer


# SmolLM2-135M (conf/model/smollm2-135m.yaml's model): LlamaForCausalLM, 30 layers, tied embeddings.
SMOLLM2 = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
               num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True)


def meta_model(config_cls_name: str = "LlamaConfig", **config) -> torch.nn.Module:
    """A transformers causal LM on the meta device: real parameter names and shapes, no memory."""
    import transformers

    cfg = getattr(transformers, config_cls_name)(**config)
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(cfg)
