"""Which rank this process is and its process group: `init_distributed(cfg_dist, device_type)`.

    torchrun --nproc-per-node 2 -m harness distributed=fsdp2          # torchrun sets RANK, WORLD_SIZE, ...
    python -m harness -m distributed=fsdp2 hydra/launcher=slurm hydra.launcher.tasks_per_node=2

The launch is read from the environment: torchrun's (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT) first, else SLURM's as submitit tasks see it (SLURM_PROCID, SLURM_NTASKS,
SLURM_LOCALID; the first host of SLURM_JOB_NODELIST is the rendezvous, the port is derived from
the job id so all tasks of a job agree), else one process. The backend is NCCL on CUDA and gloo
on CPU; the device mesh is made explicitly for the device type (a default mesh with gloo on a
machine with CUDA segfaults: pytorch #132471). Every collective times out after
`distributed.timeout_s`, so a rank that stops answering ends the trial instead of hanging it.

One process with strategy `none` creates no process group at all (`DistEnv.mesh` is None).
"""

from __future__ import annotations

import datetime
import os
import re
import subprocess
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch

from harness.distributed import reduce
from harness.errors import ConfigError, check

MIN_TORCH = (2, 9)  # FSDP2 gradients are right from 2.9 on
STRATEGIES = ("none", "fsdp2")
REDUCE_DTYPES = ("float32", "bfloat16", "float16")
_PORT_BASE, _PORT_SPAN = 20000, 20000  # SLURM: port = base + job id % span


def check_torch_version(version: str = torch.__version__) -> None:
    """ConfigError (one line) unless torch `version` is at least 2.9, where FSDP2 averages correctly."""
    m = re.match(r"(\d+)\.(\d+)", version)
    ok = m is not None and (int(m.group(1)), int(m.group(2))) >= MIN_TORCH
    check(ok, "distributed.strategy", "fsdp2",
          f"needs torch>=2.9, found torch {version}: torch 2.7/2.8 silently sum FSDP2 gradients instead "
          f"of averaging them (pytorch #162338) and 2.6 crashes in the first forward")


def validate(cfg_dist: Any) -> None:
    """ConfigError (one line naming the key and allowed values) for a distributed config that can't run."""
    check(cfg_dist.strategy in STRATEGIES, "distributed.strategy", cfg_dist.strategy, f"one of {', '.join(STRATEGIES)}")
    check(cfg_dist.reduce_dtype in REDUCE_DTYPES, "distributed.reduce_dtype", cfg_dist.reduce_dtype,
          f"one of {', '.join(REDUCE_DTYPES)}")
    t = cfg_dist.timeout_s
    check(isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0, "distributed.timeout_s", t,
          "a number of seconds > 0")
    for key in ("reshard_after_forward", "cpu_offload"):
        check(isinstance(getattr(cfg_dist, key), bool), f"distributed.{key}", getattr(cfg_dist, key), "true or false")
    if cfg_dist.strategy == "fsdp2":
        check_torch_version()


@dataclass(frozen=True)
class Launch:
    """Where this process sits in the job, as the launcher said."""

    rank: int
    local_rank: int
    world_size: int
    master_addr: Optional[str]  # None: one process, no rendezvous
    master_port: Optional[int]
    source: str  # torchrun | slurm | single


def slurm_first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: `scontrol show hostnames`, or parsed here if that fails."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                             timeout=30, check=True).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError):
        pass
    first = re.match(r"([^,\[]+)(\[([^\]]+)\])?", nodelist)  # "gpu[003-005,9],cpu1" -> gpu003
    if first is None:
        raise ConfigError(f"SLURM_JOB_NODELIST={nodelist!r}: not a SLURM node list")
    prefix, ranges = first.group(1), first.group(3)
    return prefix + ranges.split(",")[0].split("-")[0] if ranges else prefix


