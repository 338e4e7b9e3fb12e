"""Ready for the first GPU: memory against the planner, speed and correctness, in one command.

    python -m harness.bench.gpu --out DIR                # on a CUDA machine (.ci/gpu_check.sh OUTDIR runs it)
    python -m harness.bench.gpu --device cpu --small     # the same code with small shapes, on a CPU

Parts (harness/bench/gpu_parts.py), each in its own process with its own time limit (`--limit
PART=SECONDS`): a part that runs over is reported as such, with what it had finished, and the
others still run.
- memory: one trial step of the Qwen3-1.7B architecture with random weights (model.source=random:
  nothing to download), one micro-batch of 16 sequences, prompt 1024 + response 1024 tokens
  (min_new_tokens = max_new_tokens), with SGD and with AdamW. The peak per phase (CUDA: allocated;
  CPU: resident) beside harness.plan's prediction for the same config, as a ratio; AdamW's state
  minus SGD's per parameter (8 bytes: two fp32 moments).
- speed: update MFU (the planner's update + reference FLOPs over the measured update time, against
  the GPU's bf16 peak) from the memory trials; HF generate tokens/s in bf16 at two batch sizes.
- fsdp2: distributed=fsdp2 in a world of one (NCCL on CUDA, gloo on CPU) against one process on
  the tiny model: the reward curve equal, the weights within the CPU test's tolerance.
- bf16: a tiny-model trial end to end with model.dtype=bfloat16.
Writes DIR/gpu.json (every figure, the machine and date) and DIR/gpu.md (the table it prints).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.bench.gpu_parts import FULL, GIB, PARTS, SMALL, Shapes
from harness.bench.gpu_table import table
from harness.errors import ConfigError, check
from harness.results import atomic_write_json, atomic_write_text

# seconds per part: on one H100 the four add up to 6 minutes; on a CPU (--small) shared by others, more
LIMITS = {"cuda": {"memory": 240, "speed": 45, "fsdp2": 50, "bf16": 25},
          "cpu": {"memory": 300, "speed": 120, "fsdp2": 300, "bf16": 180}}


def machine(device: str) -> dict[str, Any]:
    import torch
    import transformers

    info = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "host": platform.node(), "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__, "cpus": os.cpu_count(),
            "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / GIB, 1), cuda=torch.version.cuda)
    return info


def run_part(name: str, device: str, small: bool, work: Path, limit: float) -> dict:
    """The part in a fresh process (its own session: a part over its limit is killed with its trials)."""
    out = work / f"{name}.json"
    cmd = [sys.executable, "-m", "harness.bench.gpu", "--part", name, "--device", device, "--work", str(work),
           *(["--small"] if small else [])]
    t0 = time.perf_counter()
    with open(work / f"{name}.log", "w") as log:
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = p.wait(timeout=limit)
            status = "ok" if code == 0 else f"failed (exit {code})"
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            status = f"timed out after {limit:.0f} s"
    data = json.loads(out.read_text()) if out.exists() else {}
    if status.startswith("failed"):
        data["error"] = (work / f"{name}.log").read_text()[-1500:]
    return {"status": status, "seconds": round(time.perf_counter() - t0, 1), "limit_s": limit, **data}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cuda | cpu (default: cuda if available)")
    ap.add_argument("--small", action="store_true", help="small shapes (a CPU run of the same code)")
    ap.add_argument("--out", default="gpu-bench", help="folder for gpu.json and gpu.md")
    ap.add_argument("--work", default=None, help="folder for the trials (default: a new temporary one)")
    ap.add_argument("--parts", default=",".join(LIMITS["cuda"]), help="comma-separated, run in this order: "
                    + ", ".join(LIMITS["cuda"]))
    ap.add_argument("--limit", action="append", default=[], metavar="PART=SECONDS", help="a part's time limit")
    ap.add_argument("--part", default=None, help=argparse.SUPPRESS)  # run one part in this process
    a = ap.parse_args(argv)
    import torch

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    shapes: Shapes = SMALL if a.small else FULL
    work = Path(a.work or tempfile.mkdtemp(prefix="harness-gpu-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HARNESS_CACHE", str(work / "cache"))
    if a.part:  # a child: one part, its findings written as it goes
        PARTS.build(a.part, shapes, device, work, lambda d: atomic_write_json(work / f"{a.part}.json", d))
        return 0
    names = [n.strip() for n in a.parts.split(",") if n.strip()]
    limits = dict(LIMITS["cuda" if device.startswith("cuda") else "cpu"])
    try:  # a bad name or limit fails here, in one line, before any work
        for n in names:
            PARTS.entry(n)
        for item in a.limit:
            k, _, v = item.partition("=")
            PARTS.entry(k)
            check(v.replace(".", "", 1).isdigit() and float(v) > 0, f"--limit {k}", v, "must be a number of seconds > 0")
            limits[k] = float(v)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"machine": machine(device), "small": a.small, "shapes": shapes.__dict__, "work": str(work),
                              "parts": {}}
    for n in names:
        print(f"[bench.gpu] {n}: running (limit {limits[n]:.0f} s)", file=sys.stderr, flush=True)
        report["parts"][n] = run_part(n, device, a.small, work, limits[n])
        print(f"[bench.gpu] {n}: {report['parts'][n]['status']} in {report['parts'][n]['seconds']} s", file=sys.stderr, flush=True)
        atomic_write_json(out / "gpu.json", report)
    text = table(report)
    atomic_write_text(out / "gpu.md", text)
    print(text, end="")
    return 0 if all(p["status"] == "ok" for p in report["parts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
