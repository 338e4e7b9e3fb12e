"""SignSGD: every weight moves by exactly lr per step, against the sign of its gradient (or momentum).

    python -m harness optimizer=signsgd optimizer.lr=1e-5 optimizer.momentum=0.9
"""

from __future__ import annotations

import torch


class SignSGD(torch.optim.Optimizer):
    """Sign descent (signSGD; with momentum, Signum; Bernstein et al., 2018).

        d = g                                   momentum = 0: no state at all
        m <- momentum * m + g,  d = m           momentum > 0: state `momentum_buffer` (m_0 = 0, so m_1 = g)
        p <- p * (1 - lr * weight_decay) - lr * sign(d)

    Weight decay is decoupled (as in AdamW). sign(0) = 0: an entry whose direction is exactly 0
    does not move (apart from decay). The buffer has the parameter's dtype (4 B per fp32
    parameter) and is named as SGD's, so harness.measure.optim_diag.momentum_grad_cosine reads it.
    """

    def __init__(self, params, lr: float = 1e-4, momentum: float = 0.0, weight_decay: float = 0.0):
        if not lr > 0 or not 0.0 <= momentum < 1.0 or weight_decay < 0:
            raise ValueError(f"invalid SignSGD arguments lr={lr} momentum={momentum} weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad  # [*p.shape]
                if mu > 0:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    d = state["momentum_buffer"].mul_(mu).add_(p.grad)  # [*p.shape]
                if wd:
                    p.mul_(1.0 - lr * wd)
                p.add_(torch.sign(d), alpha=-lr)
        return loss
