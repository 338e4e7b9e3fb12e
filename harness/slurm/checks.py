"""Checks of a SLURM launcher config before any job is submitted: one line for each problem."""

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
