"""One rank vs two ranks (torchrun, gloo, FSDP2) on this machine, side by side.

    python -m harness.bench.distributed                          # the tiny model, 6 steps, 2 rounds
    python -m harness.bench.distributed --steps 4 --rounds 2 model=smollm2-135m

Each (variant, round) is the real trial in fresh processes: `python -m harness` for one rank and
`torchrun --nproc-per-node 2 -m harness distributed=fsdp2` for two, alternating round by round. The
first step is warm-up and left out. Prints medians over the timed steps and rounds: step, rollout,
update and weight-sync time, and the peak memory of each rank. On a 2-core CPU two ranks share the
cores: this measures the overhead of sharding and collectives, not a speedup.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

KEYS = {"step s": "perf/step_s", "rollout s": "perf/rollout_s", "update s": "perf/update_s",
        "weight sync s": "perf/sync_s", "optimizer step s": "perf/optimizer_step_s"}
COMMON = ["logger=none", "trainer.eval_every=0", "task.num_val=8", "task.num_eval=8"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(ranks: int, overrides: list[str], out: Path) -> list[str]:
    args = [*overrides, *COMMON, f"hydra.run.dir={out}"]
    if ranks == 1:
        return [sys.executable, "-m", "harness", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--master-port",
            str(_port()), "-m", "harness", "distributed=fsdp2", *args]


def run(ranks: int, overrides: list[str], out: Path) -> dict:
    p = subprocess.run(command(ranks, overrides, out), capture_output=True, text=True)
    res = json.loads((out / "result.json").read_text()) if (out / "result.json").exists() else {}
    if p.returncode != 0 or res.get("status") != "ok":
        raise SystemExit(f"bench: {ranks}-rank trial failed: {res.get('error') or p.stderr[-2000:]}")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    timed = [r for r in rows if "train/reward_mean" in r][1:]
    m = {name: [r.get(k) or 0.0 for r in timed] for name, k in KEYS.items()}
    peaks = res.get("mem/peak_bytes_by_rank") or [res.get("mem/peak_bytes")]
    m["peak MB per rank"] = [p / 1e6 for p in peaks]
    m["reward curve"] = res["train/reward_curve"]
    return m


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("overrides", nargs="*", default=[])
    a = ap.parse_args(argv)
    overrides = a.overrides or ["model=tiny"]
    overrides = [*overrides, f"trainer.steps={a.steps}"]
    got: dict[int, list[dict]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="bench-dist-") as tmp:
        for r in range(a.rounds):
            for ranks in (1, 2):
                got[ranks].append(run(ranks, overrides, Path(tmp) / f"r{r}-{ranks}"))
    print(f"| metric (median) | 1 rank | 2 ranks (FSDP2, gloo) | 2 / 1 |\n|---|---|---|---|")
    for name in KEYS:
        one = statistics.median(x for m in got[1] for x in m[name])
        two = statistics.median(x for m in got[2] for x in m[name])
        ratio = f"{two / one:.2f}" if one else "-"
        print(f"| {name} | {one:.3f} | {two:.3f} | {ratio} |")
    one_peak = statistics.median(m["peak MB per rank"][0] for m in got[1])
    two_peaks = [statistics.median(m["peak MB per rank"][k] for m in got[2]) for k in range(2)]
    print(f"| peak MB per rank | {one_peak:.0f} | {' / '.join(f'{p:.0f}' for p in two_peaks)} | "
          f"{max(two_peaks) / one_peak:.2f} |")
    same = all(m["reward curve"] == got[1][0]["reward curve"] for m in got[1] + got[2])
    print(f"\nreward curves identical across ranks and rounds: {same}; {a.rounds} rounds x {a.steps - 1} timed steps; "
          f"overrides: {' '.join(overrides)}")


if __name__ == "__main__":
    main()
