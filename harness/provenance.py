"""Who a trial is: its name and labels (`trial_info`) and where its numbers come from (`provenance`)."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from harness.optim import optimizer_kwargs, optimizer_label

REPO = Path(__file__).resolve().parent.parent


def trial_info(cfg: Any, choices: dict, overrides: list[str]) -> dict:
    opt = cfg.optimizer
    momentum = optimizer_kwargs(opt).get("momentum")
    info = {"optimizer": optimizer_label(opt),
            "lr": float(opt.lr), "momentum": None if momentum is None else float(momentum),
            "model": choices.get("model") or cfg.model.name, "task": choices.get("task") or cfg.task.name,
            "seed": int(cfg.seed), "objective": str(cfg.trainer.objective), "overrides": list(overrides),
            "slurm_job_id": os.environ.get("SLURM_ARRAY_JOB_ID", os.environ.get("SLURM_JOB_ID"))}
    m = "" if momentum in (None, 0, 0.0) else f"-m{momentum:g}"
    info["name"] = f"{info['objective']}-{info['optimizer']}{m}-lr{info['lr']:g}-s{info['seed']}"
    return info


def provenance(cfg: Any, device: torch.device) -> dict:
    import transformers

    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=5).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=5).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    versions = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}
    for pkg in ("vllm", "wandb", "hydra", "math_verify"):
        mod = sys.modules.get(pkg)
        if mod is not None:
            versions[pkg] = getattr(mod, "__version__", None)
    hw = {"platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
          "torch_threads": torch.get_num_threads(), "device": str(device), "hostname": socket.gethostname()}
    if device.type == "cuda":
        hw["gpu"] = torch.cuda.get_device_name(device)
    return {"config": OmegaConf.to_container(cfg, resolve=True), "seed": int(cfg.seed), "versions": versions,
            "git_commit": commit, "git_dirty": dirty, "hardware": hw, "argv": sys.argv,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
