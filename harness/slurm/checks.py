"""Checks of a SLURM launcher config before any job is submitted: one line for each problem.

Besides SLURM answering, the partition and the time limit, `fit_problem` plans every trial of the
sweep (harness.plan) on the GPUs its jobs ask for (`hydra.launcher.gpus_per_node` x `nodes`, of
type `plan.gpu`, one rank per `tasks_per_node`) and refuses the sweep when one does not fit,
naming the biggest term. `plan.check=false` submits anyway. CPU jobs (gpus_per_node 0) are not planned, nor
sweeps whose GPU type is unknown (plan.gpu=auto on a machine without one: name it, e.g. plan.gpu=h100-80gb).
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any, Optional

SETUP_HINT = "for a local cluster: bash .ci/slurm_setup.sh && python -m harness.local_slurm start"


def partitions(timeout_s: float = 15.0) -> list[str]:
    """Partition names from sinfo (the default one first, its '*' removed). Raises RuntimeError."""
    try:
        p = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"SLURM is not answering: sinfo timed out after {timeout_s:g} s "
                           "(is slurmctld running? python -m harness.local_slurm status)") from None
    if p.returncode != 0:
        msg = (p.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"SLURM is not answering: sinfo failed ({msg}); {SETUP_HINT}")
    names = [n.strip() for n in p.stdout.split()]
    return sorted(names, key=lambda n: not n.endswith("*"))


def check_launcher(launcher: Any) -> Optional[str]:
    """The first problem with a hydra.launcher node as one line, or None (also None if not SLURM)."""
    target = str(launcher.get("_target_", ""))
    if not target.endswith("SlurmLauncher"):
        return None
    timeout_min, delay = launcher.get("timeout_min"), launcher.get("signal_delay_s")
    if timeout_min is not None and delay is not None and timeout_min * 60 <= delay:
        return (f"hydra.launcher.timeout_min={timeout_min}: too short to reach a checkpoint: the pre-timeout "
                f"signal comes signal_delay_s={delay} s before the limit; allowed: timeout_min * 60 > signal_delay_s")
    problem = fit_problem(launcher)
    if problem:
        return problem
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return f"hydra/launcher=slurm needs SLURM (sbatch, sinfo not found on PATH); {SETUP_HINT}"
    try:
        names = partitions()
    except RuntimeError as e:
        return str(e)
    plain = [n.rstrip("*") for n in names]
    part = launcher.get("partition")
    if part is None:
        if not any(n.endswith("*") for n in names):
            return f"hydra.launcher.partition is not set and the cluster has no default; allowed values are {', '.join(plain)}"
    elif any(p not in plain for p in str(part).split(",")):
        return f"hydra.launcher.partition={part}: no such partition; allowed values are {', '.join(plain)}"
    return None


def fit_problem(launcher: Any) -> Optional[str]:
    """Why a trial of this sweep cannot run on the GPUs its jobs ask for, as one line; None if all fit.

    `launcher` is the composed sweep config's hydra.launcher node: the sweep is its root (the
    sweeper's config), expanded into trials as the sweeper does (harness.plan.sweep)."""
    root = launcher._get_root()
    plan = root.get("plan") if root is not launcher else None
    gpus = int(launcher.get("gpus_per_node") or 0)
    if plan is None or not plan.get("check", True) or gpus == 0:
        return None
    from hydra.core.global_hydra import GlobalHydra

    from harness.errors import ConfigError
    from harness.plan.gpus import resolve
    from harness.plan.sweep import expand_master
    from harness.plan.trial import plan_trial, world_size

    nodes = int(launcher.get("nodes") or 1)
    ranks = int(launcher.get("tasks_per_node") or 1) * nodes
    if ranks > gpus * nodes:
        return (f"hydra.launcher.tasks_per_node={launcher.get('tasks_per_node')}: more ranks than GPUs "
                f"(gpus_per_node={gpus} x nodes={nodes}); allowed: tasks_per_node <= gpus_per_node")
    try:
        device = resolve(plan)
        if device.kind != "cuda" or not GlobalHydra.instance().is_initialized():
            return None  # plan.gpu=auto on a machine without a GPU: the jobs' GPU type is unknown, not checked
        trials = expand_master(GlobalHydra.instance().config_loader(), root)
        for cfg, overrides in zip(trials.configs, trials.overrides):
            tp = plan_trial(cfg, world_size(cfg.plan, launcher) if cfg.plan.world_size is not None else ranks, device)
            if not tp.fits:
                return f"{tp.problem()} (trial {' '.join(overrides)}); plan.check=false submits anyway"
    except ConfigError as e:
        return str(e)
    return None
