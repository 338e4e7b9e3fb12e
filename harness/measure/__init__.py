"""Measurements: update sparsity/rank, memory (bytes and peaks per phase), optimizer diagnostics."""

from harness.measure.memory import (
    PeakMemory,
    PhaseTracker,
    current_rss_bytes,
    grad_bytes,
    optimizer_state_bytes,
    param_bytes,
    tensor_bytes,
)
from harness.measure.optim_diag import (
    grad_global_norm,
    momentum_grad_cosine,
    second_moment_stats,
    update_norm,
)
from harness.measure.sparsity import module_kind, snapshot, update_rank, update_sparsity

__all__ = [
    "PeakMemory", "PhaseTracker", "current_rss_bytes", "grad_bytes", "optimizer_state_bytes",
    "param_bytes", "tensor_bytes", "grad_global_norm", "momentum_grad_cosine",
    "second_moment_stats", "update_norm", "module_kind", "snapshot", "update_rank",
    "update_sparsity",
]
