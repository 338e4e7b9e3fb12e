"""Rollouts with transformers vs vLLM on the default model: tokens/s, weight-sync cost, step time.

    python -m harness.bench.rollout                         # SmolLM2-135M (bf16 compute), SGD
    python -m harness.bench.rollout --steps 6 --rounds 3 model=tiny
    python -m harness.bench.rollout --rounds 3 trainer.max_new_tokens=128 trainer.min_new_tokens=128

The two backends sample different completions (a bf16 engine vs autocast over fp32 weights), so
when completions may end at eos they need not do the same work; trainer.min_new_tokens equal to
trainer.max_new_tokens makes every completion run to the limit on both.

Needs vLLM (bash .ci/vllm_setup.sh on CPU). Each (backend, round) is a real trial in a fresh
process, alternating backends; the first step (warm-up) is left out. `sync s` is the time to load
the trainer's weights into the engine after each optimizer step (0 for hf, which generates with
the trained module itself); the vLLM engine's start is part of `setup s`. `update minor faults` and
`update sys s` (per update, from harness.bench.probe) show what the kernel spends on the update:
if the update is slower with the engine resident while its faults and system time are the same,
the cause is not page zeroing.
"""

from __future__ import annotations

from harness.bench.common import cli


def main(argv: list[str] | None = None) -> None:
    cli({"hf": ["rollout=hf"], "vllm": ["rollout=vllm"]}, __doc__, argv)


if __name__ == "__main__":
    main()
