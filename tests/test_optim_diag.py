"""Optimizer diagnostics against hand-computed values: python -m pytest tests/test_optim_diag.py"""

import math
import statistics

import pytest
import torch

from harness.measure.optim_diag import (
    grad_global_norm,
    momentum_grad_cosine,
    second_moment_stats,
    update_norm,
)


def two_params():
    return torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))


def set_grads(params, grads):
    for p, g in zip(params, grads):
        p.grad = torch.tensor(g)


G1 = ([1.0, 2.0, 2.0], [3.0, 4.0])  # norms 3 and 5
G2 = ([2.0, 0.0, 1.0], [0.0, 1.0])  # norms sqrt(5) and 1
# global cosine of G1 and G2: (4 + 4) / (sqrt(9 + 25) * sqrt(5 + 1)) = 8 / sqrt(204)
# (not the mean of per-tensor cosines 4/(3*sqrt(5)) = 0.596 and 4/5 = 0.8)
COS_G1_G2 = 8 / math.sqrt(204)


@pytest.mark.parametrize("make_opt", [
    lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),  # buffer after step 1 = g1
    lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.5),  # still g1 at step 1
    lambda ps: torch.optim.AdamW(ps, lr=0.1),  # exp_avg after step 1 = 0.1 * g1
    lambda ps: torch.optim.Adam(ps, lr=0.1, betas=(0.5, 0.9)),  # 0.5 * g1
])
def test_momentum_grad_cosine_after_one_step(make_opt):
    params = two_params()
    opt = make_opt(params)
    set_grads(params, G1)
    assert momentum_grad_cosine(opt) is None  # no buffer before the first step
    opt.step()
    set_grads(params, G2)
    assert momentum_grad_cosine(opt) == pytest.approx(COS_G1_G2, rel=1e-6)
    set_grads(params, G1)
    assert momentum_grad_cosine(opt) == pytest.approx(1.0, rel=1e-6)  # same direction
    set_grads(params, ([-x for x in G1[0]], [-x for x in G1[1]]))
    assert momentum_grad_cosine(opt) == pytest.approx(-1.0, rel=1e-6)


def test_momentum_grad_cosine_none_cases():
    params = two_params()
    sgd = torch.optim.SGD(params, lr=0.1)  # no momentum: no buffer ever
    set_grads(params, G1)
    sgd.step()
    assert momentum_grad_cosine(sgd) is None
    rms = torch.optim.RMSprop(params, lr=0.1)  # no exp_avg, no momentum buffer
    rms.step()
    assert momentum_grad_cosine(rms) is None
    mom = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    mom.step()
    set_grads(params, ([0.0] * 3, [0.0] * 2))
    assert momentum_grad_cosine(mom) is None  # zero gradient norm


def test_momentum_grad_cosine_skips_params_without_grad():
    params = two_params()
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    set_grads(params, G1)
    opt.step()
    params[0].grad = torch.tensor(G2[0])
    params[1].grad = None  # only the first tensor counts: 4 / (3 * sqrt(5))
    assert momentum_grad_cosine(opt) == pytest.approx(4 / (3 * math.sqrt(5)), rel=1e-6)


# after one Adam step with beta2 = 0.999: v = 0.001 * g^2 for G1
V_ADAM = [0.001, 0.004, 0.004, 0.009, 0.016]  # mean 0.0068, population std 5.2688e-3


def test_second_moment_stats_after_one_adamw_step():
    params = two_params()
    opt = torch.optim.AdamW(params, lr=0.1, betas=(0.9, 0.999), weight_decay=0.01)
    set_grads(params, G1)
    assert second_moment_stats(opt) is None  # no state before the first step
    opt.step()
    st = second_moment_stats(opt)
    assert st["numel"] == 5
    assert st["mean"] == pytest.approx(0.0068, rel=1e-6)
    assert st["std"] == pytest.approx(math.sqrt(74e-6 - 0.0068**2), rel=1e-5)
    assert st["std"] == pytest.approx(statistics.pstdev(V_ADAM), rel=1e-5)
    assert st["cv"] == pytest.approx(statistics.pstdev(V_ADAM) / 0.0068, rel=1e-5)
    logs = [math.log10(v) for v in V_ADAM]  # -3, -2.398, -2.398, -2.046, -1.796
    assert st["log10_mean"] == pytest.approx(statistics.fmean(logs), rel=1e-6)
    assert st["log10_std"] == pytest.approx(statistics.pstdev(logs), rel=1e-5)
    # blocks of 2 entries (fp32 within a block, merged in float64) give the same numbers
    chunked = second_moment_stats(opt, block=2)
    for k in ("mean", "std", "cv", "log10_mean", "log10_std"):
        assert chunked[k] == pytest.approx(st[k], rel=1e-6)


def test_second_moment_stats_rmsprop_and_sgd():
    params = two_params()
    rms = torch.optim.RMSprop(params, lr=0.1, alpha=0.99)  # square_avg = 0.01 * g^2
    set_grads(params, G1)
    rms.step()
    st = second_moment_stats(rms)
    assert st["mean"] == pytest.approx(0.068, rel=1e-6)
    assert st["cv"] == pytest.approx(statistics.pstdev(V_ADAM) / 0.0068, rel=1e-5)  # scale-free
    assert st["log10_std"] == pytest.approx(statistics.pstdev(math.log10(v) for v in V_ADAM),
                                            rel=1e-5)  # shifted by exactly 1
    sgd = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    sgd.step()
    assert second_moment_stats(sgd) is None


def test_grad_global_norm():
    a, b, c = (torch.nn.Parameter(torch.zeros(n)) for n in (2, 1, 4))
    a.grad, b.grad = torch.tensor([3.0, 4.0]), torch.tensor([12.0])  # c has no grad
    assert grad_global_norm([a, b, c]) == pytest.approx(13.0)
    assert grad_global_norm([c]) == 0.0


def test_update_norm():
    before = [torch.tensor([1.0, 1.0]), torch.tensor([[0.0, 0.0]])]
    after = [torch.tensor([4.0, 5.0]), torch.tensor([[12.0, 0.0]])]  # deltas (3,4), (12,0)
    assert update_norm(before, after) == pytest.approx(13.0)
    with pytest.raises(ValueError):
        update_norm(before, after[:1])
    # with a real SGD step the update norm is lr * grad norm
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([p], lr=0.5)
    saved = [p.detach().clone()]
    p.grad = torch.tensor([1.0, 2.0, 2.0])  # norm 3
    opt.step()
    assert update_norm(saved, [p]) == pytest.approx(1.5)
