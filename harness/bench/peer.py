"""The harness against TRL's GRPOTrainer, side by side: step, generate, rest of the step, peak RSS.

    python -m harness.bench.peer                          # SmolLM2-135M, SGD and AdamW, 6 steps, 2 rounds
    python -m harness.bench.peer --optimizers sgd --steps 2 --rounds 1 model=tiny   # seconds (the test)

Needs TRL (`pip install -c .ci/constraints.txt -e '.[peer]'`); without it, one line and exit 2.
Per optimizer, three variants run in fresh processes, alternating round by round: the harness's
trial (`python -m harness`, its defaults, malloc_retain included), TRL as it runs by default, and
TRL with the harness's malloc settings (GLIBC_TUNABLES, harness.allocator), so neither side's
allocator decides the result. Both sides get the same config (harness.bench.trl_trial maps it onto
TRL: model folder, prompts in order, sampling, loss, micro-batches, precision, threads, optimizer).
The first step of each run is untimed; medians over the rest, then over rounds. Prints the table
with harness / TRL ratios and the settings that differ, and writes both to --out.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

from harness.allocator import glibc_tunables
from harness.bench.common import Variant, ratio, run_rounds
from harness.bench.trl_trial import DIFFERENCES, MISSING_TRL

ROWS = [("step s", "step s", 1), ("rollout (generate) s", "rollout s", 1), ("rest of the step s", "rest of step s", 1),
        ("peak RSS GB (whole process)", "peak RSS MB", 1e-3)]
HARNESS_ONLY = [("diagnostics s (per step)", "diagnostics s", 1), ("diagnostics / step", "diagnostics / step", 1),
                ("sparsity measurement s (once)", "sparsity s", 1), ("sparsity / step", "sparsity / step", 1)]


def have_trl() -> bool:
    try:
        return importlib.util.find_spec("trl") is not None
    except (ImportError, ValueError):  # ValueError: sys.modules["trl"] is None (hidden)
        return False


def variants(optimizers: list[str]) -> dict[str, Variant]:
    out = {}
    for opt in optimizers:
        o = (f"optimizer={opt}",)
        out[f"harness {opt}"] = Variant(o)
        out[f"TRL {opt}"] = Variant(o, module="harness.bench.trl_trial")
        out[f"TRL {opt}, harness malloc"] = Variant(o, module="harness.bench.trl_trial",
                                                   env={"GLIBC_TUNABLES": glibc_tunables()})
    return out


def render(med: dict[str, dict[str, float]], optimizers: list[str], rounds: int, steps: int, extra: list[str]) -> str:
    head = ["median over timed steps"]
    for opt in optimizers:
        head += [f"harness {opt}", f"TRL {opt}", "ratio", f"TRL {opt}, harness malloc", "ratio"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for label, key, scale in ROWS + HARNESS_ONLY:
        cells = [label]
        for opt in optimizers:
            h, t, tm = (med[f"{who} {opt}{suffix}"][key] for who, suffix in
                        (("harness", ""), ("TRL", ""), ("TRL", ", harness malloc")))
            if (label, key, scale) in HARNESS_ONLY:
                cells += [f"{h * scale:.3g}", "-", "", "-", ""]
            else:
                cells += [f"{h * scale:.3g}", f"{t * scale:.3g}", ratio(h, t), f"{tm * scale:.3g}", ratio(h, tm)]
        lines.append("| " + " | ".join(cells) + " |")
    differ = [f"- {what}: {why}" for what, why in DIFFERENCES]
    differ.append(f"- allocator: the harness sets glibc malloc from `malloc_retain` at start; TRL runs with glibc's "
                  f"defaults, and in the 'harness malloc' column with GLIBC_TUNABLES={glibc_tunables()}")
    return "\n".join([
        f"{rounds} rounds x {steps - 1} timed steps (medians; ratio = harness / TRL), {time.strftime('%Y-%m-%d %H:%M')}, "
        f"overrides: {' '.join(extra) or '(defaults)'}", "", *lines, "",
        "Settings that differ, and why:", *differ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6, help="steps per run (the first is untimed)")
    ap.add_argument("--rounds", type=int, default=2, help="runs per variant, alternating")
    ap.add_argument("--optimizers", default="sgd,adamw", help="comma-separated optimizer configs")
    ap.add_argument("--out", type=Path, default=Path("outputs/bench_peer.md"), help="the table is written here")
    ap.add_argument("--keep", type=Path, default=None, help="keep every run's folder under this one")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for both sides")
    a = ap.parse_args(argv)
    if not have_trl():
        print(MISSING_TRL, file=sys.stderr)
        return 2
    optimizers = [x for x in a.optimizers.split(",") if x]
    med = run_rounds(variants(optimizers), a.steps, a.rounds, a.overrides, keep=a.keep)
    text = render(med, optimizers, a.rounds, a.steps, a.overrides)
    print("\n" + text)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text + "\n")
    print(f"\nbench: written to {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
