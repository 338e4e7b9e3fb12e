"""A real trial on the tiny model: every result key, exact optimizer-state bytes, failure handling."""

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from harness.config import register
from harness.trial import run_trial
from tests.conftest import ROOT, run_harness

register()

RESULT_KEYS = [
    "status", "error", "trial", "eval/accuracy_initial", "eval/accuracy_final", "eval/val_accuracy_initial",
    "eval/val_accuracy_final", "eval/val_accuracy_best", "eval/val_curve", "eval/test_correct_final",
    "eval/test_correct_initial", "eval/test_size", "sparsity/step_changed_fraction_bf16_mean",
    "sparsity/step_changed_fraction_fp32_mean",
    "train/reward_curve", "train/steps_done", "train/steps_skipped", "mem/optimizer_state_bytes", "mem/param_bytes",
    "mem/grad_bytes", "mem/peak_bytes", "mem/peak_bytes_rollout", "mem/peak_bytes_update", "mem/peak_kind",
    "sparsity/changed_fraction_bf16", "sparsity/changed_fraction_fp32", "sparsity/changed_fraction_tol1e-5",
    "sparsity/by_kind", "sparsity/by_layer", "sparsity/update_rank_mean", "optim/update_norm_mean",
    "train/grad_norm_mean", "perf/rollout_s_mean", "perf/reward_s_mean", "perf/update_s_mean", "perf/eval_s",
    "perf/sparsity_s", "perf/step_s_mean", "perf/rollout_tokens_per_s", "provenance", "params/trainable",
]
STEP_KEYS = ["train/reward_mean", "train/loss", "train/kl", "train/grad_norm", "optim/update_norm", "perf/rollout_s",
             "perf/update_s", "mem/peak_bytes_rollout", "mem/peak_bytes_update", "sparsity/step_changed_fraction_bf16",
             "sparsity/step_changed_fraction_fp32", "sparsity/changed_fraction_bf16", "sparsity/changed_fraction_fp32"]


def _cfg(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=["model=tiny", "logger=none", "trainer.steps=2", *overrides])


def test_cli_trial_writes_every_key(cache_dir, tmp_path):
    out = tmp_path / "trial"
    p = run_harness("model=tiny", "optimizer=sgd", "trainer.steps=2", f"hydra.run.dir={out}",
                    f"logger.wandb.project=test")
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads((out / "result.json").read_text())
    missing = [k for k in RESULT_KEYS if k not in r]
    assert not missing, missing
    assert r["status"] == "ok" and r["error"] is None
    assert r["mem/optimizer_state_bytes"] == 0  # plain SGD keeps no state
    assert r["train/steps_done"] == 2 and len(r["train/reward_curve"]) == 2
    assert r["params/trainable"] > 100_000
    assert 0 < r["sparsity/changed_fraction_fp32"] <= 1
    assert r["sparsity/changed_fraction_bf16"] <= r["sparsity/changed_fraction_fp32"]
    assert r["trial"]["optimizer"] == "sgd" and r["trial"]["model"] == "tiny"
    assert r["provenance"]["config"]["optimizer"]["lr"] == 0.05
    steps = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [s for s in steps if "train/reward_mean" in s]
    assert len(train_rows) == 2 and all(k in train_rows[0] for k in STEP_KEYS)
    # per-step sparsity: the first step's changes are all the changes so far; the last step's count vs the
    # initial weights is the final measurement's
    first, last = train_rows
    assert first["sparsity/step_changed_fraction_fp32"] == first["sparsity/changed_fraction_fp32"] > 0
    assert last["sparsity/changed_fraction_fp32"] == r["sparsity/changed_fraction_fp32"]
    assert last["sparsity/changed_fraction_bf16"] == r["sparsity/changed_fraction_bf16"]
    # the test split is the same for every trial of a seed; validation is a different set of problems
    assert r["eval/test_size"] == len(r["eval/test_correct_final"]) > 0
    assert r["eval/accuracy_final"] == sum(r["eval/test_correct_final"]) / r["eval/test_size"]
    assert r["eval/val_accuracy_final"] == r["eval/val_curve"][-1]["accuracy"]
    # the summary printed at the end
    for needle in ("accuracy (greedy): validation", "optimizer state: 0.000 GB", "weights changed:", "in bf16", "in fp32"):
        assert needle in p.stdout
    # W&B offline run with the metrics
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))


@pytest.mark.parametrize("opt,extra,per_param,per_tensor", [
    ("sgd", ["optimizer.momentum=0.9"], 4, 0),
    ("adamw", [], 8, 4),  # exp_avg + exp_avg_sq (fp32) + a 4-byte step tensor per parameter tensor
    ("rmsprop", [], 4, 0),  # one square_avg per parameter; its step is a python int
])
def test_optimizer_state_bytes_are_exact(cache_dir, tmp_path, opt, extra, per_param, per_tensor):
    r = run_trial(_cfg(f"optimizer={opt}", "trainer.steps=1", "trainer.eval_every=0", "task.num_eval=4", "task.num_val=4",
                       "trainer.diagnostics=[]", *extra), tmp_path, progress=False)
    assert r["status"] == "ok", r["error"]
    cfg = _cfg()
    from harness.models import load_model, resolve_model_dir
    model = load_model(cfg.model, resolve_model_dir(cfg.model, cache_dir), "cpu")
    n_tensors = len(list(model.parameters()))
    assert r["mem/optimizer_state_bytes"] == per_param * r["params/trainable"] + per_tensor * n_tensors


