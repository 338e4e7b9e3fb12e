"""model.source=random: an architecture's config with seeded random weights on the bf16 grid, and a
tokenizer that covers its vocabulary, built offline.

    python -m pytest -q tests/test_random_weights.py     # ~1 min (small stand-ins of Qwen3-1.7B)
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from harness.errors import ConfigError
from harness.models import load_model, load_tokenizer, resolve_model_dir, validate
from harness.models.random_weights import build_tokenizer
from harness.plan.archs import ARCHS, model_config
from harness.plan.shapes import shapes
from tests.test_models import model_cfg

SMALL = {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2,
         "num_key_value_heads": 1, "head_dim": 32, "vocab_size": 3000}


def _cfg(seed: int = 0, **arch):
    return model_cfg("qwen3-1.7b", source="random", random__seed=seed, random__arch={**SMALL, **arch})


def _dtypes(folder: Path) -> set[str]:
    raw = (folder / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return {v["dtype"] for k, v in json.loads(raw[8:8 + n]).items() if k != "__metadata__"}


def test_tokenizer_covers_the_vocabulary_and_keeps_the_chat_format():
    from harness.models.tiny import build_tokenizer as tiny_tokenizer

    tok = build_tokenizer(5000)
    assert len(tok) == 5000
    tokens = tok.convert_ids_to_tokens(list(range(5000)))
    assert None not in tokens and len(set(tokens)) == 5000  # every id the model can sample is a distinct token
    assert isinstance(tok.decode(list(range(4990, 5000))), str)
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == tok.pad_token_id == 2
    msgs = [{"role": "user", "content": "What is 3 + 4? Answer with just the number."}]
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert ids.endswith("<|im_start|>assistant\n")
    small = tiny_tokenizer(512)  # the trained merges come first: text tokenizes as with tiny's tokenizer
    assert tok(ids, add_special_tokens=False).input_ids == small(ids, add_special_tokens=False).input_ids


def test_random_model_is_seeded_cached_and_on_the_bf16_grid(tmp_path):
    cfg = _cfg(seed=0)
    folder = Path(resolve_model_dir(cfg, tmp_path / "a"))
    assert folder.name.startswith("random-qwen3-1.7b-")
    assert resolve_model_dir(cfg, tmp_path / "a") == str(folder)  # cached
    conf = json.loads((folder / "config.json").read_text())
    assert conf["model_type"] == "qwen3" and conf["num_hidden_layers"] == 2 and conf["tie_word_embeddings"] is True
    assert conf["vocab_size"] == 3000 and conf["eos_token_id"] == 2
    assert _dtypes(folder) == {"BF16"}  # saved as published models are
    tok = load_tokenizer(folder, cfg)
    assert len(tok) == 3000
    model = load_model(cfg, folder)  # param_dtype float32: the bf16 numbers, exactly
    w = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert torch.equal(w, w.to(torch.bfloat16).float())
    matrices = torch.cat([p.detach().flatten() for p in model.parameters() if p.dim() == 2])
    assert matrices.std().item() == pytest.approx(0.02, rel=0.05)  # transformers' init (initializer_range 0.02)

    again = Path(resolve_model_dir(cfg, tmp_path / "b"))  # the same seed elsewhere: the same bytes
    assert (again / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()
    other = Path(resolve_model_dir(_cfg(seed=1), tmp_path / "a"))
    assert other != folder and (other / "model.safetensors").read_bytes() != (folder / "model.safetensors").read_bytes()

    with torch.no_grad():  # it generates: every sampled id decodes
        out = model.generate(torch.tensor([[1, 5, 9]]), do_sample=True, max_new_tokens=8, min_new_tokens=8,
                             pad_token_id=tok.pad_token_id)
    assert out.shape == (1, 11) and isinstance(tok.decode(out[0]), str)


def test_the_planner_sees_the_built_architecture(tmp_path):
    cfg = _cfg()
    conf, source = model_config(cfg, tmp_path)
    assert conf["dtype"] == "bfloat16" and "table" in source and "num_hidden_layers" in source
    model = load_model(cfg, resolve_model_dir(cfg, tmp_path))
    assert shapes(conf, "float32").params == sum(p.numel() for p in model.parameters())
    full, _ = model_config(model_cfg("qwen3-1.7b", source="random"), tmp_path)  # no arch changes: the real config
    assert {k: full[k] for k in ARCHS["Qwen/Qwen3-1.7B"]} == ARCHS["Qwen/Qwen3-1.7B"]
    assert 1.6e9 < shapes(full, "float32").params < 1.8e9


@pytest.mark.parametrize("cfg,match", [
    (lambda: _cfg(num_layers=2), r"model\.random\.arch\.num_layers: not a key of Qwen/Qwen3-1\.7B's config\.json; allowed: "),
    (lambda: _cfg(vocab_size=100), r"model\.random\.arch\.vocab_size=100: must be an integer >= 1024"),
    (lambda: model_cfg("qwen3-1.7b", source="random", name="nobody/unknown"), r"model\.name='nobody/unknown': no config\.json"),
])
def test_bad_values_fail_in_one_line_before_any_work(cfg, match, tmp_path):
    with pytest.raises(ConfigError, match=match) as err:
        validate(cfg())
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=match):
        resolve_model_dir(cfg(), tmp_path)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
