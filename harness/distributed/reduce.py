"""Small collectives on Python values, exact in float64/int64; the identity without a process group.

    sums = all_reduce_sum([loss_sum, num_tokens])   # every rank gets the global sums
    folder = agree(folder)                          # every rank gets rank 0's value
    peaks = gather_values(peak_bytes)               # [rank 0's, rank 1's, ...] on every rank
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.distributed as dist


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _device() -> torch.device:
    """Where this backend's collectives take tensors (NCCL: the current CUDA device)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: list) -> list:
    """Sum each value over the ranks. ints stay ints (int64, exact); floats are summed in float64.

    A bool counts as an int (1/0). One collective per dtype present.
    """
    values = list(values)
    if not _active() or not values:
        return values
    is_int = [isinstance(v, (bool, int)) for v in values]
    out: list[Any] = list(values)
    for want_int, dtype in ((True, torch.int64), (False, torch.float64)):
        idx = [i for i, flag in enumerate(is_int) if flag == want_int]
        if not idx:
            continue
        t = torch.tensor([float(values[i]) if not want_int else int(values[i]) for i in idx], dtype=dtype,
                         device=_device())  # [len(idx)]
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        for i, v in zip(idx, t.tolist()):
            out[i] = v
    return out


def global_count(count: int | torch.Tensor) -> int:
    """The sum over ranks of a local count (e.g. completion tokens: the loss's normaliser)."""
    local = int(count.item()) if isinstance(count, torch.Tensor) else int(count)
    return int(all_reduce_sum([local])[0])


def local_tensor(p: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (a sharded parameter or gradient), or p itself."""
    to_local = getattr(p, "to_local", None)
    return to_local() if callable(to_local) else p


def local_numel(tensors: Iterable[torch.Tensor]) -> int:
    """Elements held by this rank (local shards)."""
    return sum(local_tensor(t).numel() for t in tensors)


def agree(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (picklable), e.g. the trial folder whose name holds a time."""
    if not _active():
        return obj
    box = [obj if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0, device=_device())
    return box[0]


def gather_values(obj: Any) -> list:
    """Every rank's `obj` (picklable), in rank order, on every rank: e.g. peak memory per rank."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
