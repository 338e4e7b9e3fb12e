"""`python -m harness` with the kernel's view of each phase recorded: the benchmarks' trial runner.

    HARNESS_PROBE=phases.jsonl python -m harness.bench.probe [the arguments of python -m harness]

Runs the harness's entry point unchanged, with the trainer's phase timer (harness.measure.memory.
PhaseTracker.phase) wrapped to append one line per phase to $HARNESS_PROBE: the phase's name and its
minor page faults, system and user CPU seconds (getrusage of this process, all threads). That is how
bench.rollout shows what the update costs the kernel (page zeroing) with and without a resident
vLLM engine. Measures only: nothing the trial computes changes.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import runpy


def _wrap(path: str) -> None:
    from harness.measure import memory

    original = getattr(memory.PhaseTracker, "phase", None)
    if original is None:
        return

    @contextlib.contextmanager
    def phase(self, name, *args, **kwargs):
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        try:
            with original(self, name, *args, **kwargs):
                yield
        finally:
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            with open(path, "a") as f:
                f.write(json.dumps({"phase": name, "minflt": r1.ru_minflt - r0.ru_minflt,
                                    "sys_s": r1.ru_stime - r0.ru_stime, "user_s": r1.ru_utime - r0.ru_utime}) + "\n")

    memory.PhaseTracker.phase = phase


if __name__ == "__main__":
    if os.environ.get("HARNESS_PROBE"):
        _wrap(os.environ["HARNESS_PROBE"])
    runpy.run_module("harness", run_name="__main__", alter_sys=True)
