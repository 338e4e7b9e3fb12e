"""FSDP2 on torch.distributed: the library layer the `fsdp2` strategy is built from.

    torchrun --nproc-per-node 2 -m harness model=tiny distributed=fsdp2

- `env`: `init_distributed(cfg_dist, device_type) -> DistEnv`: rank/world size from torchrun or
  SLURM (submitit tasks), the process group (NCCL on CUDA, gloo on CPU), the device mesh, the
  torch version check; DistEnv also offers the reductions the trainer calls (`all_reduce_sum`, ...).
- `fsdp`: `apply_fsdp2(model, cfg_dist, mesh, compute_dtype, gradient_checkpointing)`.
- `reduce`: small collectives on Python values (sums in float64/int64, rank 0's object, gather).
- `checkpoint`: sharded, atomic torch.distributed.checkpoint save/load of model + optimizer.
- `failure`: a failing rank records its reason; the others report the first failure's reason.
"""
