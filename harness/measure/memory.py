"""Memory accounting: exact bytes of parameters, gradients and optimizer state, and peak memory
per phase (rollout, update, ...).

The paper's memory claim (15.7 GB less peak memory with SGD on Qwen3-1.7B) is mostly AdamW's two
fp32 moment buffers; `optimizer_state_bytes` counts them exactly, `PeakMemory` measures what the
process really used:

- CUDA: `torch.cuda.max_memory_allocated` since `reset_peak_memory_stats` (kind
  "cuda_max_allocated"; `read_reserved()` gives the caching allocator's reserved peak);
- CPU: the resident-set high-water mark VmHWM from /proc/self/status, reset by writing "5" to
  /proc/self/clear_refs (kind "cpu_rss"; "cpu_rss_retained" when malloc keeps freed memory,
  harness.allocator, and a phase's peak then includes what earlier phases left). Where that
  file is not writable (non-Linux, some sandboxes) it falls back to getrusage's ru_maxrss,
  which can never be reset: `resettable` is then False and every read is the peak since the
  process started.

Usage:
    tracker = PhaseTracker(device)
    with tracker.phase("rollout"):
        ...
    tracker.metrics()  # {"perf/rollout_seconds": ..., "mem/rollout_peak_bytes": ...}
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from harness.distributed.reduce import local_tensor

_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"


def tensor_bytes(tensors: Iterable[Tensor | None]) -> int:
    """Sum of numel * element_size, skipping None (for a DTensor, its local shard's); a tensor seen twice (the same object, or
    another object viewing the same memory with the same dtype and shape) counts once."""
    seen: set = set()
    total = 0
    for t in tensors:
        if t is None:
            continue
        t = local_tensor(t)  # a sharded DTensor (FSDP2): this rank's shard is what it holds
        ptr = t.data_ptr() if t.device.type != "meta" else 0
        key = (str(t.device), ptr, t.dtype, tuple(t.shape)) if ptr else id(t)
        if key in seen:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    return total


def optimizer_state_bytes(optimizer: torch.optim.Optimizer, replicated: bool = True) -> int:
    """Exact bytes of every tensor in `optimizer.state` (moment buffers and the scalar `step`
    tensors); non-tensor values (None, python numbers) count 0. A harness.optim.HybridOptimizer's
    `state` is the merged view of its parts (Muon + AdamW), so mixed groups count exactly too.

    Under FSDP2 the moments are sharded (DTensors: this rank's shard counts) while the step
    counters are plain tensors every rank holds a copy of; `replicated=False` leaves those out, so
    that a sum over ranks (the others pass False) counts the optimizer's state once, as one process holds it."""
    return tensor_bytes(
        v for state in optimizer.state.values() for v in state.values()
        if isinstance(v, Tensor) and (replicated or hasattr(v, "to_local")))


def param_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's parameters (tied parameters once)."""
    return tensor_bytes(model.parameters())


def grad_bytes(model: torch.nn.Module) -> int:
    """Bytes of the gradients present now (params without .grad count 0)."""
    return tensor_bytes(p.grad for p in model.parameters())


def _status_kb(field: str) -> int | None:
    """A `field:   1234 kB` line of /proc/self/status, in kB; None when unavailable."""
    try:
        with open(_STATUS) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def current_rss_bytes() -> int | None:
    """Resident set size of this process now (VmRSS), None where /proc is unavailable."""
    kb = _status_kb("VmRSS")
    return None if kb is None else kb * 1024


def _clear_refs() -> bool:
    """Reset VmHWM to the current RSS; False when the kernel does not let us."""
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
        return _status_kb("VmHWM") is not None
    except OSError:
        return False


class PeakMemory:
    """Peak memory since the last `reset()`, on a CUDA device or for this CPU process."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda":
            self.kind = "cuda_max_allocated"
            self.resettable = True
        else:
            from harness.allocator import retaining

            self.kind = "cpu_rss_retained" if retaining() else "cpu_rss"  # see harness.allocator
            self.resettable = _clear_refs()
        self.reset()

    def reset(self) -> None:
        """Start a new phase: the next `read()` is the peak from now on."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.resettable:
            _clear_refs()

    def read(self) -> int:
        """Peak bytes since the last reset (cuda: allocated by tensors; cpu: resident set)."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        if self.resettable:  # VmHWM: resident-set high-water mark since the last clear_refs
            kb = _status_kb("VmHWM")
            if kb is not None:
                return kb * 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux

    def read_reserved(self) -> int | None:
        """CUDA only: peak bytes reserved by the caching allocator since the last reset."""
        if self.device.type != "cuda":
            return None
        return torch.cuda.max_memory_reserved(self.device)


class PhaseTracker:
    """Wall seconds (summed in `seconds`) and peak bytes (max over calls in `peak_bytes`, the
    latest call in `last_peak_bytes`) per named phase.

    On CUDA the device is synchronized at both ends of a phase, so seconds include queued
    kernels. Phases may nest: an inner phase's reset does not hide the memory the outer one used
    before, because each open phase keeps the peak read just before an inner phase starts.
    """

    def __init__(self, device: torch.device | str) -> None:
        self.peak = PeakMemory(device)
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.peak_bytes: dict[str, int] = {}  # max over all calls of a phase
        self.last_peak_bytes: dict[str, int] = {}  # the most recent call only
        self._open: list[list] = []  # [name, peak so far] for each open phase, outermost first

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self._open:
            now = self.peak.read()
            for frame in self._open:
                frame[1] = max(frame[1], now)
        frame = [name, 0]
        self._open.append(frame)
        self._sync()
        self.peak.reset()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            dt = time.perf_counter() - t0
            peak = max(frame[1], self.peak.read())
            self._open.pop()
            for outer in self._open:
                outer[1] = max(outer[1], peak)
            self.seconds[name] = self.seconds.get(name, 0.0) + dt
            self.calls[name] = self.calls.get(name, 0) + 1
            self.peak_bytes[name] = max(self.peak_bytes.get(name, 0), peak)
            self.last_peak_bytes[name] = peak

    def _sync(self) -> None:
        if self.peak.device.type == "cuda":
            torch.cuda.synchronize(self.peak.device)

    def metrics(self) -> dict[str, float | int]:
        """`perf/{name}_seconds` (summed over calls) and `mem/{name}_peak_bytes` (max)."""
        out: dict[str, float | int] = {}
        for name, s in self.seconds.items():
            out[f"perf/{name}_seconds"] = s
            out[f"mem/{name}_peak_bytes"] = self.peak_bytes[name]
        return out
