"""Sharded checkpoints with torch.distributed.checkpoint (DCP): each rank writes its own shards.

    save_checkpoint(trial_dir / "checkpoint", model, optimizer, {"step": 2})
    meta = load_checkpoint(trial_dir / "checkpoint", model, optimizer)   # -> {"step": 2}

Atomic per save: all ranks write into `.<name>.tmp` beside the final folder; after a barrier rank 0
writes the sidecar `checkpoint.json` into it (last), then swaps it into place with renames (the
previous checkpoint is moved to `.<name>.old` and removed afterwards). A job killed at any point
leaves a complete checkpoint: the final folder, or `.old` if it died between the two renames,
which `find_checkpoint` falls back to. The folders must be on a file system all ranks see.
Model and optimizer state go through get_state_dict/set_state_dict, so the same files load into
an FSDP2 model (any world size DCP can reshard to) and into a plain one-process model. Works
without a process group (one process, strategy none). DCP needs numpy.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Optional

import torch
import torch.distributed as dist

SIDECAR = "checkpoint.json"


def _dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def _rank() -> int:
    return dist.get_rank() if _dist() else 0


def _barrier() -> None:
    if _dist():
        dist.barrier()


@contextlib.contextmanager
def _quiet_single_process():
    """DCP warns on every call without a process group that it assumes one process: that is meant here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def _old(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")


def read_sidecar(folder: str | Path) -> Optional[dict]:
    """The sidecar of a complete checkpoint folder, or None (missing, incomplete or unreadable)."""
    try:
        return json.loads((Path(folder) / SIDECAR).read_text())
    except (OSError, ValueError):
        return None


def find_checkpoint(path: str | Path) -> Optional[Path]:
    """The complete checkpoint for `path`: path itself, else the `.old` one a killed swap left, else None."""
    path = Path(path)
    for folder in (path, _old(path)):
        if read_sidecar(folder) is not None:
            return folder
    return None


def _states(model: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer]) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_state_dict, get_model_state_dict

    if optimizer is None:
        return {"model": get_model_state_dict(model)}
    model_sd, optim_sd = get_state_dict(model, optimizer)
    return {"model": model_sd, "optim": optim_sd}


def save_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer],
                    meta: dict) -> Path:
    """Collective: every rank calls it. Writes model (+ optimizer) state sharded into `path`.

    meta: JSON-able (step, counters, ...), written by rank 0 as the sidecar, last. Returns `path`.
    """
    import torch.distributed.checkpoint as dcp

    path = Path(path)
    tmp = _tmp(path)
    if _rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)  # a save killed half-way
        tmp.mkdir(parents=True)
    _barrier()
    with _quiet_single_process():
        dcp.save(_states(model, optimizer), checkpoint_id=str(tmp), no_dist=not _dist())  # rank 0 writes .metadata
    _barrier()
    if _rank() == 0:
        side = tmp / SIDECAR
        side.with_suffix(".json.part").write_text(json.dumps(meta, indent=1) + "\n")
        os.replace(side.with_suffix(".json.part"), side)  # last: marks the folder complete
        old = _old(path)
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            os.rename(path, old)
        os.rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return path


def load_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer]) -> dict:
    """Collective: load the checkpoint saved at `path` (or its `.old` fallback) into model (+ optimizer).

    The model must be built and wrapped the same way as when saving (apply_fsdp2 or not); the
    optimizer freshly built on its parameters. Returns the sidecar's meta. FileNotFoundError if
    there is no complete checkpoint.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_state_dict

    folder = find_checkpoint(path)
    if folder is None:
        raise FileNotFoundError(f"no complete checkpoint at {path} (no {SIDECAR})")
    states = _states(model, optimizer)
    with _quiet_single_process():
        dcp.load(states, checkpoint_id=str(folder), no_dist=not _dist())  # in place, each rank its shards
    if optimizer is None:
        set_model_state_dict(model, states["model"])
    else:
        set_state_dict(model, optimizer, model_state_dict=states["model"], optim_state_dict=states["optim"])
    return read_sidecar(folder) or {}
