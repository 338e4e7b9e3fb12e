"""Will a trial fit on the devices it asks for, and what will it cost? Nothing is run or loaded.

    python -m harness.plan                                              # the default trial, this machine
    python -m harness.plan model=qwen3-8b optimizer=adamw distributed=fsdp2 plan.world_size=8 plan.gpu=h100-80gb
    python -m harness.plan -m +sweeps=qwen3_8b_gpu                      # a sweep: its trials and GPU-hours
    python -m harness.plan plan.gpu=cpu malloc_retain=false             # CPU: the process RSS of the update

Takes the overrides of `python -m harness` (composed the same way, same preflight) plus `plan.*`
(conf/plan/default.yaml). Prints, per device: weights, gradients, optimizer state, reference,
activations (with and without checkpointing), logits, the rollout engine (vLLM share and KV
cache), each phase's peak and the headroom; tokens, FLOPs and time per step at plan.mfu; for a
sweep, its trials and GPU-hours. Exits 0 when every trial fits, 1 when one does not (one line on
stderr naming the biggest term), 2 for a bad value.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from harness.errors import ConfigError
from harness.plan.gpus import GIB

GB = lambda b: f"{b / GIB:8.2f}"  # noqa: E731


def _gib(b: float) -> str:
    return f"{b / GIB:.2f} GiB"


def report(tp: Any, label: str = "") -> list[str]:
    """The plan of one trial as lines of text."""
    from harness.plan import estimate

    x, sh, dev = tp.inputs, tp.shapes, tp.device
    where = f"{x.world} x {dev.name}" if dev.kind == "cuda" else f"cpu ({_gib(dev.memory_bytes)} RAM)"
    shard = f"/{x.world} (FSDP2)" if x.fsdp else "unsharded"
    lines = [f"{label}model {sh.params / 1e9:.3f} B params ({sh.layers} layers, hidden {sh.hidden}, config: {tp.source}); "
             f"optimizer {tp.optimizer}; {'fsdp2' if x.fsdp else 'one process'}; on {where}, {_gib(x.memory_bytes)} per device",
             f"  per device, weights {shard}:   GiB"]
    for phase in tp.phases:
        lines.append(f"  {phase.name}")
        for name, b in phase.terms.items():
            lines.append(f"    {name:<52}{GB(b)}")
        lines.append(f"    {'= peak':<52}{GB(phase.total)}")
    other = dataclasses.replace(x, checkpointing=not x.checkpointing)
    a_on = estimate.activations(x if x.checkpointing else other)
    a_off = estimate.activations(other if x.checkpointing else x)
    lines.append(f"  activations per micro-batch of {max(x.micro_batch, x.group_size)} sequences "
                 f"({x.prompt_tokens} prompt + {x.new_tokens} new tokens): {_gib(a_on)} with checkpointing, "
                 f"{_gib(a_off)} without (model.gradient_checkpointing={str(x.checkpointing).lower()})")
    lines += x.rollout.notes(x)  # the rollout backend's own lines (vLLM on GPU: its share and KV cache)
    head = x.memory_bytes - tp.worst.total
    lines.append(f"  peak {_gib(tp.worst.total)} = {tp.worst.total / 1e9:.3f} GB ({tp.worst.name}) of {_gib(x.memory_bytes)}: "
                 f"headroom {_gib(head)} -> {'fits' if tp.fits else 'DOES NOT FIT'}")
    f = tp.flops
    lines.append(f"  per step: {f.prompt_tokens} prompt + {f.generated_tokens} generated tokens, {f.train_tokens} through the "
                 f"update; FLOPs {f.total:.3g} (update {f.update:.3g}, reference {f.reference:.3g}, rollout {f.rollout:.3g})")
    if tp.step_s is not None:
        lines.append(f"  time per step at MFU {x.mfu:g} of {dev.peak_flops / 1e12:.0f} TFLOP/s x {x.world}: {tp.step_s:.1f} s; "
                     f"trial ({tp.steps} steps + evals): {tp.trial_s / 3600:.2f} h = {tp.trial_s * x.world / 3600:.1f} GPU-hours")
    else:
        lines.append("  time: not estimated (no FLOP/s figure for this device)")
    return lines


def plan_trials(trials: Any) -> list:
    """A TrialPlan per trial config (each distinct plan computed once)."""
    from harness.plan.gpus import resolve
    from harness.plan.trial import plan_trial, world_size

    master = trials.master
    device = resolve(master.plan)
    launcher = master.hydra.get("launcher")
    plans = []
    for cfg in trials.configs:
        plans.append(plan_trial(cfg, world_size(cfg.plan, launcher), device))
    return plans


def main(argv: list[str]) -> int:
    from hydra import initialize_config_dir

    from harness.config import register
    from harness.plan.schema import register_schema
    from harness.plan.sweep import load
    from harness.preflight import CONF, REPO, _cli_overrides, check_keys, check_overrides

    from hydra.core.config_store import ConfigStore

    register()
    register_schema(ConfigStore.instance())
    problem = check_overrides(argv) or check_keys(argv)
    parsed = _cli_overrides(argv)
    if problem or parsed is None:
        print(f"error: {problem or 'cannot read the command line'}", file=sys.stderr)
        return 2
    lines, multirun = parsed
    if not any(a.startswith("hydra.searchpath") for a in lines):
        lines = [f"hydra.searchpath=[file://{REPO}]", *lines]
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            trials = load(lines, multirun)
            plans = plan_trials(trials)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    seen: dict = {}
    for tp, ov in zip(plans, trials.overrides):
        key = tp.inputs
        if key in seen:
            seen[key][1].append(ov)
            continue
        seen[key] = (tp, [ov])
    for tp, ovs in seen.values():
        label = f"[{len(ovs)} trial(s), e.g. {' '.join(ovs[0]) or 'defaults'}]\n" if multirun else ""
        print("\n".join(report(tp, label)))
    if multirun:
        hours = [tp.trial_s * tp.inputs.world / 3600 for tp in plans if tp.trial_s is not None]
        per = trials.count / max(1, len(plans))
        total = sum(hours) * per if len(hours) == len(plans) else None
        print(f"sweep: {trials.count} trials" + (f", {total:.0f} GPU-hours at MFU {plans[0].inputs.mfu:g}" if total else ""))
    bad = [tp for tp in plans if not tp.fits]
    if bad:
        print(f"error: {bad[0].problem()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
