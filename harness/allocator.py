"""The CPU process's heap: let glibc malloc keep freed memory for reuse (config key malloc_retain).

    python -m harness malloc_retain=false      # glibc's defaults: freed memory goes back to the OS

PyTorch's CPU allocator is plain malloc. By default glibc serves every block larger than its mmap
threshold (128 KiB, rising to at most 32 MiB) with a fresh mmap and unmaps it on free, and trims
the heap top when it passes 128 KiB: a GRPO update allocates and frees gigabytes of activations
and gradients, and every page of them is faulted in and zeroed by the kernel again, step after
step. On SmolLM2-135M on a 2-core CPU that is ~600k page faults and 1-2 s of system time per
update (of ~6 s), and, on the VM measured here, 2-3x more while an in-process vLLM engine is
resident. malloc_retain=true (the default) turns off mmap for heap blocks and heap trimming
(mallopt M_MMAP_MAX=0, M_TRIM_THRESHOLD=INT_MAX), so freed memory stays in the process and is
reused: what CUDA's caching allocator does on a GPU.

The cost: the process's resident set no longer shrinks, so on CPU a phase's peak RSS
(mem/peak_bytes_<phase>) includes memory kept from earlier phases. The overall peak is still the
process's peak; result.json records the setting (mem/peak_kind "cpu_rss_retained"). Only glibc
has mallopt: elsewhere (macOS, musl) the setting does nothing and the peak kind stays "cpu_rss".
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger(__name__)

# mallopt parameters (glibc malloc.h) and glibc's documented defaults, restored by retain=False
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_MAX = 128 * 1024, 65536
INT_MAX = 2**31 - 1

_retaining = False


def glibc_tunables() -> str:
    """The GLIBC_TUNABLES value that gives another process (bench.peer's TRL side) these settings."""
    return f"glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold={INT_MAX}"


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.gnu_get_libc_version  # only glibc has both
        libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return libc


def retaining() -> bool:
    """Whether malloc keeps freed memory in this process (set by `retain_freed_memory`)."""
    return _retaining


def retain_freed_memory(retain: bool) -> bool:
    """Make malloc keep (True) or return (False) freed memory; True when that is now in effect.

    Process-wide: trials that share a process (Hydra's basic launcher) each set it again, so
    turning it off after a trial that turned it on restores glibc's default limits (its mmap
    threshold then stays where it was) and trims the heap.
    """
    global _retaining
    libc = _glibc()
    if libc is None:
        if retain:
            log.info("malloc_retain: no glibc malloc here, nothing to set")
        return False
    if retain and not _retaining:
        ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, INT_MAX) == 1
        if not ok:
            raise OSError("malloc_retain: glibc's mallopt refused M_MMAP_MAX / M_TRIM_THRESHOLD")
        _retaining = True
    elif not retain and _retaining:
        libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
        libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
        libc.malloc_trim(0)
        _retaining = False
    return _retaining
