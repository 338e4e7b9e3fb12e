"""The harness's public metric names: one list, shared by the report and the W&B dashboard.

    from harness.metrics import CURVES, SUMMARY, meaning
    CURVES["perf/rollout_s"].meaning      # per-step keys: metrics.jsonl lines, W&B history
    SUMMARY["mem/peak_bytes"].unit        # result keys: result.json, W&B run summary

Two kinds of key:
- "curve": written once per step (or per eval step) to metrics.jsonl and logged to W&B history;
- "summary": written once, at the end, to result.json and to the W&B run's summary (scalars, and
  the eval/ train/ lists; other nested values stay in result.json only).
A name may be both (e.g. `mem/peak_bytes_update`: the step's peak per step, the trial's peak at the end).
Anything that names a metric (report tables, plots, dashboard panels) takes it from here, and the
tests check these names against what a real tiny trial writes, so a rename cannot go unnoticed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    key: str  # the logged name, namespaced: train/ eval/ mem/ sparsity/ perf/ optim/ rollout/
    kind: str  # "curve" | "summary"
    meaning: str
    unit: str = ""  # fraction, bytes, s, count, tokens/s, ... ("" for dimensionless)
    when: str = "every step"  # curves: every step, eval steps, optimizer steps, ...; summary: end of trial


def _curve(key: str, meaning: str, unit: str = "", when: str = "every step") -> Metric:
    return Metric(key, "curve", meaning, unit, when)


def _summary(key: str, meaning: str, unit: str = "") -> Metric:
    return Metric(key, "summary", meaning, unit, when="end of trial")


_CURVES = (
    _curve("eval/val_accuracy", "greedy accuracy on the validation split", "fraction", "eval steps"),
    _curve("eval/test_accuracy", "greedy accuracy on the test split", "fraction", "first and last step"),
    _curve("train/reward_mean", "mean verifiable reward of the step's samples", "fraction"),
    _curve("train/reward_std", "std of the step's rewards"),
    _curve("train/loss", "the objective's loss: policy loss + KL term (grpo, rloo); token-mean cross-entropy (sft)"),
    _curve("train/pg_loss", "clipped policy-gradient loss"),
    _curve("train/kl", "k3 KL to the initial policy"),
    _curve("train/clip_frac", "share of tokens whose ratio was clipped", "fraction"),
    _curve("train/grad_norm", "gradient norm before clipping"),
    _curve("train/skipped", "1 if the step was skipped (non-finite loss or grad norm)", "count"),
    _curve("train/advantage_abs_mean", "mean |advantage| over samples"),
    _curve("train/finished_frac", "share of completions that ended with eos", "fraction"),
    _curve("train/groups_all_equal", "share of groups whose rewards were all equal (no signal)", "fraction"),
    _curve("train/response_len_mean", "mean completion length", "tokens"),
    _curve("train/verify_errors", "verifier calls that raised (scored 0)", "count"),
    _curve("train/verify_timeouts", "verifier calls that timed out (scored 0)", "count"),
    _curve("optim/lr", "learning rate of the first param group"),
    _curve("optim/momentum_grad_cosine", "cosine between momentum buffer and gradient", "", "momentum optimizers"),
    _curve("optim/update_norm", "norm of the optimizer step's weight change", "", "optimizer steps"),
    _curve("optim/second_moment_cv", "std/mean of the second-moment estimate", "", "adaptive optimizers"),
    _curve("optim/second_moment_std", "std over all parameters' entries of the second-moment estimate", "",
           "adaptive optimizers"),
    _curve("perf/rollout_s", "time generating the step's samples", "s"),
    _curve("perf/reward_s", "time scoring the samples", "s"),
    _curve("perf/update_s", "time of the policy update (forward, backward, optimizer step)", "s"),
    _curve("perf/sync_s", "time syncing the weights into the rollout engine (0 for rollout=hf)", "s"),
    _curve("perf/step_s", "wall time of the whole step", "s"),
    _curve("perf/optimizer_step_s", "time in optimizer.step() itself (part of perf/update_s)", "s"),
    _curve("perf/diagnostics_s", "what the per-step diagnostics add to the update (part of perf/update_s)", "s"),
    _curve("perf/rollout_tokens_per_s", "generated tokens per second", "tokens/s"),
    _curve("perf/update_tokens_per_s", "completion tokens trained on per second", "tokens/s"),
    _curve("mem/peak_bytes_rollout", "peak memory of this step's rollout phase", "bytes"),
    _curve("mem/peak_bytes_update", "peak memory of this step's update phase", "bytes"),
    _curve("mem/optimizer_state_bytes", "bytes of the optimizer's state tensors", "bytes"),
    _curve("sparsity/step_changed_fraction_bf16", "share of weights this step changed, compared in bf16", "fraction"),
    _curve("sparsity/step_changed_fraction_fp32", "share of fp32 master weights this step changed", "fraction"),
    _curve("sparsity/changed_fraction_bf16", "share of weights differing from the initial ones, in bf16", "fraction"),
    _curve("sparsity/changed_fraction_fp32", "share of weights differing from the initial ones, in fp32", "fraction"),
)

_SUMMARY = (
    _summary("status", "ok, failed, or pruned (stopped early at a validation evaluation, harness.prune)"),
    _summary("error", "the one-line reason a trial failed"),
    _summary("prune/step", "pruned trials: the step of the evaluation it stopped at", "count"),
    _summary("prune/value", "pruned trials: the objective's running value there (eval/val_accuracy for eval/val_accuracy_final)"),
    _summary("prune/reason", "pruned trials: why (the sweeper's rule, or diverged: non-finite loss, accuracy below the floor)"),
    _summary("prune/by", "pruned trials: what stopped it: optuna, asha (the grid's stop rule) or divergence"),
    _summary("trial", "optimizer, lr, momentum, model, task, seed, overrides, name, SLURM job id"),
    _summary("eval/val_accuracy_initial", "validation accuracy before training", "fraction"),
    _summary("eval/val_accuracy_final", "validation accuracy after training (selects the best lr)", "fraction"),
    _summary("eval/val_accuracy_best", "best validation accuracy over the eval steps", "fraction"),
    _summary("eval/val_curve", "validation accuracy per eval step: [{step, accuracy}]"),
    _summary("eval/accuracy_initial", "test accuracy before training", "fraction"),
    _summary("eval/accuracy_final", "test accuracy after training", "fraction"),
    _summary("eval/test_correct_initial", "per-problem test scores (0/1) before training, in split order"),
    _summary("eval/test_correct_final", "per-problem test scores (0/1) after training, in split order"),
    _summary("eval/val_correct_final", "per-problem validation scores (0/1) after training"),
    _summary("eval/test_size", "problems in the test split", "count"),
    _summary("train/reward_curve", "mean reward per step (empty for sft, which has no reward)"),
    _summary("train/reward_mean", "mean reward over all steps", "fraction"),
    _summary("train/reward_mean_last", "mean reward of the last step", "fraction"),
    _summary("train/loss_curve", "the objective's loss per step"),
    _summary("train/steps_done", "steps run", "count"),
    _summary("train/steps_skipped", "steps skipped for a non-finite loss or grad norm", "count"),
    _summary("train/verify_errors", "verifier calls that raised (scored 0)", "count"),
    _summary("train/verify_timeouts", "verifier calls that timed out (scored 0)", "count"),
    _summary("train/grad_norm_mean", "mean gradient norm"),
    _summary("mem/optimizer_state_bytes", "exact bytes of the optimizer's state tensors", "bytes"),
    _summary("mem/param_bytes", "bytes of the parameters", "bytes"),
    _summary("mem/grad_bytes", "bytes of the gradients", "bytes"),
    _summary("mem/reference_bytes", "bytes of the kept initial weights (KL reference, sparsity baseline)", "bytes"),
    _summary("mem/peak_bytes", "peak memory over all phases", "bytes"),
    _summary("mem/peak_bytes_rollout", "peak memory of the rollout phase", "bytes"),
    _summary("mem/peak_bytes_update", "peak memory of the update phase", "bytes"),
    _summary("mem/peak_bytes_eval", "peak memory of the eval phase", "bytes"),
    _summary("mem/peak_kind", "what the peak measures: cuda_max_allocated, cpu_rss or cpu_rss_retained"),
    _summary("sparsity/changed_fraction_bf16", "share of weights changed by training, compared in bf16", "fraction"),
    _summary("sparsity/changed_fraction_fp32", "share of fp32 master weights changed by training", "fraction"),
    _summary("sparsity/changed_fraction_tol1e-5", "share of fp32 weights that moved by more than 1e-5", "fraction"),
    _summary("sparsity/step_changed_fraction_bf16_mean", "mean share of weights one step changed, in bf16", "fraction"),
    _summary("sparsity/step_changed_fraction_fp32_mean", "mean share of weights one step changed, in fp32", "fraction"),
    _summary("sparsity/by_kind", "changed fractions per module kind (embed, attention, mlp, norm, head)"),
    _summary("sparsity/rounded_away_fraction", "share of weights moved in fp32 by less than half a bf16 step of the initial weight", "fraction"),
    _summary("sparsity/moved_bf16_equal_fraction", "share of weights moved in fp32 but equal in bf16 (changed fp32 - changed bf16)", "fraction"),
    _summary("sparsity/update_abs_median", "median over all weights of |final - initial| (fp32, from a log histogram)"),
    _summary("sparsity/rounded_away_by_kind", "bf16 / fp32 changed, rounded-away fractions and median |update| per module kind"),
    _summary("sparsity/by_layer", "changed fractions per transformer layer"),
    _summary("sparsity/layer_mean", "changed fractions averaged over layers"),
    _summary("sparsity/update_rank_mean", "mean effective rank of the 2-D weights' updates (99% energy)"),
    _summary("sparsity/update_rank_by_matrix", "effective update rank per 2-D weight"),
    _summary("sparsity/update_rank_median", "median effective update rank"),
    _summary("sparsity/update_rank_fraction_mean", "mean effective update rank / full rank", "fraction"),
    _summary("sparsity/numel", "weights compared", "count"),
    _summary("optim/momentum_grad_cosine_mean", "mean cosine between momentum and gradient"),
    _summary("optim/second_moment_cv_mean", "mean std/mean of the second-moment estimate"),
    _summary("optim/second_moment_std_mean", "mean over steps of the second-moment estimate's std (the paper's spread)"),
    _summary("optim/update_norm_mean", "mean norm of the weight change per step"),
    _summary("perf/rollout_s_mean", "rollout time per step", "s"),
    _summary("perf/reward_s_mean", "reward time per step", "s"),
    _summary("perf/update_s_mean", "update time per step", "s"),
    _summary("perf/sync_s_mean", "weight sync time per step (rollout engine)", "s"),
    _summary("perf/step_s_mean", "wall time per step", "s"),
    _summary("perf/diagnostics_s_mean", "per-step diagnostics' cost per step", "s"),
    _summary("perf/eval_s", "total eval time", "s"),
    _summary("perf/sparsity_s", "time measuring sparsity and update rank", "s"),
    _summary("perf/rollout_tokens_per_s", "generated tokens per second", "tokens/s"),
    _summary("perf/setup_s", "time loading model, tokenizer and rollout", "s"),
    _summary("perf/total_s", "wall time of the trial", "s"),
    _summary("params/trainable", "trainable parameters", "count"),
    _summary("params/total", "all parameters", "count"),
    _summary("params/initial_bf16_grid_fraction", "share of the initial weights that are bf16 numbers (1.0: a checkpoint published in bf16)", "fraction"),
    _summary("wandb_run_id", "the W&B run id (derived from the trial folder; result.json only)"),
    _summary("provenance", "resolved config, seed, versions, git commit, hardware (result.json only)"),
)

CURVES: dict[str, Metric] = {m.key: m for m in _CURVES}
SUMMARY: dict[str, Metric] = {m.key: m for m in _SUMMARY}

# Names the report and the dashboard agree on.
SELECT_BY = "eval/val_accuracy_final"  # the best lr of an optimizer: highest mean over seeds (validation, never test)
SELECT_TIEBREAK = "eval/val_accuracy_best"
TEST_ACCURACY = ("eval/accuracy_initial", "eval/accuracy_final")
VAL_ACCURACY = ("eval/val_accuracy_initial", "eval/val_accuracy_final", "eval/val_accuracy_best")
PHASE_TIMES = ("perf/rollout_s", "perf/reward_s", "perf/update_s", "perf/sync_s")  # curves: the parts of a step
PEAK_MEMORY = ("mem/peak_bytes_rollout", "mem/peak_bytes_update", "mem/peak_bytes_eval", "mem/peak_bytes")
CHANGED = ("sparsity/changed_fraction_bf16", "sparsity/changed_fraction_fp32", "sparsity/changed_fraction_tol1e-5")
STEP_SPARSITY = ("sparsity/step_changed_fraction_bf16", "sparsity/step_changed_fraction_fp32",
                 "sparsity/changed_fraction_bf16", "sparsity/changed_fraction_fp32")
# result.json keys that are scalars (what a runs table can show); lists and dicts are excluded
TABLE = (*TEST_ACCURACY, *VAL_ACCURACY, "train/reward_mean", "train/reward_mean_last", "mem/optimizer_state_bytes",
         "mem/peak_bytes", *CHANGED, "sparsity/update_rank_mean", "perf/step_s_mean", "train/steps_skipped", "status",
         "prune/step", "prune/reason")


def meaning(key: str) -> str:
    """The meaning of a public key (curve or summary); KeyError names the key if it is not public."""
    m = SUMMARY.get(key) or CURVES.get(key)
    if m is None:
        raise KeyError(f"{key!r} is not a public metric (harness/metrics.py)")
    return m.meaning


def curve(key: str) -> str:
    """key, checked to be a per-step metric (use when a panel or plot names one)."""
    if key not in CURVES:
        raise KeyError(f"{key!r} is not a per-step metric in harness/metrics.py")
    return key


def summary(key: str) -> str:
    """key, checked to be a result/summary metric."""
    if key not in SUMMARY:
        raise KeyError(f"{key!r} is not a result key in harness/metrics.py")
    return key
