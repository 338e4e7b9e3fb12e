"""What malloc_retain costs and buys: glibc's defaults vs full retention vs a bounded retention.

    python -m harness.bench.malloc                          # SmolLM2-135M, SGD, 4 steps, 2 rounds
    python -m harness.bench.malloc --steps 3 --rounds 1 model=tiny

Three variants of the default trial, fresh processes, alternating: `glibc` (malloc_retain=false,
glibc's defaults: blocks above a dynamic mmap threshold are mapped and unmapped each time, the heap
top is trimmed), `retain` (malloc_retain=true: no mmap, no trim, harness.allocator), and `bounded`
(malloc_retain=false with GLIBC_TUNABLES: blocks of 64 MiB and more are mapped and returned on
free, smaller ones come from the heap, whose top keeps at most 256 MiB free). Per update (medians
of the timed steps): wall and system seconds, minor page faults; and the process's peak RSS.
"""

from __future__ import annotations

from harness.bench.common import Variant, cli

MIB = 1 << 20
BOUNDED = f"glibc.malloc.mmap_threshold={64 * MIB}:glibc.malloc.trim_threshold={256 * MIB}"


def main(argv: list[str] | None = None) -> None:
    cli({"glibc": Variant(("malloc_retain=false",)),
         "bounded": Variant(("malloc_retain=false",), env={"GLIBC_TUNABLES": BOUNDED}),
         "retain": Variant(("malloc_retain=true",))}, __doc__, argv)


if __name__ == "__main__":
    main()
