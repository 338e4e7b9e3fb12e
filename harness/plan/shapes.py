"""Parameter counts and optimizer state, exact, from the model built on the meta device (no memory).

The optimizer named in config is built on the meta model and stepped once (meta tensors: no
arithmetic), so its state is what torch would allocate, for any class whose step runs on meta
tensors (SGD, AdamW, RMSPropBC, SignSGD, Muon + AdamW groups, ...). For one that doesn't, the
state is assumed to be AdamW's (2 x parameter bytes) and said so.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Shapes:
    params: int  # all trainable parameters (tied weights once)
    layer_params: int  # one decoder layer
    root_params: int  # embedding, final norm and head: FSDP2's group outside the layers
    matmul_params: int  # weights of nn.Linear modules (the ones autocast casts)
    largest_tensor: int
    vocab: int
    hidden: int
    intermediate: int
    layers: int
    kv_dim: int  # num_key_value_heads x head_dim
    qk_norm: bool  # Qwen3: RMSNorm on q and k (more activation memory per layer)
    weights_dtype: str  # dtype of the published weights


@functools.lru_cache(maxsize=16)
def _meta_model(config_json: str, param_dtype: str) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    d = json.loads(config_json)
    d.pop("dtype", None)
    d.pop("torch_dtype", None)
    d.pop("architectures", None)
    cfg = AutoConfig.for_model(d.pop("model_type"), **d)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(cfg, dtype=getattr(torch, param_dtype))


def meta_model(config: dict, param_dtype: str) -> torch.nn.Module:
    return _meta_model(json.dumps(config, sort_keys=True), param_dtype)


def shapes(config: dict, param_dtype: str) -> Shapes:
    m = meta_model(config, param_dtype)
    params = [p for p in m.parameters() if p.requires_grad]
    layer = m.get_decoder().layers[0]
    n_layer = sum(p.numel() for p in layer.parameters())
    total = sum(p.numel() for p in params)
    matmul = {id(mod.weight): mod.weight.numel() for mod in m.modules() if isinstance(mod, torch.nn.Linear)}
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    return Shapes(params=total, layer_params=n_layer, root_params=total - n_layer * len(m.get_decoder().layers),
                  matmul_params=sum(matmul.values()), largest_tensor=max(p.numel() for p in params),
                  vocab=config["vocab_size"], hidden=config["hidden_size"], intermediate=config["intermediate_size"],
                  layers=config["num_hidden_layers"], kv_dim=config.get("num_key_value_heads", heads) * head_dim,
                  qk_norm=hasattr(layer.self_attn, "q_norm"), weights_dtype=str(config.get("dtype", "float32")))


def optimizer_state(cfg_opt: Any, config: dict, param_dtype: str) -> tuple[int, str, bool]:
    """(state bytes of the whole model, the optimizer's label, foreach?) — stepping it on the meta model.

    foreach: whether the class steps all tensors at once on CUDA (torch's Adam/AdamW default), which
    allocates a temporary the size of one state buffer."""
    from harness.measure.memory import optimizer_state_bytes
    from harness.optim import build_optimizer, optimizer_label

    m = meta_model(config, param_dtype)
    params = [p for p in m.parameters() if p.requires_grad]
    label = optimizer_label(cfg_opt)
    try:
        opt = build_optimizer(cfg_opt, m)
        for p in params:
            p.grad = torch.empty_like(p)
        opt.step()
        state = optimizer_state_bytes(opt)
        foreach = any(type(o).__name__ in ("Adam", "AdamW") for o in getattr(opt, "optimizers", [opt]))
        note = label
    except Exception as e:  # noqa: BLE001 - a class whose step needs real numbers
        state = 2 * sum(p.numel() * p.element_size() for p in params)
        foreach = True
        note = f"{label}: unknown ({type(e).__name__} on the meta device), assumed like AdamW"
    finally:
        for p in params:
            p.grad = None
    return state, note, foreach
