"""SGD vs AdamW side by side on the default model: time per phase, tokens/s, memory, sparsity cost.

    python -m harness.bench.optimizers                       # SmolLM2-135M, 4 steps, 2 rounds
    python -m harness.bench.optimizers --steps 6 --rounds 3 model=tiny

Each (optimizer, round) runs the real trial (`python -m harness ...`) in a fresh process, so the
peak memory of one does not leak into the other, and the optimizers alternate round by round so
machine noise hits both alike. The first step of a trial (warm-up) is left out of the timings.
Prints a markdown table of medians over rounds and the AdamW/SGD ratios.
"""

from __future__ import annotations

from harness.bench.common import cli


def main(argv: list[str] | None = None) -> None:
    cli({"sgd": ["optimizer=sgd"], "adamw": ["optimizer=adamw"]}, __doc__, argv)


if __name__ == "__main__":
    main()
