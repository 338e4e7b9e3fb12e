"""Objectives in the one loop: SFT's loss and gradient by hand, RLOO's advantages by hand, and each
objective's trial end to end on the tiny model with the same result keys as GRPO."""

import json

import pytest
import torch
from hydra import compose, initialize_config_dir

from harness.algo.grpo import aggregate, token_logprobs
from harness.algo.rloo import leave_one_out_advantages
from harness.config import register
from harness.errors import ConfigError
from harness.objectives import OBJECTIVES, build_objective
from harness.trial import run_trial
from tests.conftest import ROOT, run_harness

register()


def _cfg(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=["model=tiny", "logger=none", "threads=1", *overrides])


def test_rloo_advantages_by_hand():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    adv = leave_one_out_advantages(r, group_size=4)
    # group 1: sample 0's baseline is mean(0, 0, 1) = 1/3 -> 2/3; sample 1's is mean(1, 0, 1) = 2/3 -> -2/3
    expected = torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3, 0.0, 0.0, 0.0, 0.0])
    assert torch.allclose(adv, expected, atol=1e-6)
    # = G/(G-1) * (r - mean): GRPO's advantage without the std, scaled
    assert torch.allclose(leave_one_out_advantages(torch.tensor([3.0, 1.0]), 2), torch.tensor([2.0, -2.0]))
    with pytest.raises(ValueError, match="at least 2"):
        leave_one_out_advantages(r, 1)


def test_sft_loss_and_gradient_by_hand_on_two_tokens():
    """Token-mean cross-entropy of two answer tokens through the same functions the loop calls
    (token_logprobs -> the objective's loss -> aggregate): loss = -(log p(y1) + log p(y2)) / 2 and
    dL/dW = sum_i (softmax(W h_i) - onehot(y_i)) h_i^T / 2."""
    h = torch.tensor([[1.0, 0.0], [0.5, -1.0]])  # [2, H] hidden states predicting the 2 answer tokens
    head = torch.nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[0.2, -0.1], [0.0, 0.3], [-0.4, 0.1]]))
    y = torch.tensor([2, 0])
    t = _cfg("trainer=sft").trainer
    obj = build_objective(t)
    logp = token_logprobs(h, head, y)  # [2]
    per_token, parts = obj.loss(t, logp, logp.detach(), torch.tensor([0, 0]), None)
    loss = aggregate(per_token, torch.tensor([0, 0]), 1, t.loss_agg, total_tokens=2)
    loss.backward()

    W = head.weight.detach()
    p = torch.softmax(h @ W.T, dim=-1)  # [2, 3]
    want_loss = -(torch.log(p[0, 2]) + torch.log(p[1, 0])) / 2
    onehot = torch.nn.functional.one_hot(y, 3).float()
    want_grad = (p - onehot).T @ h / 2  # [3, 2]
    assert parts == {} and loss.item() == pytest.approx(want_loss.item(), abs=1e-6)
    assert torch.allclose(head.weight.grad, want_grad, atol=1e-6)
    assert not obj.uses_reference(t)


def test_unknown_objective_is_one_line(tmp_path):
    p = run_harness("model=tiny", "logger=none", "trainer.objective=ppo", f"hydra.run.dir={tmp_path}/run",
                    env={"HARNESS_CACHE": str(tmp_path / "empty-cache")})
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip() == "error: trainer.objective='ppo': allowed values are grpo, rloo, sft", p.stderr
    with pytest.raises(ConfigError):
        OBJECTIVES.validate("ppo")


def test_sft_trial_via_cli_has_the_same_result_keys_as_grpo(cache_dir, tmp_path):
    runs = {}
    for trainer in ("sft", "grpo"):
        p = run_harness("model=tiny", f"trainer={trainer}", "trainer.steps=2", "logger=none", "threads=1",
                        f"hydra.run.dir={tmp_path / trainer}")
        assert p.returncode == 0, p.stderr[-2000:]
        runs[trainer] = json.loads((tmp_path / trainer / "result.json").read_text())
    sft, grpo = runs["sft"], runs["grpo"]
    assert sft["status"] == "ok" and sft["trial"]["objective"] == "sft" and grpo["trial"]["objective"] == "grpo"
    assert set(sft) == set(grpo)
    assert sft["train/reward_curve"] == [] and sft["train/reward_mean"] is None and len(sft["train/loss_curve"]) == 2
    assert len(grpo["train/reward_curve"]) == 2
    assert sft["sparsity/changed_fraction_fp32"] > 0 and sft["train/steps_done"] == 2
    steps = [json.loads(x) for x in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    trained = [s for s in steps if "train/loss" in s]
    assert all("train/reward_mean" not in s and "train/kl" not in s for s in trained)
    assert all(s["train/response_len_mean"] >= 2 for s in trained)  # the answer's digits and eos


def test_sft_loss_goes_down_on_the_tiny_task(cache_dir, tmp_path):
    """Teacher forcing on the same 8 reference answers each step (full-batch gradient descent with a small
    lr): the cross-entropy falls step after step."""
    cfg = _cfg("trainer=sft", "trainer.steps=4", "trainer.prompts_per_step=8", "task.num_train=8", "optimizer.lr=0.001",
               "trainer.eval_every=0", "task.num_eval=8", "task.num_val=8")
    r = run_trial(cfg, tmp_path, progress=False)
    assert r["status"] == "ok", r["error"]
    loss = r["train/loss_curve"]
    assert all(b < a for a, b in zip(loss, loss[1:])), loss
    assert loss[-1] < loss[0] - 0.01, loss


def test_rloo_trial_runs_and_differs_from_grpo_only_in_the_advantage(cache_dir, tmp_path):
    common = ("trainer.steps=2", "trainer.eval_every=0", "task.num_eval=8", "task.num_val=8")
    rloo = run_trial(_cfg("trainer=rloo", *common), tmp_path / "rloo", progress=False)
    grpo = run_trial(_cfg("trainer=grpo", *common), tmp_path / "grpo", progress=False)
    assert rloo["status"] == grpo["status"] == "ok"
    assert rloo["trial"]["objective"] == "rloo"
    # the first step's samples come before any update: the same rollouts, so the same rewards
    assert rloo["train/reward_curve"][0] == grpo["train/reward_curve"][0]
    # but a different advantage, so a different update
    assert rloo["sparsity/update_abs_median"] != grpo["sparsity/update_abs_median"]
