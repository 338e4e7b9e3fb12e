"""Optimizers from config: any importable torch.optim.Optimizer by `_target_`, parameter groups
by rule, and the optimizers torch.optim lacks.

    python -m harness optimizer=sgd|adamw|rmsprop|muon|signsgd
    python -m harness optimizer._target_=torch.optim.Adagrad     # its own defaults plus lr

- build.py: `build_optimizer(cfg.optimizer, model)`, `validate_optimizer(cfg.optimizer)`,
  `optimizer_label(cfg.optimizer)`, `optimizer_kwargs(cfg.optimizer)`;
- groups.py: `optimizer.param_groups`, rules that give parameters their own settings or class;
- hybrid.py: HybridOptimizer, several torch optimizers over disjoint groups acting as one (Muon + AdamW);
- rmsprop.py: RMSPropBC (Adam without momentum); signsgd.py: SignSGD (sign descent).
"""

from harness.optim.build import (
    build_optimizer,
    group_assignment,
    optimizer_class,
    optimizer_kwargs,
    optimizer_label,
    resolve_optimizer,
    validate_optimizer,
)
from harness.optim.hybrid import HybridOptimizer
from harness.optim.rmsprop import RMSPropBC
from harness.optim.signsgd import SignSGD

__all__ = ["HybridOptimizer", "RMSPropBC", "SignSGD", "build_optimizer", "group_assignment", "optimizer_class",
           "optimizer_kwargs", "optimizer_label", "resolve_optimizer", "validate_optimizer"]
