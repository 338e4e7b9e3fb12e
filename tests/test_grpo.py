"""GRPO pieces against numbers worked out by hand."""

import math

import pytest
import torch

from harness.algo.grpo import (aggregate, clipped_policy_loss, group_advantages, kl_k1, kl_k2, kl_k3,
                               token_logprobs)


def test_group_advantages_by_hand():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    adv = group_advantages(r, group_size=4)
    # group 1: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = 0.57735 -> +-0.866025; group 2: all equal -> 0
    expected = torch.tensor([0.866025, -0.866025, -0.866025, 0.866025, 0, 0, 0, 0])
    assert torch.allclose(adv, expected, atol=1e-5)
    assert torch.equal(group_advantages(r, 4, norm_by_std=False)[:4], torch.tensor([0.5, -0.5, -0.5, 0.5]))


def test_group_advantages_groups_are_adjacent():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0])
    assert group_advantages(r, 2, norm_by_std=False).tolist() == [0.5, -0.5, 0.0, 0.0]


def test_kl_estimators_by_hand():
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    assert kl_k1(logp, ref).item() == pytest.approx(math.log(2))
    assert kl_k2(logp, ref).item() == pytest.approx(0.5 * math.log(2) ** 2)
    # k3: r = ref/pi = 0.5 -> r - log r - 1 = 0.5 + 0.693147 - 1
    assert kl_k3(logp, ref).item() == pytest.approx(0.193147, abs=1e-6)
    assert kl_k3(logp, logp).item() == 0.0
    assert kl_k3(torch.tensor([0.0]), torch.tensor([30.0])).item() == 10.0  # clamped like verl


def test_clipped_policy_loss_four_cases():
    old = torch.zeros(4)
    logp = torch.log(torch.tensor([1.5, 1.5, 0.5, 0.5]))
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    loss, clipped = clipped_policy_loss(logp, old, adv, clip_ratio=0.2)
    # A>0 ratio 1.5 -> clip binds at 1.2; A<0 ratio 1.5 -> 1.5; A>0 ratio 0.5 -> 0.5; A<0 ratio 0.5 -> clip at 0.8
    assert torch.allclose(loss, torch.tensor([-1.2, 1.5, -0.5, 0.8]), atol=1e-6)
    assert clipped.tolist() == [1.0, 0.0, 0.0, 1.0]


def test_on_policy_gradient_is_minus_advantage():
    logp = torch.tensor([-1.0, -2.0], requires_grad=True)
    loss, _ = clipped_policy_loss(logp, logp.detach(), torch.tensor([2.0, -3.0]), 0.2)
    loss.sum().backward()
    assert logp.grad.tolist() == [-2.0, 3.0]


def test_aggregate_modes_by_hand():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    ids = torch.tensor([0, 0, 1, 1, 1])
    assert aggregate(x, ids, 2, "token-mean", 5).item() == 3.0
    assert aggregate(x, ids, 2, "seq-mean-token-sum", 5).item() == 7.5
    assert aggregate(x, ids, 2, "seq-mean-token-mean", 5).item() == 2.75
    with pytest.raises(ValueError, match="loss_agg"):
        aggregate(x, ids, 2, "mean", 5)


def test_aggregate_over_micro_batches_equals_full_batch():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    ids = torch.tensor([0, 0, 1, 1, 1])
    for mode in ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean"):
        full = aggregate(x, ids, 2, mode, 5)
        parts = aggregate(x[:2], ids[:2], 2, mode, 5) + aggregate(x[2:], ids[2:], 2, mode, 5)
        assert parts.item() == pytest.approx(full.item())


def test_token_logprobs_equals_log_softmax_and_chunks():
    torch.manual_seed(0)
    head = torch.nn.Linear(4, 7, bias=False)
    h, tgt = torch.randn(5, 4), torch.tensor([0, 6, 3, 3, 1])
    ref = torch.log_softmax(head(h), -1)[torch.arange(5), tgt]
    assert torch.allclose(token_logprobs(h, head, tgt), ref, atol=1e-6)
    assert torch.allclose(token_logprobs(h, head, tgt, chunk=2), ref, atol=1e-6)
