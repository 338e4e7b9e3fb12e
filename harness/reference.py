"""The initial weights, kept once: the KL reference policy and the sparsity baseline.

Each tensor is kept in the cheapest dtype that holds it exactly: bf16 when its values are all bf16
numbers (checkpoints published in bf16, e.g. Qwen3) and the trainer computes in bf16 under
autocast, its own dtype otherwise (the default model's dequantised GGUF weights are not). Every
measurement stays exact: the bf16 sparsity compares bf16 casts, the fp32 counts compare values that
were never rounded, and the reference forward sees the same numbers as before.

In the reference forward, the weights of `nn.Linear` layers are passed as kept (autocast casts them
to bf16 anyway); the others (embeddings, norms, biases) are cast back to the parameter's dtype, one
tensor at a time, because they enter fp32 arithmetic.
"""

from __future__ import annotations

from typing import Iterator

import torch

from harness.distributed.reduce import local_tensor


def _exact_in(t: torch.Tensor, dtype: torch.dtype) -> bool:
    return bool(torch.equal(t.to(dtype).to(t.dtype), t))


class InitialWeights:
    def __init__(self, model: torch.nn.Module, compute_dtype: torch.dtype, copy: bool = True):
        """copy=False: `model` is a frozen reference model; keep views of its (local) tensors."""
        self.linear = {f"{mn}.weight" for mn, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
        self.param_dtype = {n: p.dtype for n, p in model.named_parameters()}
        narrow = compute_dtype if compute_dtype != next(model.parameters()).dtype else None
        self.tensors: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for n, p in model.named_parameters():
                t = local_tensor(p).detach()
                if not copy:
                    self.tensors[n] = t
                elif narrow is not None and narrow.itemsize < t.element_size() and _exact_in(t, narrow):
                    self.tensors[n] = t.to(narrow)
                else:
                    self.tensors[n] = t.clone()

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        return iter(self.tensors.items())

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def __iter__(self):
        return iter(self.tensors)

    def for_forward(self) -> dict[str, torch.Tensor]:
        """Tensors to run the model with (torch.func.functional_call), dtypes as the forward needs."""
        return {n: (t if n in self.linear or t.dtype == self.param_dtype[n] else t.to(self.param_dtype[n]))
                for n, t in self.tensors.items()}
