"""RMSPropBC: Adam without momentum, the paper's "RMSProp" ablation.

    python -m harness optimizer=rmsprop optimizer.lr=1e-5
"""

from __future__ import annotations

import torch


class RMSPropBC(torch.optim.Optimizer):
    """Adam without momentum (beta1 = 0): the paper's "RMSProp" ablation.

    p <- p - lr * (g / (sqrt(v_hat) + eps) + weight_decay * p), v = beta2 * v + (1 - beta2) g^2,
    v_hat = v / (1 - beta2^t); decoupled weight decay as in AdamW. State: one tensor `square_avg`
    per parameter plus an int step (torch.optim.RMSprop has no bias correction, so its first steps
    are ~1/sqrt(1 - beta2) times larger).
    """

    def __init__(self, params, lr: float = 1e-3, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.0):
        if lr <= 0 or not 0.0 <= beta2 < 1.0 or eps < 0 or weight_decay < 0:
            raise ValueError(f"invalid RMSPropBC arguments lr={lr} beta2={beta2} eps={eps} weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, beta2=beta2, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, beta2, eps, wd = group["lr"], group["beta2"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                v = state["square_avg"]
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1.0 - beta2)
                denom = (v / (1.0 - beta2 ** state["step"])).sqrt_().add_(eps)
                if wd:
                    p.mul_(1.0 - lr * wd)
                p.addcdiv_(p.grad, denom, value=-lr)
        return loss
