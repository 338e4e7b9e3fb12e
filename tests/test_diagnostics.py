"""Per-step diagnostics: the chunked step equals one step, and the counts are exact on hand-made weights.

    python -m pytest -q tests/test_diagnostics.py
"""

import math

import pytest
import torch

from harness.measure.diagnostics import DIAGNOSTICS, Diagnostics, StepContext, observed_step
from harness.optim import RMSPropBC
from harness.reference import InitialWeights


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))


def _grads(model, seed):
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g)


OPTIMIZERS = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.1),
    "sgd_momentum": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.01),
    "rmsprop": lambda ps: RMSPropBC(ps, lr=1e-2, weight_decay=0.01),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("chunk", [1, 20, 10**9])
def test_chunked_step_is_bit_identical_to_one_step(name, chunk):
    a, b = _model(), _model()
    oa, ob = OPTIMIZERS[name](a.parameters()), OPTIMIZERS[name](b.parameters())
    seen = []
    for step in range(3):
        _grads(a, step), _grads(b, step)
        oa.step()
        observed_step(ob, list(b.named_parameters()), chunk, lambda names, old, new: seen.extend(names))
        for pa, pb in zip(a.parameters(), b.parameters()):
            assert torch.equal(pa, pb)
            assert pb.grad is not None  # every gradient is back after the chunked step
    names = [n for n, _ in b.named_parameters()]
    assert seen == names * 3  # each parameter observed once per step, in order


@pytest.mark.parametrize("block", [5, 1 << 16])  # blocks that split rows, and one block per tensor
def test_step_sparsity_counts_below_bf16_resolution_as_zero_in_bf16(block):
    w = torch.nn.Parameter(torch.full((4, 8), 1.0))
    model = torch.nn.Module()
    model.w = w
    initial = InitialWeights(model, torch.float32)
    opt = torch.optim.SGD([w], lr=1.0)
    d = Diagnostics(["step_sparsity", "update_norm"], 1 << 20, block)
    ctx = StepContext(opt, initial)
    # 1e-4 is far below bf16's resolution at 1.0 (2**-8 = 0.0039): every fp32 entry moves, none in bf16
    w.grad = torch.full_like(w, 1e-4)
    m = d.step(ctx, [("w", w)])
    assert m["sparsity/step_changed_fraction_fp32"] == 1.0 and m["sparsity/step_changed_fraction_bf16"] == 0.0
    assert m["sparsity/changed_fraction_fp32"] == 1.0 and m["sparsity/changed_fraction_bf16"] == 0.0
    assert m["optim/update_norm"] == pytest.approx(math.sqrt(32) * 1e-4, rel=1e-3)
    # a second step that changes half the entries by a full bf16 step: step and total counts differ
    g = torch.zeros_like(w)
    g[:2] = 2 ** -6
    w.grad = g
    m = d.step(ctx, [("w", w)])
    assert m["sparsity/step_changed_fraction_fp32"] == 0.5 and m["sparsity/step_changed_fraction_bf16"] == 0.5
    assert m["sparsity/changed_fraction_fp32"] == 1.0 and m["sparsity/changed_fraction_bf16"] == 0.5


@pytest.mark.parametrize("block", [1, 7, 1 << 16])
def test_blockwise_counts_and_norm_equal_whole_tensor_comparisons(block):
    model = _model()
    with torch.no_grad():  # some entries exactly on the bf16 grid, one exact zero: edge cases of the counts
        model[0].weight[0] = model[0].weight[0].to(torch.bfloat16).float()
        model[0].weight[1, 0] = 0.0
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    d = Diagnostics(["step_sparsity", "update_norm"], 1 << 20, block)
    ctx = StepContext(opt, InitialWeights(model, torch.float32))
    for step in range(2):
        _grads(model, step)
        with torch.no_grad():
            model[2].bias.grad.zero_()  # AdamW's decay alone moves it: below bf16 resolution
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        m = d.step(ctx, list(model.named_parameters()))
        after = dict(model.named_parameters())
        bf = torch.bfloat16
        numel = sum(p.numel() for p in after.values())
        want = {
            "sparsity/step_changed_fraction_bf16": sum(int((after[n].to(bf) != before[n].to(bf)).sum()) for n in after),
            "sparsity/step_changed_fraction_fp32": sum(int((after[n] != before[n]).sum()) for n in after),
            "sparsity/changed_fraction_bf16": sum(int((after[n].to(bf) != initial[n].to(bf)).sum()) for n in after),
            "sparsity/changed_fraction_fp32": sum(int((after[n] != initial[n]).sum()) for n in after),
        }
        for k, count in want.items():
            assert round(m[k] * numel) == count, k
        assert 0 < want["sparsity/step_changed_fraction_bf16"] < want["sparsity/step_changed_fraction_fp32"]
        norm = torch.cat([(after[n] - before[n]).reshape(-1) for n in after]).double().norm().item()
        assert m["optim/update_norm"] == pytest.approx(norm, rel=1e-5)


def test_diagnostics_of_an_optimizer_without_state_are_none():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    d = Diagnostics(["momentum_grad_cosine", "second_moment"], 1 << 20, 1 << 16)
    _grads(model, 0)
    m = d.step(StepContext(opt, InitialWeights(model, torch.float32)), list(model.named_parameters()))
    assert m["optim/momentum_grad_cosine"] is None and m["optim/second_moment_cv"] is None


def test_momentum_cosine_is_the_global_cosine():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    d = Diagnostics(["momentum_grad_cosine"], 1 << 20, 1 << 16)
    ctx = StepContext(opt, InitialWeights(model, torch.float32))
    _grads(model, 0)
    d.step(ctx, list(model.named_parameters()))
    _grads(model, 1)
    bufs = [opt.state[p]["momentum_buffer"].reshape(-1) for p in model.parameters()]
    grads = [p.grad.reshape(-1) for p in model.parameters()]
    m, g = torch.cat(bufs).double(), torch.cat(grads).double()
    want = (m @ g / (m.norm() * g.norm())).item()
    assert d.step(ctx, list(model.named_parameters()))["optim/momentum_grad_cosine"] == pytest.approx(want, rel=1e-6)  # fp32 dot products per tensor


def test_unknown_diagnostic_is_one_line():
    from harness.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^trainer.diagnostics='nosuch': allowed values are "):
        DIAGNOSTICS.entry("nosuch")


def test_initial_weights_keep_bf16_exact_tensors_in_bf16():
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    with torch.no_grad():
        model[1].weight.copy_(model[1].weight.to(torch.bfloat16).float())  # exactly bf16 values
    init = InitialWeights(model, torch.bfloat16)
    assert init["1.weight"].dtype == torch.bfloat16  # exact in bf16 and used under autocast: half the bytes
    assert init["0.weight"].dtype == torch.float32  # not bf16-exact: kept as it is
    fwd = init.for_forward()
    assert fwd["1.weight"].dtype == torch.bfloat16  # a Linear weight: autocast casts it to bf16 anyway
    assert torch.equal(fwd["1.weight"].float(), model[1].weight)
    assert init.nbytes < sum(p.numel() * 4 for p in model.parameters())
    assert InitialWeights(model, torch.float32)["1.weight"].dtype == torch.float32  # no autocast: fp32
