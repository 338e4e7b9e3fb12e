"""Optimizers from config, exact state bytes, HybridOptimizer, SignSGD: python -m pytest tests/test_optim.py"""

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from harness.errors import ConfigError
from harness.measure.memory import optimizer_state_bytes
from harness.measure.optim_diag import momentum_grad_cosine, second_moment_stats
from harness.measure.sparsity import module_kind
from harness.optim import (
    HybridOptimizer,
    RMSPropBC,
    SignSGD,
    build_optimizer,
    optimizer_kwargs,
    optimizer_label,
    validate_optimizer,
)
from tests._optim_helpers import CONF, compose_config, compose_optimizer

OPTIMIZER_FILES = sorted(p.stem for p in (CONF / "optimizer").glob("*.yaml"))


# ---------------------------------------------------------------- the node and its file

@pytest.mark.parametrize("name", OPTIMIZER_FILES)
def test_every_optimizer_file_validates_and_is_labelled_by_its_name(name):
    cfg = compose_optimizer(f"optimizer={name}")
    validate_optimizer(cfg)
    assert cfg.name == name == optimizer_label(cfg)  # `name` names the file it comes from
    assert (CONF / "optimizer" / f"{name}.yaml").read_text().startswith("# python -m harness optimizer=")


def test_a_new_target_runs_with_its_own_defaults_plus_lr():
    cfg = compose_optimizer("optimizer._target_=torch.optim.Adagrad")  # over conf/optimizer/sgd.yaml
    assert "momentum" in cfg and "nesterov" in cfg  # still in the node ...
    assert optimizer_kwargs(cfg) == {"lr": cfg.lr}  # ... but not passed: Adagrad's own defaults + lr
    assert optimizer_label(cfg) == "adagrad"
    opt = build_optimizer(cfg, torch.nn.Linear(3, 2))
    assert type(opt) is torch.optim.Adagrad and opt.defaults["lr"] == cfg.lr
    assert opt.defaults["weight_decay"] == torch.optim.Adagrad([torch.nn.Parameter(torch.zeros(1))]).defaults["weight_decay"]
    adam = compose_optimizer("optimizer=adamw", "optimizer._target_=torch.optim.Adam")
    assert optimizer_kwargs(adam) == {"lr": adam.lr} and optimizer_label(adam) == "adam"  # the file's betas, wd dropped


def test_a_key_the_user_set_is_still_checked_against_the_new_class():
    for override in ("optimizer.momentum=0.9", "+optimizer.foo=1"):
        with pytest.raises(ConfigError) as e:
            validate_optimizer(compose_optimizer("optimizer._target_=torch.optim.Adagrad", override))
        key = override.lstrip("+").split("=")[0]
        assert str(e.value).startswith(f"{key}=") and "is not an argument of Adagrad; allowed: " in str(e.value)
    kept = compose_optimizer("optimizer._target_=torch.optim.Adagrad", "optimizer.weight_decay=0.1")
    assert optimizer_kwargs(kept) == {"lr": 0.05, "weight_decay": 0.1}  # set by the user: kept


def test_the_files_own_class_keeps_every_key():
    cfg = compose_optimizer("optimizer=sgd", "optimizer.momentum=0.9")
    assert optimizer_kwargs(cfg) == {"lr": 0.05, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0}
    renamed = compose_optimizer("optimizer._target_=torch.optim.Adagrad", "~optimizer.momentum", "~optimizer.nesterov",
                                "optimizer.name=adagrad2")  # a name that is no file: nothing is dropped
    assert optimizer_kwargs(renamed) == {"lr": 0.05, "weight_decay": 0.0} and optimizer_label(renamed) == "adagrad2"


def test_lr_is_required_and_checked():
    with pytest.raises(ConfigError, match=r"^optimizer.lr=None: must be a number > 0$"):
        validate_optimizer(compose_optimizer("~optimizer.lr"))
    with pytest.raises(ConfigError, match=r"^optimizer.momentum=1.5: must be in \[0, 1\)$"):
        validate_optimizer(compose_optimizer("optimizer=signsgd", "optimizer.momentum=1.5"))


def test_rmsprop_file_target_is_importable():
    assert OmegaConf.load(CONF / "optimizer" / "rmsprop.yaml")._target_ == "harness.optim.RMSPropBC"
    assert type(build_optimizer(compose_optimizer("optimizer=rmsprop"), torch.nn.Linear(2, 2))) is RMSPropBC


# ---------------------------------------------------------------- exact state bytes on the tiny model

@pytest.fixture(scope="module")
def tiny(cache_dir):
    """conf/model/tiny.yaml's model (built once per test session into the shared cache)."""
    from harness.models import resolve_model_dir

    cfg = compose_config("model=tiny").model
    return cfg, resolve_model_dir(cfg, cache_dir)


