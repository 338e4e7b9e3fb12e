"""Shared by the benchmarks: run real trials in fresh processes, alternating variants, and print
a table of medians with ratios. A variant is a list of Hydra overrides."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

STEP_KEYS = {"rollout s": "perf/rollout_s", "reward s": "perf/reward_s", "update s": "perf/update_s",
             "sync s": "perf/sync_s", "step s": "perf/step_s", "rollout tok/s": "perf/rollout_tokens_per_s",
             "update tok/s": "perf/update_tokens_per_s"}


def run_one(variant: list[str], steps: int, extra: list[str], out: Path) -> dict:
    """One trial (`python -m harness`); medians of its per-step timings after the warm-up step."""
    cmd = [sys.executable, "-m", "harness", *variant, f"trainer.steps={steps}", "trainer.eval_every=0",
           "task.num_eval=8", "logger=none", f"hydra.run.dir={out}", *extra]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    res = json.loads((out / "result.json").read_text()) if (out / "result.json").exists() else {}
    if p.returncode != 0 or res.get("status") != "ok":
        raise SystemExit(f"bench: trial failed: {' '.join(cmd)}\n{res.get('error') or p.stderr[-2000:]}")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    timed = [r for r in rows if "train/reward_mean" in r][1:]  # drop the warm-up step
    m = {name: statistics.median(r.get(k) or 0.0 for r in timed) for name, k in STEP_KEYS.items()}
    m.update({"optimizer state MB": res["mem/optimizer_state_bytes"] / 1e6,
              "peak rollout MB": res["mem/peak_bytes_rollout"] / 1e6,
              "peak update MB": res["mem/peak_bytes_update"] / 1e6,
              "setup s": res["perf/setup_s"],
              "sparsity s": res["perf/sparsity_s"],
              "sparsity / step": res["perf/sparsity_s"] / max(m["step s"], 1e-9)})
    return m


def compare(variants: dict[str, list[str]], steps: int, rounds: int, extra: list[str]) -> None:
    """Run every variant `rounds` times, alternating, and print medians and last/first ratios."""
    names = list(variants)
    runs: dict[str, list[dict]] = {k: [] for k in names}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for name in names:
                runs[name].append(run_one(variants[name], steps, extra, Path(tmp) / f"{name}-{r}"))
                print(f"bench: {name} round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    cols = list(runs[names[0]][0])
    med = {n: {c: statistics.median(x[c] for x in rs) for c in cols} for n, rs in runs.items()}
    a, b = names[0], names[-1]
    print(f"\nmedians over {rounds} rounds, {steps - 1} timed steps each; "
          f"overrides: {' '.join(extra) or '(defaults)'}\n")
    print("| metric | " + " | ".join(names) + f" | {b} / {a} |")
    print("|---|" + "---|" * (len(names) + 1))
    for c in cols:
        x, y = med[a][c], med[b][c]
        ratio = f"{y / x:.2f}" if x else ("n/a" if y == 0 else "inf")
        print(f"| {c} | " + " | ".join(f"{med[n][c]:.3g}" for n in names) + f" | {ratio} |")


def cli(variants: dict[str, list[str]], doc: str, argv: list[str] | None = None) -> None:
    """The benchmarks' shared command line: --steps, --rounds, then Hydra overrides for every trial."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4, help="steps per trial (the first is warm-up)")
    ap.add_argument("--rounds", type=int, default=2, help="trials per variant, alternating")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for every trial")
    a = ap.parse_args(argv)
    compare(variants, a.steps, a.rounds, a.overrides)
