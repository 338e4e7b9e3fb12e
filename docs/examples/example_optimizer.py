"""A new optimizer, `optimizer=lion`: Lion (Chen et al., 2023) (docs/extending.md, run by tests/test_docs.py).

An optimizer needs no registry: `conf/optimizer/lion.yaml` names the class with `_target_` (any
importable torch.optim.Optimizer subclass) and lists its keyword arguments; harness.optim builds it,
checks the keys against the class's signature, applies `optimizer.param_groups` and counts its state.
In the harness this class would be harness/optim/lion.py and the YAML's `_target_` harness.optim.lion.Lion.

    c = beta1 * m + (1 - beta1) * g         the step's direction
    p <- p * (1 - lr * weight_decay) - lr * sign(c)
    m <- beta2 * m + (1 - beta2) * g        state: `exp_avg`, 4 B per fp32 parameter

The buffer is named as Adam's first moment, so optim/momentum_grad_cosine reads it.
"""

from __future__ import annotations

import torch


class Lion(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0):
        if not lr > 0 or not all(0.0 <= b < 1.0 for b in betas) or weight_decay < 0:
            raise ValueError(f"invalid Lion arguments lr={lr} betas={betas} weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (b1, b2), wd = group["lr"], group["betas"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                m = state["exp_avg"]  # [*p.shape]
                c = m.mul(b1).add_(p.grad, alpha=1 - b1)  # [*p.shape]
                if wd:
                    p.mul_(1.0 - lr * wd)
                p.add_(torch.sign(c), alpha=-lr)
                m.mul_(b2).add_(p.grad, alpha=1 - b2)
        return loss