def _trained(tiny, *overrides, steps=2):
    """The real tiny model after `steps` optimizer steps on a next-token loss."""
    from harness.models import load_model

    cfg, path = tiny
    model = load_model(cfg, path)
    model.train()
    opt = build_optimizer(compose_optimizer(*overrides), model)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, model.config.vocab_size, (2, 12), generator=g)  # [B, T]
    for _ in range(steps):
        model(x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return model, opt


def _is_muon(name: str, p: torch.Tensor) -> bool:
    return p.dim() == 2 and module_kind(name) in ("attention", "mlp")


def test_muon_state_bytes_are_exact(tiny):
    model, opt = _trained(tiny, "optimizer=muon")
    assert isinstance(opt, HybridOptimizer) and opt.names == ["muon", "adamw"]
    named = list(model.named_parameters())
    muon = sum(p.numel() for n, p in named if _is_muon(n, p))
    adamw = [p for n, p in named if not _is_muon(n, p)]
    assert muon > 0 and adamw
    want = 4 * muon + 8 * sum(p.numel() for p in adamw) + 4 * len(adamw)  # momentum; exp_avg, exp_avg_sq, step
    assert optimizer_state_bytes(opt) == want
    assert optimizer_state_bytes(opt.part("muon")) == 4 * muon
    assert {type(o) for o in opt.optimizers} == {torch.optim.Muon, torch.optim.AdamW}


@pytest.mark.parametrize("overrides,per_param,per_tensor", [
    (("optimizer=signsgd",), 0, 0),
    (("optimizer=signsgd", "optimizer.momentum=0.9"), 4, 0),
    (("optimizer._target_=torch.optim.Adagrad",), 4, 4),  # sum, step
    (("optimizer=adamw",), 8, 4),
    (("optimizer=sgd",), 0, 0),
])
def test_state_bytes_are_exact(tiny, overrides, per_param, per_tensor):
    model, opt = _trained(tiny, *overrides)
    params = list(model.parameters())
    assert optimizer_state_bytes(opt) == per_param * sum(p.numel() for p in params) + per_tensor * len(params)


# ---------------------------------------------------------------- HybridOptimizer

def _toy():
    torch.manual_seed(0)
    return torch.nn.ModuleDict({"mlp": torch.nn.Linear(6, 4), "norm": torch.nn.LayerNorm(4)})


def _loss(model, seed):
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(seed))  # [5, 6]
    return model["norm"](model["mlp"](x)).square().mean()


MUON = ("optimizer=muon", "optimizer.lr=0.01")


def test_hybrid_exposes_its_parts_groups_and_state():
    model = _toy()
    opt = build_optimizer(compose_optimizer(*MUON), model)
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.01]
    opt.param_groups[1]["lr"] = 0.5  # the same dicts as the parts'
    assert opt.part("adamw").param_groups[0]["lr"] == 0.5
    _loss(model, 0).backward()
    opt.step()
    assert len(opt.state) == 4 and set(opt.state) == {*opt.part("muon").state, *opt.part("adamw").state}
    outsider = torch.nn.Parameter(torch.zeros(1))
    assert opt.state.get(outsider) is None and len(opt.state) == 4  # a lookup creates no entry
    assert set(opt.state[model["mlp"].weight]) == {"momentum_buffer"}
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(TypeError):
        opt.add_param_group({"params": [outsider]})
    with pytest.raises(ValueError, match="shares parameters"):
        HybridOptimizer({"a": torch.optim.SGD([outsider], lr=1), "b": torch.optim.SGD([outsider], lr=1)})


def test_hybrid_checkpoint_resumes_exactly(tmp_path: Path):
    def run(steps, resume_from=None, save_to=None):
        model = _toy()
        opt = build_optimizer(compose_optimizer(*MUON), model)
        start = 0
        if resume_from:
            sd = torch.load(resume_from, weights_only=False)
            model.load_state_dict(sd["model"])
            opt.load_state_dict(sd["opt"])
            start = sd["step"]
        for s in range(start, steps):
            _loss(model, s).backward()
            opt.step()
            opt.zero_grad()
            if save_to and s + 1 == 2:
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": 2}, save_to)
        return [p.detach().clone() for p in model.parameters()]

    ck = tmp_path / "ck.pt"
    straight = run(4, save_to=ck)
    resumed = run(4, resume_from=ck)
    assert all(torch.equal(a, b) for a, b in zip(straight, resumed))
    two = run(2)
    assert not all(torch.equal(a, b) for a, b in zip(straight, two))  # steps 3-4 moved them
    opt = build_optimizer(compose_optimizer(*MUON), _toy())
    with pytest.raises(ValueError, match="do not match"):
        opt.load_state_dict({"muon": {}})


