"""The dashboard's layout as plain data: sections of panels, each naming metrics from harness.metrics.

Two kinds of section, by which runs they show:
- "best": each optimizer (variant: objective + optimizer + momentum) at its best lr, seeds grouped
  (mean ± std); "RL against SFT" is the paper's 2x2 (objective x optimizer) with its diagnostics;
- "all": every trial of the sweep (validation curves, the lr sensitivity scatter, the runs table);
  a pruned trial (harness.prune) finished cleanly: its curve ends where it stopped, and the runs
  table's status, prune/step and prune/reason say so.
Panels name per-step keys (line plots: metrics.jsonl / W&B history) or result keys (bars and
scatters: result.json / W&B summary) only through harness.metrics.curve/summary, which raise on a
name that is not public, so importing this module already checks every name.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness import metrics as M

# What runs are grouped by: the W&B job type (a run attribute: the harness's optimizer label, "sgd",
# "adamw", harness.loggers) and config keys (the resolved Hydra config W&B stores as run.config).
JOB_TYPE = "JobType"
RUN_ATTRIBUTES = (JOB_TYPE,)
LR, MOMENTUM, OBJECTIVE = "optimizer.lr", "optimizer.momentum", "trainer.objective"
VARIANT_GROUPBY = (JOB_TYPE, OBJECTIVE, MOMENTUM)  # "sgd", "sgd" with momentum 0.9, "adamw", per objective (grpo, sft)
ALL_GROUPBY = (JOB_TYPE, OBJECTIVE, MOMENTUM, LR)  # the runs table of every trial: one row per (variant, lr), seeds grouped


@dataclass(frozen=True)
class Panel:
    kind: str  # line (per-step keys vs step) | bar (result keys) | scatter (result key vs a config key) | compare
    title: str
    keys: tuple[str, ...] = ()  # metric names: curves for "line", result keys for "bar"/"scatter"
    x: str = "Step"  # line: "Step"; scatter: a config key
    log_x: bool = False


@dataclass(frozen=True)
class Section:
    name: str
    runs: str  # "best" | "all"
    panels: tuple[Panel, ...]


def line(title: str, key: str) -> Panel:
    return Panel("line", title, (M.curve(key),))


def bar(title: str, *keys: str) -> Panel:
    return Panel("bar", title, tuple(M.summary(k) for k in keys))


def vs_lr(title: str, key: str) -> Panel:
    return Panel("scatter", title, (M.summary(key),), x=LR, log_x=True)


SECTIONS = (
    Section("Accuracy and reward, each optimizer at its best lr", "best", (
        line("validation accuracy", "eval/val_accuracy"),
        line("mean reward per step", "train/reward_mean"),
        bar("test accuracy: initial, final", *M.TEST_ACCURACY),
        bar("validation accuracy: initial, final, best", *M.VAL_ACCURACY),
    )),
    Section("Memory", "best", (
        bar("optimizer state (bytes)", "mem/optimizer_state_bytes"),
        bar("peak memory per phase (bytes)", *M.PEAK_MEMORY),
        bar("parameters, gradients, reference (bytes)", "mem/param_bytes", "mem/grad_bytes", "mem/reference_bytes"),
    )),
    Section("Weights changed", "best", (
        bar("changed fraction: bf16, fp32, > 1e-5", *M.CHANGED),
        *(line(M.meaning(k), k) for k in M.STEP_SPARSITY),
        bar("effective rank of the update", "sparsity/update_rank_mean"),
    )),
    Section("Step time", "best", (
        *(line(f"{k} (s)", k) for k in M.PHASE_TIMES),
        bar("mean time per step by phase (s)", "perf/rollout_s_mean", "perf/reward_s_mean", "perf/update_s_mean",
            "perf/sync_s_mean", "perf/step_s_mean"),
    )),
    Section("RL against SFT: objective x optimizer, each at its best lr", "best", (
        bar("test accuracy: initial, final (by objective and optimizer)", *M.TEST_ACCURACY),
        bar("changed fraction, bf16 (by objective and optimizer)", "sparsity/changed_fraction_bf16"),
        bar("momentum-gradient cosine, mean over steps (paper: 0.997 SFT, -0.007 RL)", "optim/momentum_grad_cosine_mean"),
        bar("second-moment std, mean over steps (paper: 5.11e-6 SFT, 2.29e-7 RL)", "optim/second_moment_std_mean"),
        line("momentum-gradient cosine per step", "optim/momentum_grad_cosine"),
        line("second-moment std per step (Adam's v)", "optim/second_moment_std"),
    )),
    Section("Best runs side by side", "best", (Panel("compare", "config and summary of the best runs"),)),
    Section("Learning-rate sensitivity, every trial", "all", (
        line("validation accuracy, every trial (a pruned trial's line ends where it stopped)", "eval/val_accuracy"),
        vs_lr("final validation accuracy vs lr", "eval/val_accuracy_final"),
        vs_lr("final test accuracy vs lr", "eval/accuracy_final"),
        vs_lr("changed fraction (bf16) vs lr", "sparsity/changed_fraction_bf16"),
        vs_lr("optimizer state vs lr", "mem/optimizer_state_bytes"),
    )),
)
TABLE = tuple(M.summary(k) for k in M.TABLE)  # the runs table's columns (W&B summary keys), after the run name and lr


def panel_keys(sections=SECTIONS) -> dict[str, set[str]]:
    """{"curve": per-step keys, "summary": result keys, "config": config keys} the layout names
    (besides the run attributes RUN_ATTRIBUTES, which the harness's logger sets on every run)."""
    out: dict[str, set[str]] = {"curve": set(), "summary": set(TABLE), "config": set(ALL_GROUPBY) - set(RUN_ATTRIBUTES)}
    for s in sections:
        for p in s.panels:
            out["curve" if p.kind == "line" else "summary"].update(p.keys)
            if p.kind == "scatter":
                out["config"].add(p.x)
    return out
