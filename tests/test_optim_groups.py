"""optimizer.param_groups: rules that assign parameters to groups: python -m pytest tests/test_optim_groups.py"""

import re

import pytest
import torch

from harness.errors import ConfigError
from harness.measure.sparsity import module_kind
from harness.optim import build_optimizer, group_assignment, resolve_optimizer
from tests._optim_helpers import SMOLLM2, compose_optimizer, meta_model

HIDDEN = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


@pytest.fixture(scope="module")
def smollm2():
    return meta_model(**SMOLLM2)


def test_muon_groups_on_the_default_models_parameter_names(smollm2):
    named = list(smollm2.named_parameters())
    groups = group_assignment(compose_optimizer("optimizer=muon"), named)
    assert sorted(groups) == sorted(n for n, _ in named)  # every parameter in exactly one group
    assert "lm_head.weight" not in groups  # tied to the embedding: one parameter, counted once
    L, H, I, V = SMOLLM2["num_hidden_layers"], SMOLLM2["hidden_size"], SMOLLM2["intermediate_size"], SMOLLM2["vocab_size"]
    for name, p in named:
        proj = name.split(".")[-2]
        want = "hidden" if proj in HIDDEN and name.endswith(".weight") else "adamw"
        assert groups[name] == want, name
        if want == "hidden":
            assert p.dim() == 2 and module_kind(name) in ("attention", "mlp")
    hidden = [n for n, g in groups.items() if g == "hidden"]
    assert len(hidden) == 7 * L
    assert {re.sub(r"\.\d+\.", ".N.", n) for n, g in groups.items() if g == "adamw"} == {
        "model.embed_tokens.weight", "model.layers.N.input_layernorm.weight",
        "model.layers.N.post_attention_layernorm.weight", "model.norm.weight"}
    numel = {g: sum(p.numel() for n, p in named if groups[n] == g) for g in ("hidden", "adamw")}
    kv = H // SMOLLM2["num_attention_heads"] * SMOLLM2["num_key_value_heads"]
    assert numel["hidden"] == L * (2 * H * H + 2 * H * kv + 3 * H * I)
    assert numel["adamw"] == V * H + (2 * L + 1) * H
    assert sum(numel.values()) == 134_515_008  # SmolLM2-135M-Instruct's parameter count


def test_biases_and_an_untied_head_go_to_adamw():
    # Qwen2 has q/k/v biases (attention, 1-D); an untied lm_head is a 2-D matrix of kind head.
    model = meta_model("Qwen2Config", vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False)
    named = list(model.named_parameters())
    groups = group_assignment(compose_optimizer("optimizer=muon"), named)
    biases = [n for n in groups if n.endswith(".bias")]
    assert len(biases) == 6 and all(groups[n] == "adamw" for n in biases)
    assert groups["lm_head.weight"] == "adamw" and module_kind("lm_head.weight") == "head"
    assert all(groups[n] == "hidden" for n, p in named if p.dim() == 2 and module_kind(n) in ("attention", "mlp"))


RULES = ("+optimizer.param_groups=[{name: norms, kind: norm, weight_decay: 0.0},"
         " {name: ffn, pattern: 'mlp\\.(up|down)_proj', lr: 0.1}, {name: vectors, ndim: [0, 1], lr: 0.2},"
         " {name: embed, kind: [embed, head], momentum: 0.5}]")


def test_first_matching_rule_wins_and_the_rest_is_the_default_group(smollm2):
    named = list(smollm2.named_parameters())
    groups = group_assignment(compose_optimizer("optimizer=sgd", RULES), named)
    assert groups["model.norm.weight"] == "norms"  # norms are 1-D too: the earlier rule takes them
    assert groups["model.layers.3.mlp.up_proj.weight"] == groups["model.layers.3.mlp.down_proj.weight"] == "ffn"
    assert groups["model.layers.3.mlp.gate_proj.weight"] == "default"  # matched by no rule
    assert groups["model.layers.3.self_attn.q_proj.weight"] == "default"
    assert groups["model.embed_tokens.weight"] == "embed"
    assert "vectors" not in groups.values()  # every 1-D tensor here is a norm