def test_hybrid_works_with_an_lr_scheduler():
    model = _toy()
    opt = build_optimizer(compose_optimizer(*MUON), model)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 ** step)
    _loss(model, 0).backward()
    opt.step()
    sched.step()
    assert [o.param_groups[0]["lr"] for o in opt.optimizers] == [0.005, 0.005]


def _cat_cosine(opt, key_of):
    """Cosine of all momentum buffers against all gradients, concatenated into two vectors."""
    ms, gs = [], []
    for p, st in opt.state.items():
        k = key_of(st)
        if k is not None:
            ms.append(st[k].reshape(-1))
            gs.append(p.grad.reshape(-1))
    m, g = torch.cat(ms).double(), torch.cat(gs).double()
    return (m @ g / (m.norm() * g.norm())).item()


def test_diagnostics_on_the_hybrid_and_on_signsgd():
    model = _toy()
    opt = build_optimizer(compose_optimizer(*MUON), model)
    _loss(model, 0).backward()
    assert momentum_grad_cosine(opt) is None and second_moment_stats(opt) is None  # no state yet
    opt.step()
    opt.zero_grad()
    _loss(model, 1).backward()
    want = _cat_cosine(opt, lambda st: "momentum_buffer" if "momentum_buffer" in st else "exp_avg")
    assert momentum_grad_cosine(opt) == pytest.approx(want, rel=1e-5)  # fp32 dots; Muon's buffer and AdamW's exp_avg
    v = second_moment_stats(opt)
    assert v["numel"] == sum(p.numel() for p in model["norm"].parameters()) + model["mlp"].bias.numel()  # AdamW's part

    for momentum, has_cos in ((0.0, False), (0.9, True)):
        model = _toy()
        opt = build_optimizer(compose_optimizer("optimizer=signsgd", f"optimizer.momentum={momentum}"), model)
        for s in range(2):
            _loss(model, s).backward()
            cos = momentum_grad_cosine(opt)
            opt.step()
            opt.zero_grad()
        assert second_moment_stats(opt) is None
        assert (cos is not None) == has_cos
        assert len(opt.state) == (4 if has_cos else 0)


# ---------------------------------------------------------------- SignSGD by hand

def test_signsgd_steps_by_lr_against_the_sign():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    opt = SignSGD([p], lr=0.1)
    p.grad = torch.tensor([0.3, -1e-9, 0.0])
    opt.step()
    assert torch.allclose(p.detach(), torch.tensor([0.9, -1.9, 0.5]))  # sign(0) = 0: no move
    assert len(opt.state) == 0
    opt = SignSGD([p], lr=0.1, weight_decay=0.5)
    p.grad = torch.tensor([-1.0, 1.0, 0.0])
    opt.step()  # p * (1 - 0.1 * 0.5) - 0.1 * sign(g)
    assert torch.allclose(p.detach(), torch.tensor([0.9 * 0.95 + 0.1, -1.9 * 0.95 - 0.1, 0.5 * 0.95]))


def test_signsgd_with_momentum_follows_the_buffer():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = SignSGD([p], lr=0.1, momentum=0.5)
    p.grad = torch.tensor([1.0, -1.0])
    opt.step()  # m = g1 = [1, -1]
    assert torch.allclose(p.detach(), torch.tensor([-0.1, 0.1]))
    p.grad = torch.tensor([-0.2, -0.2])
    opt.step()  # m = 0.5 * [1, -1] + [-0.2, -0.2] = [0.3, -0.7]: the sign of m, not of g
    assert torch.allclose(opt.state[p]["momentum_buffer"], torch.tensor([0.3, -0.7]))
    assert torch.allclose(p.detach(), torch.tensor([-0.2, 0.2]))
    with pytest.raises(ValueError):
        SignSGD([p], lr=0.1, momentum=1.0)


def test_hybrid_parts_go_through_torch_distributed_checkpoint():
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    model = _toy()
    opt = build_optimizer(compose_optimizer(*MUON), model)
    _loss(model, 0).backward()
    opt.step()
    sd = get_optimizer_state_dict(model, opt.optimizers)  # keyed by parameter name, both parts
    assert set(sd["state"]) == {"mlp.weight", "mlp.bias", "norm.weight", "norm.bias"}
    assert set(sd["state"]["mlp.weight"]) == {"momentum_buffer"} and "exp_avg_sq" in sd["state"]["norm.bias"]
    fresh = build_optimizer(compose_optimizer(*MUON), model)
    set_optimizer_state_dict(model, fresh.optimizers, sd)
    assert optimizer_state_bytes(fresh) == optimizer_state_bytes(opt)
    assert torch.equal(fresh.state[model["mlp"].weight]["momentum_buffer"], opt.state[model["mlp"].weight]["momentum_buffer"])