def test_momentum_diagnostics_are_logged(cache_dir, tmp_path):
    r = run_trial(_cfg("optimizer=adamw", "trainer.steps=2", "trainer.eval_every=0", "task.num_eval=4", "task.num_val=4"),
                  tmp_path, progress=False)
    assert r["status"] == "ok", r["error"]
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [x for x in rows if "train/reward_mean" in x]
    assert train[0]["optim/momentum_grad_cosine"] is None  # no momentum before the first step
    assert -1.0 <= train[1]["optim/momentum_grad_cosine"] <= 1.0
    assert train[1]["optim/second_moment_mean"] > 0 and train[1]["optim/update_norm"] > 0


def test_huge_lr_fails_the_trial_with_the_reason(cache_dir, tmp_path):
    p = run_harness("model=tiny", "logger=none", "optimizer.lr=1e30", "trainer.steps=6", f"hydra.run.dir={tmp_path}")
    assert p.returncode == 1
    r = json.loads((tmp_path / "result.json").read_text())
    assert r["status"] == "failed"
    assert "non-finite" in r["error"] and ("diverged" in r["error"] or "weights" in r["error"])
    assert 1 <= r["train/steps_done"] < 6  # stopped early
    assert "trial FAILED" in p.stdout


def test_nan_steps_are_skipped_and_counted(cache_dir, tmp_path):
    """A NaN gradient skips the step (counted); if every step is skipped the trial fails with that reason."""
    from harness.models import load_model, load_tokenizer, resolve_model_dir
    from harness.rollout.hf import HFRollout
    from harness.tasks import build_task
    from harness.objectives import build_objective
    from harness.trainer import Trainer, TrialFailed

    from harness.measure.diagnostics import Diagnostics
    from harness.tasks.verify import SafeVerifier

    cfg = _cfg("trainer.eval_every=0", "task.num_eval=2", "task.num_val=2")
    d = resolve_model_dir(cfg.model, cache_dir)
    tok, model = load_tokenizer(d, cfg.model), load_model(cfg.model, d, "cpu")
    rollout = HFRollout(model, tok.eos_token_id, tok.pad_token_id, torch.float32)
    task = build_task(cfg.task, 0)
    trainer = Trainer(cfg.trainer, objective=build_objective(cfg.trainer), model=model, tokenizer=tok, task=task,
                      rollout=rollout, optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
                      verifier=SafeVerifier(task.verifier, 2.0), compute_dtype=torch.float32, device=torch.device("cpu"),
                      diagnostics=Diagnostics(list(cfg.trainer.diagnostics), 1 << 20, 1 << 16), log=lambda m, s: None, seed=0)
    model.model.norm.weight.register_hook(lambda g: g * float("nan"))  # as an overflow in backward would
    with pytest.raises(TrialFailed, match="every step was skipped"):
        trainer.train()
    assert trainer.skipped == 2 and trainer.updates_applied == 0
    trainer.close()


@pytest.mark.parametrize("args,needle", [
    (["optimizer=foo"], "error: optimizer=foo: no such config; allowed values are adamw, muon, rmsprop, sgd, signsgd"),
    (["model=gpt5"], "error: model=gpt5: no such config; allowed values are"),
    (["optimizer.lr=-0.1"], "error: optimizer.lr=-0.1: must be a number > 0"),
    (["optimizer.lr=0"], "error: optimizer.lr=0: must be a number > 0"),
    (["trainer.group_size=1"], "error: trainer.group_size=1: must be >= 2"),
    (["trainer.initial_weights=disk"], "error: trainer.initial_weights='disk': allowed values are checkpoint, memory"),
    (["trainer.min_new_tokens=17"], "error: trainer.min_new_tokens=17: must be in [0, trainer.max_new_tokens=16]"),
    (["task=math", "task.path=/nonexistent/data.jsonl"], "error: task file /nonexistent/data.jsonl does not exist"),
])
def test_bad_input_is_one_line_before_any_work(tmp_path, args, needle):
    p = run_harness("model=tiny", "logger=none", f"hydra.run.dir={tmp_path}/run", *args,
                    env={"HARNESS_CACHE": str(tmp_path / "empty-cache")})
    assert p.returncode == 2
    assert p.stderr.strip() == needle or p.stderr.strip().startswith(needle), p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "empty-cache").exists()  # no model was built: nothing ran


@pytest.mark.parametrize("content,needle", [
    ("", "is empty"),
    ('{"problem": "1+1", "answer": "2"}\n{"problem": "2+2", "answer": \n', "data.jsonl:2: malformed JSON line"),
])
def test_bad_task_file_is_one_line(tmp_path, content, needle):
    f = tmp_path / "data.jsonl"
    f.write_text(content)
    p = run_harness("model=tiny", "logger=none", "task=math", f"task.path={f}", f"hydra.run.dir={tmp_path}/run")
    assert p.returncode == 2 and needle in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_diagnostics_do_not_change_the_trial(cache_dir, tmp_path):
    """The per-step diagnostics run the optimizer step a chunk at a time: the trial is bit-identical without them."""
    common = ("optimizer=adamw", "trainer.steps=3", "trainer.eval_every=0", "task.num_eval=8", "task.num_val=8")
    a = run_trial(_cfg(*common, "trainer.diagnostics_chunk_numel=5000"), tmp_path / "with", progress=False)
    b = run_trial(_cfg(*common, "trainer.diagnostics=[]"), tmp_path / "without", progress=False)
    assert a["status"] == b["status"] == "ok"
    for key in ("train/reward_curve", "eval/test_correct_final", "eval/val_correct_final", "sparsity/changed_fraction_bf16",
                "sparsity/changed_fraction_fp32", "sparsity/update_rank_mean", "mem/optimizer_state_bytes"):
        assert a[key] == b[key], key
    assert a["optim/update_norm_mean"] > 0 and "optim/update_norm_mean" not in b
