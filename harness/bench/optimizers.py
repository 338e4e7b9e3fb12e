"""SGD vs AdamW side by side on the default model: time per phase, tokens/s, memory, sparsity cost.

    python -m harness.bench.optimizers                       # SmolLM2-135M, 4 steps, 2 rounds
    python -m harness.bench.optimizers --steps 6 --rounds 3 -- model=tiny rollout=vllm

Each (optimizer, round) runs the real trial (`python -m harness ...`) in a fresh process, so the
peak memory of one does not leak into the other, and the optimizers alternate round by round so
machine noise hits both alike. The first step of a trial (warm-up) is left out of the timings.
Prints a markdown table of medians over rounds, and the AdamW/SGD ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

OPTIMIZERS = {"sgd": ["optimizer=sgd"], "adamw": ["optimizer=adamw"]}
STEP_KEYS = {"rollout s": "perf/rollout_s", "reward s": "perf/reward_s", "update s": "perf/update_s",
             "step s": "perf/step_s", "rollout tok/s": "perf/rollout_tokens_per_s",
             "update tok/s": "perf/update_tokens_per_s"}


def run_one(opt_args: list[str], steps: int, extra: list[str], out: Path) -> dict:
    cmd = [sys.executable, "-m", "harness", *opt_args, f"trainer.steps={steps}", "trainer.eval_every=0",
           "task.num_eval=8", "logger=none", f"hydra.run.dir={out}", *extra]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    res = json.loads((out / "result.json").read_text()) if (out / "result.json").exists() else {}
    if p.returncode != 0 or res.get("status") != "ok":
        raise SystemExit(f"bench: trial failed: {' '.join(cmd)}\n{res.get('error') or p.stderr[-2000:]}")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    steps_rows = [r for r in rows if "train/reward_mean" in r][1:]  # drop the warm-up step
    m = {name: statistics.median(r[k] for r in steps_rows) for name, k in STEP_KEYS.items()}
    m.update({"optimizer state MB": res["mem/optimizer_state_bytes"] / 1e6,
              "peak rollout MB": res["mem/peak_bytes_rollout"] / 1e6,
              "peak update MB": res["mem/peak_bytes_update"] / 1e6,
              "sparsity s": res["perf/sparsity_s"],
              "sparsity / step": res["perf/sparsity_s"] / max(m["step s"], 1e-9)})
    return m


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4, help="steps per trial (the first is warm-up)")
    ap.add_argument("--rounds", type=int, default=2, help="trials per optimizer, alternating")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for every trial, after --")
    a = ap.parse_args(argv)
    runs: dict[str, list[dict]] = {k: [] for k in OPTIMIZERS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            for name, args in OPTIMIZERS.items():
                runs[name].append(run_one(args, a.steps, a.overrides, Path(tmp) / f"{name}-{r}"))
                print(f"bench: {name} round {r + 1}/{a.rounds} done", file=sys.stderr, flush=True)
    cols = list(runs["sgd"][0])
    med = {n: {c: statistics.median(x[c] for x in rs) for c in cols} for n, rs in runs.items()}
    print(f"\nmedians over {a.rounds} rounds, {a.steps - 1} timed steps each; overrides: {' '.join(a.overrides) or '(defaults)'}\n")
    print("| metric | " + " | ".join(OPTIMIZERS) + " | adamw / sgd |")
    print("|---|" + "---|" * (len(OPTIMIZERS) + 1))
    for c in cols:
        s, w = med["sgd"][c], med["adamw"][c]
        ratio = f"{w / s:.2f}" if s else ("n/a" if w == 0 else "inf")
        print(f"| {c} | {s:.3g} | {w:.3g} | {ratio} |")


if __name__ == "__main__":
    main()
