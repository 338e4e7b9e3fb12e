"""A trial's summary (the result.json keys) from the trainer's own history, and its printed lines.

Per-step keys are averaged without being named one by one: every numeric key in the steps'
metrics under `optim/`, `sparsity/step_` and `train/grad_norm` gets a `<key>_mean` (null where no step
had a value, e.g. the momentum cosine of plain SGD).
"""

from __future__ import annotations

import statistics
from typing import Any, Optional

from harness.measure.memory import optimizer_state_bytes, param_bytes

_MEANED = ("optim/", "sparsity/step_", "train/grad_norm", "perf/diagnostics_s", "perf/optimizer_step_s")


def _mean(xs: list) -> Optional[float]:
    xs = [x for x in xs if isinstance(x, (int, float)) and not isinstance(x, bool)]
    return statistics.fmean(xs) if xs else None


def step_means(steps: list[dict]) -> dict[str, Optional[float]]:
    keys = sorted({k for s in steps for k in s if k.startswith(_MEANED) and k != "optim/lr"})
    return {f"{k}_mean": _mean([s.get(k) for s in steps]) for k in keys}


def summarise(trainer: Any, model: Any, optimizer: Any, final_sparsity: dict,
              param_bytes_total: Optional[int] = None, state_bytes_total: Optional[int] = None) -> dict:
    """result.json's measurement keys. Under sharding the caller passes the byte totals summed over ranks."""
    h = trainer.history
    steps = h["steps"]
    val = [c["accuracy"] for c in h["val"]]
    test = h["test"]
    ph = trainer.phases
    n_steps = max(1, len(steps))
    rewards = [s["train/reward_mean"] for s in steps if "train/reward_mean" in s]
    res: dict[str, Any] = {
        "eval/val_accuracy_initial": val[0] if val else None,
        "eval/val_accuracy_final": val[-1] if val else None,
        "eval/val_accuracy_best": max(val) if val else None,
        "eval/val_curve": h["val"],
        "eval/accuracy_initial": test[0]["accuracy"] if test else None,
        "eval/accuracy_final": test[-1]["accuracy"] if test else None,
        "eval/test_correct_initial": test[0]["correct"] if test else None,
        "eval/test_correct_final": test[-1]["correct"] if test else None,
        "eval/val_correct_final": h["val_correct_final"],
        "eval/test_size": len(test[-1]["correct"]) if test else 0,
        "train/reward_curve": rewards,  # empty for an objective without rewards (sft)
        "train/reward_mean": _mean(rewards),
        "train/reward_mean_last": rewards[-1] if rewards else None,
        "train/loss_curve": [s.get("train/loss") for s in steps],
        "train/steps_done": trainer.step, "train/steps_skipped": trainer.skipped,
        "train/verify_errors": trainer.verify_errors, "train/verify_timeouts": trainer.verify_timeouts,
        "mem/optimizer_state_bytes": state_bytes_total if state_bytes_total is not None else optimizer_state_bytes(optimizer),
        "mem/param_bytes": param_bytes_total if param_bytes_total is not None else param_bytes(model),
        "mem/grad_bytes": trainer.max_grad_bytes,
        "mem/reference_bytes": trainer.reference_bytes,
        "mem/peak_bytes": max(ph.peak_bytes.values()) if ph.peak_bytes else None,
        "mem/peak_bytes_rollout": ph.peak_bytes.get("rollout"),
        "mem/peak_bytes_update": ph.peak_bytes.get("update"),
        "mem/peak_bytes_eval": ph.peak_bytes.get("eval"),
        "mem/peak_kind": ph.peak.kind,
        "params/trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "params/total": sum(p.numel() for p in model.parameters()),
    }
    res.update(step_means(steps))
    for phase in ("rollout", "reward", "update", "sync"):
        res[f"perf/{phase}_s_mean"] = ph.seconds.get(phase, 0.0) / n_steps
    res["perf/step_s_mean"] = _mean([s.get("perf/step_s") for s in steps])
    res["perf/eval_s"] = ph.seconds.get("eval", 0.0)
    res["perf/sparsity_s"] = ph.seconds.get("sparsity", 0.0)
    res["perf/rollout_tokens_per_s"] = _mean([s.get("perf/rollout_tokens_per_s") for s in steps])
    res.update(final_sparsity)
    return res


def _first_last(result: dict) -> str:
    """The training signal's first and last step: the mean reward (RL), else the loss (sft)."""
    what, curve = "mean reward", result.get("train/reward_curve")
    if not curve:
        what, curve = "loss", [x for x in result.get("train/loss_curve") or [] if x is not None]
    if not curve:
        return f"{what} per step: n/a"
    return f"{what} per step: first {curve[0]:.3f}, last {curve[-1]:.3f}"


def summary_lines(result: dict) -> list[str]:
    """The short summary printed at the end of a run."""
    if result.get("status") in ("pruned", "paused"):
        return [f"trial {result['status']} at step {result.get('prune/step')}: {result.get('prune/reason')}"]
    if result.get("status") != "ok":
        return [f"trial FAILED: {result.get('error')}"]

    def gb(x):
        return "n/a" if x is None else f"{x / 1e9:.3f} GB"

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.4g}%"

    return [
        f"accuracy (greedy): validation {result['eval/val_accuracy_initial']:.3f} -> {result['eval/val_accuracy_final']:.3f}"
        f" (best {result['eval/val_accuracy_best']:.3f}), test {result['eval/accuracy_initial']:.3f} -> "
        f"{result['eval/accuracy_final']:.3f} ({result['eval/test_size']} problems)",
        _first_last(result),
        f"optimizer state: {gb(result['mem/optimizer_state_bytes'])}   params: {gb(result['mem/param_bytes'])}"
        f"   peak memory ({result['mem/peak_kind']}): {gb(result['mem/peak_bytes'])}",
        f"weights changed: {pct(result['sparsity/changed_fraction_bf16'])} in bf16, "
        f"{pct(result['sparsity/changed_fraction_fp32'])} in fp32, {pct(result['sparsity/changed_fraction_tol1e-5'])} by more than 1e-5",
        f"time: {result['perf/step_s_mean']:.2f} s/step, {result['perf/total_s']:.1f} s total",
    ]
