"""The initial weights, kept once: the KL reference policy and the sparsity baseline.

Each tensor is kept in the cheapest form that holds it exactly (`trainer.initial_weights`):
- `checkpoint` (default): not in memory at all when the checkpoint the model was loaded from holds it
  exactly (harness.models.safetensors_files; checked value by value at the start). It is read back from
  the file when needed: once per update for the reference forward, and tensor by tensor for the
  sparsity counts. Tensors the files do not hold exactly (renamed or converted at load), and tensors
  on a GPU (the reads land in CPU memory), fall back to:
- `memory`: bf16 when its values are all bf16 numbers (checkpoints published in bf16, e.g. Qwen3) and
  the trainer computes in bf16 under autocast, its own dtype otherwise (the default model's
  dequantised GGUF weights are not bf16 numbers).
Every measurement stays exact: the bf16 sparsity compares bf16 casts, the fp32 counts compare values
that were never rounded, and the reference forward sees the same numbers as before.

For the reference forward (`for_forward`), the weights of `nn.Linear` layers are cast once to the
compute dtype when the trainer runs under autocast (autocast would cast them to the same bf16 values
at every call); the others (embeddings, norms) are given in the parameter's dtype, because they
enter fp32 arithmetic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Iterator, Optional

import torch

from harness.distributed.reduce import local_tensor

INITIAL_WEIGHTS = ("checkpoint", "memory")  # trainer.initial_weights


def _exact_in(t: torch.Tensor, dtype: torch.dtype) -> bool:
    return bool(torch.equal(t.to(dtype).to(t.dtype), t))


def _file_holds(files, name: str, t: torch.Tensor, block: int = 1 << 22) -> bool:
    """Whether the checkpoint's tensor `name`, converted to t's dtype, equals t everywhere."""
    if name not in files or tuple(files.entry(name).shape) != tuple(t.shape) or t.device.type != "cpu":
        return False
    e, flat = files.entry(name), t.reshape(-1)
    buf = torch.empty(min(block, max(1, e.numel)), dtype=e.dtype)
    for s in range(0, e.numel, block):
        part = files.read_into(name, buf[:min(block, e.numel - s)], s)
        if not torch.equal(part.to(t.dtype), flat[s:s + part.numel()]):
            return False
    return True


class InitialWeights(Mapping):
    """name -> the initial value of that parameter (local shard), in a dtype that holds it exactly."""

    def __init__(self, model: torch.nn.Module, compute_dtype: torch.dtype, copy: bool = True,
                 files: Optional[object] = None):
        """copy=False: `model` is a frozen reference model; keep views of its (local) tensors.
        files: a harness.models.safetensors_files.SafetensorsFiles the model was loaded from, or None."""
        self.linear = {f"{mn}.weight" for mn, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
        self.param_dtype = {n: p.dtype for n, p in model.named_parameters()}
        self.autocast = compute_dtype if compute_dtype != next(model.parameters()).dtype else None
        self.files = files
        self.tensors: dict[str, torch.Tensor] = {}  # kept in memory
        self.on_file: set[str] = set()  # read back from `files` when needed
        with torch.no_grad():
            for n, p in model.named_parameters():
                t = local_tensor(p).detach()
                if not copy:
                    self.tensors[n] = t
                elif files is not None and _file_holds(files, n, t):
                    self.on_file.add(n)
                elif self.autocast is not None and self.autocast.itemsize < t.element_size() and _exact_in(t, self.autocast):
                    self.tensors[n] = t.to(self.autocast)
                else:
                    self.tensors[n] = t.clone()

    @property
    def nbytes(self) -> int:
        """Bytes kept in memory (not those read back from the checkpoint)."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def __getitem__(self, name: str) -> torch.Tensor:
        if name in self.tensors:
            return self.tensors[name]
        if name in self.on_file:
            return self.files.read(name)  # the file's dtype: exact by the check at the start
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.param_dtype)  # every parameter is in exactly one of tensors / on_file

    def __len__(self) -> int:
        return len(self.tensors) + len(self.on_file)

    def close(self) -> None:
        """Close the checkpoint's files (the tensors read from them stay valid)."""
        if self.files is not None:
            self.files.close()

    def for_forward(self) -> dict[str, torch.Tensor]:
        """Tensors to run the model with (torch.func.functional_call): nn.Linear weights in the compute
        dtype under autocast (the values autocast would give them), the others in the parameter's dtype."""
        out = {}
        for n in self:
            t = self[n]
            want = self.autocast if (n in self.linear and self.autocast is not None) else self.param_dtype[n]
            out[n] = t if t.dtype == want else t.to(want)
        return out
