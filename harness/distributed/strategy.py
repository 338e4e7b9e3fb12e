"""`distributed=fsdp2`: one trial over the ranks of torchrun or a SLURM job, the model sharded by FSDP2.

    torchrun --nproc-per-node 2 -m harness model=tiny distributed=fsdp2 trainer.steps=3

What the strategy gives the trial (harness.distributed.base.Parallel):
- `dist`: the process group (harness.distributed.env.DistEnv); the trainer reduces through it;
- `wrap`: FSDP2 on each decoder layer and the root (harness.distributed.fsdp); the KL reference
  is a second copy of the initial model, sharded the same way and never trained: each rank keeps
  only its shard of it, which is also the sparsity baseline;
- generation (rollouts, eval) runs with the parameters gathered once per call: ranks generate
  different numbers of tokens, so a gather per decode step would not line up across ranks;
- checkpoints through torch.distributed.checkpoint, sharded (harness.distributed.checkpoint),
  plus each rank's counters and RNG states in `checkpoint.rank<k>.pt`;
- a failure on any rank ends the trial with that rank's reason (harness.distributed.failure).
"""

from __future__ import annotations

import contextlib
import copy
import os
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from harness.distributed import failure
from harness.errors import check
from harness.distributed.base import STRATEGIES, Parallel
from harness.results import atomic_write_json


def _check(cfg: Any) -> None:
    from harness.distributed.env import read_launch, validate

    validate(cfg.distributed)  # includes the torch version check for fsdp2
    world = read_launch(os.environ).world_size
    check(cfg.rollout.get("generation_dtype") is None, "rollout.generation_dtype", cfg.rollout.get("generation_dtype"),
          "must be null with distributed=fsdp2 (a generation copy would hold the whole model on every rank)")
    check(cfg.trainer.prompts_per_step % world == 0, "trainer.prompts_per_step", cfg.trainer.prompts_per_step,
          f"must be a multiple of the world size {world}: a prompt's group never spans two ranks")


class FSDPParallel(Parallel):
    def __init__(self, cfg_dist: Any, device: torch.device, model_cfg: Any):
        from harness.distributed.env import init_distributed

        env = init_distributed(cfg_dist, device.type)
        self.cfg_dist, self.model_cfg = cfg_dist, model_cfg
        self.reference: torch.nn.Module | None = None
        super().__init__(env, env.device, self._wrap, self._checkpoint)
        failure.install_sigterm_handler()
        self.peers = env.all_gather_object(failure.this_process())  # (host, pid) per rank: who is gone, later

    def _wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        from harness.distributed.fsdp import apply_fsdp2

        compute = getattr(torch, self.model_cfg.dtype)
        ref = copy.deepcopy(model).requires_grad_(False)
        apply_fsdp2(model, self.cfg_dist, self.dist.mesh, compute, bool(self.model_cfg.gradient_checkpointing))
        self.reference = apply_fsdp2(ref, self.cfg_dist, self.dist.mesh, compute, False)
        return model

    def _checkpoint(self, folder: Path) -> "ShardedCheckpoint":
        return ShardedCheckpoint(Path(folder), self.dist)

    def generation(self, model: torch.nn.Module) -> Any:
        """Parameters gathered for the whole call, so generate() runs no collective per token."""
        from harness.distributed.fsdp import gathered

        return gathered(model)

    def final_sparsity(self, initial: Any, model: torch.nn.Module, rank_energy: float, block: int) -> dict:
        """The end-of-trial measurement on whole tensors, gathered one parameter at a time (never the model)."""
        from harness.distributed.fsdp import reshard
        from harness.measure.sparsity import update_sparsity

        reshard(model), reshard(self.reference)  # no-grad forwards leave the head group gathered
        return update_sparsity(_Gathered(dict(self.reference.named_parameters())),
                               _Gathered(dict(model.named_parameters())), rank_energy=rank_energy, block=block)

    def memory_report(self, trainer: Any) -> dict:
        peaks = self.dist.all_gather_object(dict(trainer.phases.peak_bytes))
        return {"mem/peak_bytes_by_rank": [max(p.values()) if p else None for p in peaks],
                "mem/peak_bytes_update_by_rank": [p.get("update") for p in peaks]}

    def failure_reason(self, error: BaseException, folder: Path, step: Optional[int] = None) -> str:
        failure.record_failure(folder, self.dist.rank, error)
        return failure.failure_reason(error, folder, self.dist.rank, peers=self.peers, step=step)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.dist.close()


class _Gathered(Mapping):
    """name -> the whole tensor of a sharded parameter, gathered when read (one at a time)."""

    def __init__(self, params: dict[str, torch.Tensor]):
        self.params = params

    def __getitem__(self, name: str) -> torch.Tensor:
        p = self.params[name].detach()
        return p.full_tensor() if hasattr(p, "full_tensor") else p

    def __iter__(self):
        return iter(self.params)

    def __len__(self) -> int:
        return len(self.params)


class ShardedCheckpoint:
    """Model and optimizer sharded by DCP into `<trial>/checkpoint/`, each rank's counters and RNG
    states beside it; the trial's sidecar `checkpoint.json` (written last, by rank 0) names the step."""

    def __init__(self, folder: Path, dist: Any):
        self.folder, self.dist = folder, dist

    def _extra(self, step: int) -> Path:
        return self.folder / f"checkpoint.rank{self.dist.rank}.step{step}.pt"

    def save(self, trainer: Any) -> None:
        from harness.checkpoint import rng_state, sidecar
        from harness.distributed.checkpoint import save_checkpoint

        extra = self._extra(trainer.step)
        tmp = extra.with_name(f".{extra.name}.tmp")
        torch.save({"trainer": trainer.counters(), "rng": rng_state()}, tmp)
        os.replace(tmp, extra)
        save_checkpoint(self.folder / "checkpoint", trainer.model, trainer.opt, {"step": trainer.step})
        if self.dist.is_main:
            atomic_write_json(sidecar(self.folder), {"step": trainer.step, "file": "checkpoint"})
        self.dist.barrier()
        for old in self.folder.glob(f"checkpoint.rank{self.dist.rank}.step*.pt"):
            if old != extra:
                old.unlink(missing_ok=True)

    def load(self, trainer: Any) -> None:
        from harness.checkpoint import set_rng_state
        from harness.distributed.checkpoint import load_checkpoint

        meta = load_checkpoint(self.folder / "checkpoint", trainer.model, trainer.opt)
        sd = torch.load(self._extra(int(meta["step"])), map_location="cpu", weights_only=False)
        trainer.load_counters(sd["trainer"])
        set_rng_state(sd["rng"])


@STRATEGIES.register("fsdp2", validate=_check)
def _fsdp2(cfg_dist: Any, device: torch.device, *, model_cfg: Any, **_: Any) -> FSDPParallel:
    return FSDPParallel(cfg_dist, device, model_cfg)
