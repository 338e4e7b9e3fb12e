"""Checkpoints of a running trial: model, optimizer, the trainer's counters and history, RNG states.

Saved on SLURM's pre-timeout signal (SIGUSR2) and every `trainer.checkpoint_every` steps, into
the trial folder; a restarted job resumes from it. Atomic: a job killed while saving leaves the
previous checkpoint intact. The sidecar `checkpoint.json` (written last) tells a restarted job the
step without loading the weights.

`TorchCheckpoint` is the one-process format (`checkpoint.pt`); a sharded trial uses
torch.distributed.checkpoint (harness.distributed).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Optional

import torch

from harness.results import atomic_write_json, read_result


def rng_state() -> dict:
    import numpy as np

    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(rng: dict) -> None:
    import numpy as np

    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def sidecar(folder: Path) -> Path:
    return folder / "checkpoint.json"


def saved_step(folder: Path) -> Optional[int]:
    """The step of the checkpoint in the trial folder (from its sidecar), or None: start from scratch."""
    meta = read_result(sidecar(folder))
    if not meta or not (folder / meta.get("file", "")).exists():
        return None
    return int(meta["step"])


def remove(folder: Path) -> None:
    meta = read_result(sidecar(folder)) or {}
    sidecar(folder).unlink(missing_ok=True)
    target = folder / meta.get("file", "checkpoint.pt")
    if target.is_dir():
        import shutil

        shutil.rmtree(target, ignore_errors=True)
    else:
        target.unlink(missing_ok=True)


class TorchCheckpoint:
    """One file, `checkpoint.pt`, written by torch.save to a temp name and renamed."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / "checkpoint.pt"

    def save(self, trainer: Any) -> None:
        state = {"trainer": trainer.counters(), "rng": rng_state(),
                 "model": {n: p.detach().cpu() for n, p in trainer.model.named_parameters()},
                 "optimizer": trainer.opt.state_dict()}
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)
        atomic_write_json(sidecar(self.folder), {"step": trainer.step, "file": self.path.name})

    def load(self, trainer: Any) -> None:
        sd = torch.load(self.path, map_location="cpu", weights_only=False)
        with torch.no_grad():
            params = dict(trainer.model.named_parameters())
            for n, v in sd["model"].items():
                params[n].copy_(v)
        trainer.opt.load_state_dict(sd["optimizer"])
        trainer.load_counters(sd["trainer"])
        set_rng_state(sd["rng"])
