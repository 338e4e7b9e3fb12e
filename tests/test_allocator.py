"""malloc_retain: with it, freeing and allocating the same large tensors again costs no page
faults; without it (glibc's defaults), every allocation is faulted in again; turning it off trims.
Each case runs in a fresh interpreter so this test process keeps glibc's defaults."""

import subprocess
import sys

import pytest

from harness.allocator import _glibc

pytestmark = pytest.mark.skipif(_glibc() is None, reason="mallopt is glibc's; elsewhere malloc_retain does nothing")

PROBE = """
import resource, sys, torch
from harness.allocator import retain_freed_memory, retaining
from harness.measure.memory import PeakMemory
on = retain_freed_memory(sys.argv[1] == "1")
def churn():
    for _ in range(10):  # 64 MB, freed each time: above any mmap threshold glibc picks by itself
        torch.empty(16 << 20).fill_(1.0)
churn()  # the first round may fault either way
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
churn()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
print(on, retaining(), PeakMemory("cpu").kind, faults)
if on:  # turning it off again gives the kept memory back
    rss = int(open("/proc/self/statm").read().split()[1])
    retain_freed_memory(False)
    print(retaining(), rss - int(open("/proc/self/statm").read().split()[1]))
"""


def _probe(flag: str) -> list[list[str]]:
    p = subprocess.run([sys.executable, "-c", PROBE, flag], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    return [line.split() for line in p.stdout.splitlines()]


def test_retained_memory_is_reused_without_page_faults():
    (on, retaining, kind, faults), (after, trimmed_pages) = _probe("1")
    assert (on, retaining, kind) == ("True", "True", "cpu_rss_retained")
    assert int(faults) < 1000  # 10 x 64 MB = 163,840 pages, reused from the heap
    assert after == "False" and int(trimmed_pages) * 4096 >= 60 << 20  # the 64 MB block went back


def test_glibc_defaults_fault_every_allocation_in_again():
    ((on, retaining, kind, faults),) = _probe("0")
    assert (on, retaining, kind) == ("False", "False", "cpu_rss")
    assert int(faults) > 10 * (16 << 20) * 4 // 4096 // 2  # at least half of the 163,840 pages
