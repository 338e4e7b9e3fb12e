"""Shared by the benchmarks: run real trials in fresh processes, alternating variants, and print
a table of medians with ratios. A variant is a list of Hydra overrides, or a `Variant` (another
entry module, e.g. TRL's side of bench.peer, and extra environment variables)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

STEP_KEYS = {"rollout s": "perf/rollout_s", "reward s": "perf/reward_s", "update s": "perf/update_s",
             "sync s": "perf/sync_s", "step s": "perf/step_s", "rollout tok/s": "perf/rollout_tokens_per_s",
             "update tok/s": "perf/update_tokens_per_s"}
HARNESS_ARGS = ["trainer.eval_every=0", "task.num_val=8", "task.num_eval=8", "logger=none"]  # evals are untimed: keep them short


@dataclass(frozen=True)
class Variant:
    overrides: tuple[str, ...]
    module: str = "harness"  # python -m MODULE; "harness" gets hydra.run.dir, any other gets --out
    env: dict[str, str] = field(default_factory=dict)

    def command(self, steps: int, extra: list[str], out: Path) -> list[str]:
        common = [*self.overrides, f"trainer.steps={steps}", *extra]
        if self.module == "harness":  # through harness.bench.probe: per-phase page faults and CPU times
            return [sys.executable, "-m", "harness.bench.probe", *common, *HARNESS_ARGS, f"hydra.run.dir={out}"]
        return [sys.executable, "-m", self.module, "--out", str(out), *common]


def as_variant(v: Union[Variant, list[str]]) -> Variant:
    return v if isinstance(v, Variant) else Variant(tuple(v))


def _run(cmd: list[str], env: dict[str, str], out: Path) -> tuple[int, str, dict]:
    """Run cmd; its exit code, the tail of its stderr, and its own rusage (peak RSS, faults, CPU times)."""
    out.mkdir(parents=True, exist_ok=True)
    log = out / "stderr.log"
    with open(log, "w") as err, open(out / "stdout.log", "w") as so:
        p = subprocess.Popen(cmd, stdout=so, stderr=err, env={**os.environ, **env})
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    usage = {"process user s": ru.ru_utime, "process sys s": ru.ru_stime, "process minor faults": ru.ru_minflt}
    return p.returncode, log.read_text()[-2000:], usage


def run_one(variant: Union[Variant, list[str]], steps: int, extra: list[str], out: Path) -> dict:
    """One trial in a fresh process; medians of its per-step timings after the warm-up step."""
    v = as_variant(variant)
    cmd = v.command(steps, extra, out)
    code, err, usage = _run(cmd, {**v.env, "HARNESS_PROBE": str(out / "phases.jsonl")}, out)
    res = json.loads((out / "result.json").read_text()) if (out / "result.json").exists() else {}
    if code != 0 or res.get("status") != "ok":
        raise SystemExit(f"bench: trial failed: {' '.join(cmd)}\n{res.get('error') or err}")
    (out / "usage.json").write_text(json.dumps(usage))
    return read_run(out)


def read_run(out: Path) -> dict:
    """The medians of a finished run's folder (metrics.jsonl, result.json, phases.jsonl, usage.json)."""
    res = json.loads((out / "result.json").read_text())
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    timed = [r for r in rows if "train/reward_mean" in r][1:]  # drop the warm-up step
    m = {name: statistics.median(r.get(k) or 0.0 for r in timed) for name, k in STEP_KEYS.items()}
    m["rest of step s"] = m["step s"] - m["rollout s"]
    m["diagnostics s"] = statistics.median(r.get("perf/diagnostics_s") or 0.0 for r in timed)
    m["diagnostics / step"] = m["diagnostics s"] / max(m["step s"], 1e-9)

    def mb(key: str) -> float:
        return (res.get(key) or 0) / 1e6

    m.update(_phase_usage(out / "phases.jsonl", "update"))
    m.update({"optimizer state MB": mb("mem/optimizer_state_bytes"),
              "peak RSS MB": mb("mem/peak_bytes"),
              "peak rollout MB": mb("mem/peak_bytes_rollout"),
              "peak update MB": mb("mem/peak_bytes_update"),
              "setup s": res.get("perf/setup_s") or 0.0,
              "sparsity s": res.get("perf/sparsity_s") or 0.0,
              "sparsity / step": (res.get("perf/sparsity_s") or 0.0) / max(m["step s"], 1e-9),
              **json.loads((out / "usage.json").read_text())})
    return m


def _phase_usage(path: Path, phase: str) -> dict[str, float]:
    """Medians over the timed steps of a phase's minor page faults, system and user CPU seconds
    (bench.probe; CPU seconds change less than wall time when other processes share the cores)."""
    rows = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    rows = [r for r in rows if r["phase"] == phase][1:]  # drop the warm-up step
    med = (lambda k: statistics.median(r[k] for r in rows)) if rows else (lambda k: 0.0)
    return {f"{phase} minor faults": med("minflt"), f"{phase} sys s": med("sys_s"), f"{phase} user s": med("user_s")}


def run_rounds(variants: dict[str, Union[Variant, list[str]]], steps: int, rounds: int, extra: list[str],
               keep: Path | None = None) -> dict[str, dict[str, float]]:
    """Every variant `rounds` times, alternating (a fresh process each); medians per variant."""
    names = list(variants)
    runs: dict[str, list[dict]] = {k: [] for k in names}
    with tempfile.TemporaryDirectory() as tmp:
        root = keep or Path(tmp)
        for r in range(rounds):
            for name in names:
                runs[name].append(run_one(variants[name], steps, extra, root / f"{name}-{r}"))
                print(f"bench: {name} round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    cols = list(runs[names[0]][0])
    return {n: {c: statistics.median(x[c] for x in rs) for c in cols} for n, rs in runs.items()}


def ratio(y: float, x: float) -> str:
    return f"{y / x:.2f}" if x else ("n/a" if y == 0 else "inf")


def table(med: dict[str, dict[str, float]], rows: list[str] | None = None) -> str:
    """Markdown: one column per variant, then last / first."""
    names = list(med)
    a, b = names[0], names[-1]
    lines = ["| metric | " + " | ".join(names) + f" | {b} / {a} |", "|---|" + "---|" * (len(names) + 1)]
    for c in rows or list(med[a]):
        lines.append(f"| {c} | " + " | ".join(f"{med[n][c]:.3g}" for n in names) + f" | {ratio(med[b][c], med[a][c])} |")
    return "\n".join(lines)


def compare(variants: dict[str, Union[Variant, list[str]]], steps: int, rounds: int, extra: list[str]) -> None:
    """Run every variant `rounds` times, alternating, and print medians and last/first ratios."""
    med = run_rounds(variants, steps, rounds, extra)
    print(f"\nmedians over {rounds} rounds, {steps - 1} timed steps each; "
          f"overrides: {' '.join(extra) or '(defaults)'}\n")
    print(table(med))


def cli(variants: dict[str, Union[Variant, list[str]]], doc: str, argv: list[str] | None = None) -> None:
    """The benchmarks' shared command line: --steps, --rounds, then Hydra overrides for every trial."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4, help="steps per trial (the first is warm-up)")
    ap.add_argument("--rounds", type=int, default=2, help="trials per variant, alternating")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for every trial")
    a = ap.parse_args(argv)
    compare(variants, a.steps, a.rounds, a.overrides)