def test_one_class_gives_one_torch_optimizer_with_a_group_per_rule():
    model = torch.nn.ModuleDict({"mlp": torch.nn.Linear(4, 3), "norm": torch.nn.LayerNorm(3)})
    model["norm"].bias.requires_grad_(False)  # frozen: in no group
    opt = build_optimizer(compose_optimizer("optimizer=sgd", "optimizer.weight_decay=0.01", RULES), model)
    assert type(opt) is torch.optim.SGD
    got = [(g["lr"], g["weight_decay"], g["momentum"], [p.shape for p in g["params"]]) for g in opt.param_groups]
    assert got == [  # default (mlp.weight: 2-D, no rule), norms, vectors (mlp.bias); empty groups dropped
        (0.05, 0.01, 0.0, [torch.Size([3, 4])]),
        (0.05, 0.0, 0.0, [torch.Size([3])]),
        (0.2, 0.01, 0.0, [torch.Size([3])]),
    ]
    assert model["norm"].bias not in {p for g in opt.param_groups for p in g["params"]}


def test_a_rule_with_another_class_gets_that_classs_defaults():
    model = torch.nn.ModuleDict({"mlp": torch.nn.Linear(4, 3), "embed_tokens": torch.nn.Embedding(5, 3),
                                 "norm": torch.nn.LayerNorm(3)})
    cfg = compose_optimizer("optimizer=sgd", "+optimizer.param_groups=[{kind: embed, _target_: torch.optim.AdamW, "
                            "lr: 0.001}, {kind: norm, _target_: torch.optim.AdamW, lr: 0.002, weight_decay: 0.5}]")
    opt = build_optimizer(cfg, model)
    assert opt.names == ["sgd", "adamw"]
    adamw = opt.part("adamw")
    defaults = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))]).defaults
    assert [(g["lr"], g["weight_decay"], g["betas"]) for g in adamw.param_groups] == [
        (0.001, defaults["weight_decay"], defaults["betas"]), (0.002, 0.5, defaults["betas"])]
    assert [g["lr"] for g in opt.part("sgd").param_groups] == [0.05]


def test_a_class_that_rejects_a_parameter_is_one_line():
    model = torch.nn.ModuleDict({"mlp": torch.nn.Linear(4, 3)})
    with pytest.raises(ConfigError) as e:  # Muon on every parameter, the 1-D bias included
        build_optimizer(compose_optimizer("optimizer=muon", "optimizer.param_groups=[]"), model)
    msg = str(e.value)
    assert msg.startswith("optimizer (group default): Muon rejects mlp.bias of shape [3]: Muon only supports 2D")
    assert "\n" not in msg


@pytest.mark.parametrize("override,needle", [
    ("optimizer.param_groups.0.kind=mpl",
     "optimizer.param_groups.0.kind='mpl': allowed values are embed, attention, mlp, norm, head, other"),
    ("optimizer.param_groups.0.ndim=two", "optimizer.param_groups.0.ndim='two': must be an integer >= 0"),
    ("optimizer.param_groups.0.ndim=-1", "optimizer.param_groups.0.ndim=-1: must be an integer >= 0"),
    ("+optimizer.param_groups.0.pattern='('", "optimizer.param_groups.0.pattern='(': not a valid regular expression"),
    ("+optimizer.param_groups.0.foo=1",
     "optimizer.param_groups.0.foo=1: is not a match key (kind, ndim, pattern), the label 'name', '_target_' nor "
     "an argument of Muon; allowed: adjust_lr_fn, eps,"),
    ("+optimizer.param_groups.1.momentum=0.9", "optimizer.param_groups.1.momentum=0.9: is not a match key"),
    ("optimizer.param_groups.1.lr=0", "optimizer.param_groups.1.lr=0: must be a number > 0"),
    ("optimizer.param_groups.1._target_=torch.optim.Nope", "optimizer.param_groups.1._target_='torch.optim.Nope': cannot import it"),
    ("optimizer.param_groups.1.name=default", "optimizer.param_groups.1.name='default': must be a label not used"),
    ("optimizer.param_groups.1.betas=[0.9,2.0]", "optimizer.param_groups.1 (AdamW): Invalid beta parameter at index 1"),
    ("optimizer.param_groups=[{lr: 0.1},{kind: norm}]",
     "optimizer.param_groups.1={'kind': 'norm'}: never used: optimizer.param_groups.0 has no match keys"),
    ("optimizer.param_groups=[norm]", "optimizer.param_groups.0='norm': must be a mapping of match keys"),
])
def test_bad_rules_give_one_line_naming_the_key(override, needle):
    with pytest.raises(ConfigError) as e:
        resolve_optimizer(compose_optimizer("optimizer=muon", override))
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_param_groups_must_be_a_list():
    with pytest.raises(ConfigError, match=r"^optimizer.param_groups=\{'kind': 'norm'\}: must be a list of rules"):
        resolve_optimizer(compose_optimizer("+optimizer.param_groups={kind: norm}"))