def read_launch(environ: Mapping[str, str] = os.environ) -> Launch:
    """Rank, local rank, world size and rendezvous of this process from torchrun's or SLURM's variables."""
    e = environ
    if "RANK" in e and "WORLD_SIZE" in e:  # torchrun (also when run inside a SLURM job)
        return Launch(int(e["RANK"]), int(e.get("LOCAL_RANK", e["RANK"])), int(e["WORLD_SIZE"]),
                      e.get("MASTER_ADDR", "127.0.0.1"), int(e.get("MASTER_PORT", "29500")), "torchrun")
    if int(e.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in e:  # submitit tasks: one process per task
        nodelist = e.get("SLURM_JOB_NODELIST") or e.get("SLURM_NODELIST")
        check(bool(nodelist), "SLURM_JOB_NODELIST", nodelist, "set by SLURM in a job with several tasks")
        job = int(re.sub(r"\D", "", e.get("SLURM_ARRAY_JOB_ID") or e.get("SLURM_JOB_ID", "0")) or 0)
        task = int(e.get("SLURM_ARRAY_TASK_ID", "0") or 0)
        return Launch(int(e["SLURM_PROCID"]), int(e.get("SLURM_LOCALID", "0")), int(e["SLURM_NTASKS"]),
                      slurm_first_host(nodelist), _PORT_BASE + (job + task * 7919) % _PORT_SPAN, "slurm")
    return Launch(0, 0, 1, None, None, "single")


class DistEnv:
    """This rank's view of the job; the reductions the trainer calls go through it.

    Same interface as the one-process `OneProcess` (harness.parallel): rank, world_size, is_main,
    all_reduce_sum, all_gather_object, agree, barrier, close; plus local_rank, device, mesh.
    """

    def __init__(self, launch: Launch, device: torch.device, mesh: Any, timeout_s: float):
        self.rank, self.local_rank, self.world_size = launch.rank, launch.local_rank, launch.world_size
        self.launch = launch
        self.device = device
        self.mesh = mesh  # torch DeviceMesh over all ranks, or None without a process group
        self.timeout_s = timeout_s
        self.is_main = self.rank == 0

    def __repr__(self) -> str:
        return (f"DistEnv(rank={self.rank}, local_rank={self.local_rank}, world_size={self.world_size}, "
                f"device={self.device}, source={self.launch.source})")

    def all_reduce_sum(self, values: list) -> list:
        return reduce.all_reduce_sum(values)

    def all_gather_object(self, obj: Any) -> list:
        return reduce.gather_values(obj)

    def agree(self, obj: Any) -> Any:
        return reduce.agree(obj)

    def barrier(self) -> None:
        if torch.distributed.is_initialized():
            torch.distributed.barrier()

    def close(self) -> None:
        """Destroy the process group (idempotent)."""
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def init_distributed(cfg_dist: Any, device_type: str, environ: Mapping[str, str] = os.environ) -> DistEnv:
    """Validate, check torch, read the launch, create the process group and the device mesh.

    cfg_dist: the `distributed` config node. device_type: "cuda" or "cpu". Strategy none with one
    process makes no process group; strategy none with several processes is refused (each would
    train its own copy). Strategy fsdp2 with one process makes a process group of one (a local
    store, no rendezvous), so the sharded code path and its checkpoints are the same for any size.
    """
    validate(cfg_dist)
    launch = read_launch(environ)
    check(cfg_dist.strategy != "none" or launch.world_size == 1, "distributed.strategy", cfg_dist.strategy,
          f"{launch.source} started {launch.world_size} processes: use distributed=fsdp2 (or start one process)")
    check(device_type in ("cpu", "cuda"), "device", device_type, "cpu or cuda")
    if device_type == "cuda":
        check(torch.cuda.is_available(), "device", device_type, "needs a visible CUDA device")
        torch.cuda.set_device(launch.local_rank)
        device = torch.device("cuda", launch.local_rank)
    else:
        device = torch.device("cpu")
    timeout_s = float(cfg_dist.timeout_s)
    if cfg_dist.strategy == "none":
        return DistEnv(launch, device, None, timeout_s)
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    backend = "nccl" if device_type == "cuda" else "gloo"
    timeout = datetime.timedelta(seconds=timeout_s)
    if not dist.is_initialized():
        if launch.master_addr is None:  # one process: a local store, no ports
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
        else:
            kwargs = {"device_id": device} if device_type == "cuda" else {}
            # torchrun's agent already hosts the store its variables name: join it with env://
            url = "env://" if launch.source == "torchrun" else f"tcp://{launch.master_addr}:{launch.master_port}"
            dist.init_process_group(backend, init_method=url, rank=launch.rank, world_size=launch.world_size,
                                    timeout=timeout, **kwargs)
    mesh = init_device_mesh(device_type, (launch.world_size,), mesh_dim_names=("dp",))
    return DistEnv(launch, device, mesh, timeout_s)
