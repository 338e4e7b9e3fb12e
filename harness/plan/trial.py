"""One trial's plan from its composed config: `plan_trial(cfg, world, device)`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from harness.errors import ConfigError, check
from harness.plan import estimate
from harness.plan.archs import model_config
from harness.plan.gpus import GIB, Device
from harness.plan.shapes import Shapes, optimizer_state, shapes
from harness.rollout import ROLLOUTS

OLD_WEIGHT_DIAGNOSTICS = ("update_norm", "step_sparsity")  # they keep a chunk of the old weights


@dataclass
class TrialPlan:
    inputs: estimate.Inputs
    shapes: Shapes
    device: Device
    source: str  # where the model's config.json came from
    optimizer: str  # label, or what was assumed
    fits: bool
    worst: estimate.Phase
    phases: list[estimate.Phase]
    flops: estimate.Flops
    step_s: Optional[float]
    steps: int
    eval_flops: float  # all evaluations of the trial

    @property
    def trial_s(self) -> Optional[float]:
        if self.step_s is None:
            return None
        return self.step_s * self.steps + self.eval_flops / (self.inputs.world * self.device.peak_flops * self.inputs.mfu)

    def problem(self) -> Optional[str]:
        """The one line of why it does not fit, or None."""
        x = self.inputs
        if self.fits:
            return None
        gib = lambda b: f"{b / GIB:.1f} GiB"  # noqa: E731
        where = f"{x.world} x {self.device.name}" if self.device.kind == "cuda" else "cpu"
        if self.worst.total <= x.memory_bytes:  # the peaks fit: the rollout backend's plan refused it
            return f"does not fit on {where}: {x.rollout.problem(x)}"
        name, size = self.worst.biggest()
        return (f"does not fit on {where}: {self.worst.name} needs {gib(self.worst.total)} per device of "
                f"{gib(x.memory_bytes)}; biggest term: {name} {gib(size)}")


def world_size(plan: Any, launcher: Any) -> int:
    """plan.world_size, else the launcher's tasks_per_node x nodes, else 1."""
    if plan.world_size is not None:
        check(isinstance(plan.world_size, int) and plan.world_size >= 1, "plan.world_size", plan.world_size,
              "must be an integer >= 1")
        return int(plan.world_size)
    if launcher is not None and "tasks_per_node" in launcher:
        return int(launcher.get("tasks_per_node") or 1) * int(launcher.get("nodes") or 1)
    return 1


def plan_trial(cfg: Any, world: int, device: Device) -> TrialPlan:
    p, t, m = cfg.plan, cfg.trainer, cfg.model
    fsdp = cfg.distributed.strategy == "fsdp2"
    check(fsdp or world == 1, "plan.world_size", world,
          "must be 1 with distributed=none (one process); distributed=fsdp2 shards a trial over several")
    check(0 < p.mfu <= 1, "plan.mfu", p.mfu, "must be in (0, 1]")
    conf, source = model_config(m, cfg.cache_dir)
    sh = shapes(conf, m.param_dtype)
    state, label, foreach = optimizer_state(cfg.optimizer, conf, m.param_dtype)
    pb, cb = estimate.BYTES[m.param_dtype], estimate.BYTES[m.dtype]
    # harness.reference keeps a tensor in the compute dtype when it is exact there (bf16 checkpoints)
    narrow = cb < pb and estimate.BYTES.get(sh.weights_dtype, pb) <= cb
    # trainer.initial_weights=checkpoint: read back from the model's safetensors, none kept (one process
    # on a CPU; the reads land in CPU memory, so on a GPU harness.reference keeps the tensors in device
    # memory; FSDP2 keeps a sharded reference model)
    on_file = t.initial_weights == "checkpoint" and not fsdp and device.kind == "cpu"
    prompt = int(p.prompt_tokens) if p.prompt_tokens is not None else int(t.max_prompt_tokens)
    check(prompt >= 1, "plan.prompt_tokens", p.prompt_tokens, "must be >= 1 (or null: trainer.max_prompt_tokens)")
    # the backend's own terms (harness.rollout.plan): its registry entry brings them
    backend = str(cfg.rollout.backend)
    make_plan = ROLLOUTS.entry(backend).extra.get("plan")
    if make_plan is None:
        raise ConfigError(f"rollout.backend={backend!r}: the planner has no plan for it (its registry entry needs "
                          "plan=, see harness/rollout/plan.py)")
    rollout = make_plan(cfg.rollout, p, device, int(conf.get("max_position_embeddings") or 1 << 30))
    x = estimate.Inputs(
        params=sh.params, layer_params=sh.layer_params, root_params=sh.root_params, matmul_params=sh.matmul_params,
        largest_tensor=sh.largest_tensor, vocab=sh.vocab, hidden=sh.hidden, intermediate=sh.intermediate,
        layers=sh.layers, kv_dim=sh.kv_dim, qk_norm=sh.qk_norm, param_bytes=pb, compute_bytes=cb,
        reference_bytes=0 if on_file else (cb if narrow else pb), optimizer_bytes=state, optimizer_foreach=foreach,
        world=world, fsdp=fsdp, checkpointing=bool(m.gradient_checkpointing), autocast=(cb != pb and not fsdp),
        device_kind=device.kind, prompts_per_step=int(t.prompts_per_step), group_size=int(t.group_size),
        prompt_tokens=prompt, new_tokens=int(t.max_new_tokens), micro_batch=int(t.micro_batch_size),
        kl=t.kl_coef > 0, diag_chunk=int(t.get("diagnostics_chunk_numel") or 0)
        if any(d in OLD_WEIGHT_DIAGNOSTICS for d in (t.get("diagnostics") or [])) else 0,
        rollout=rollout, memory_bytes=device.memory_bytes,
        reserve_bytes=float(p.cpu_baseline_gb if device.kind == "cpu" else p.reserve_gb) * GIB,
        peak_flops=device.peak_flops, mfu=float(p.mfu))
    if fsdp and x.prompts_per_step % world:
        raise ConfigError(f"trainer.prompts_per_step={x.prompts_per_step}: must be a multiple of the world size "
                          f"{world} (a prompt's group never spans two ranks)")
    ok, worst, ps = estimate.fit(x)
    fl = estimate.step_flops(x)
    # validation every eval_every steps and at both ends, the test split at both ends
    n_val, n_test = int(cfg.task.get("num_val") or 0), int(cfg.task.get("num_eval") or 0)
    val_evals = (int(t.steps) // int(t.eval_every) if t.eval_every else 0) + 2
    eval_tokens = (n_val * val_evals + 2 * n_test) * (prompt + int(t.eval_max_new_tokens))
    return TrialPlan(x, sh, device, source, label, ok, worst, ps, fl, estimate.step_seconds(x, fl), int(t.steps),
                     2.0 * sh.params * eval_tokens)
