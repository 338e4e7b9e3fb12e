"""The parts of `python -m harness.bench.gpu`, each run in its own process (see harness/bench/gpu.py).

A part takes the shapes (`Shapes`), the device and a work folder, runs real trials (`python -m
harness` in fresh processes) or HF generate, and records what it found in `record` as it goes, so
a part stopped at its time limit still reports what it had finished.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.registry import Registry

PARTS: Registry = Registry("harness.bench.gpu part")
REPO = Path(__file__).resolve().parents[2]
WEIGHT_TOL = 1e-6  # max |w_fsdp2 - w_one| after 3 steps: tests/test_fsdp_trial.py's tolerance
GRAD_NORM_RTOL = 1e-5  # the same test's, for train/grad_norm per step
GIB = 1024 ** 3


@dataclass(frozen=True)
class Shapes:
    """The sizes a run uses: the paper's micro-batch and lengths on a GPU, a few tokens on a CPU (--small)."""

    arch: dict = field(default_factory=dict)  # model.random.arch over Qwen3-1.7B's config ({}: the real one)
    group: int = 16  # group_size = micro_batch_size: one micro-batch of the paper's 16 sequences
    prompt_tokens: int = 1024  # every prompt exactly this long (a long system prompt, cut from the left)
    new_tokens: int = 1024  # min_new_tokens = max_new_tokens: every response this long
    gen_batches: tuple[int, int] = (16, 64)  # HF generate batch sizes
    gen_tokens: int = 256


FULL = Shapes()
SMALL = Shapes(arch={"num_hidden_layers": 2, "hidden_size": 128, "intermediate_size": 384, "num_attention_heads": 4,
                     "num_key_value_heads": 2, "head_dim": 32, "vocab_size": 8192},
               group=4, prompt_tokens=32, new_tokens=16, gen_batches=(2, 8), gen_tokens=16)


def model_overrides(s: Shapes) -> list[str]:
    arch = ", ".join(f"{k}: {v}" for k, v in s.arch.items())
    return ["model=qwen3-1.7b", "model.source=random", *([f"++model.random.arch={{{arch}}}"] if arch else [])]


def memory_overrides(s: Shapes, optimizer: str, device: str) -> list[str]:
    """One step of the Qwen3-1.7B-architecture trial at the shapes' sizes; evals as small as they go."""
    system = " ".join(["step"] * (s.prompt_tokens + 8))  # >= 1 token per word: longer than the cut
    return [*model_overrides(s), f"optimizer={optimizer}", f"device={device}", "logger=none", "trainer.steps=1",
            "trainer.prompts_per_step=1", f"trainer.group_size={s.group}", f"trainer.micro_batch_size={s.group}",
            f"trainer.max_prompt_tokens={s.prompt_tokens}", f"trainer.max_new_tokens={s.new_tokens}",
            f"trainer.min_new_tokens={s.new_tokens}", f"task.system_prompt='{system}'", "task.num_val=2",
            "task.num_eval=2", "trainer.eval_max_new_tokens=4", "trainer.eval_every=0", "malloc_retain=false",
            *(["threads=1"] if device == "cpu" else [])]


TINY = ["model=tiny", "logger=none", "trainer.steps=3", "trainer.eval_every=0", "task.num_eval=8", "task.num_val=8"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def trial(args: list[str], out: Path, ranks: int = 0) -> dict:
    """`python -m harness args` (ranks=0) or torchrun with `ranks` processes; its result.json, or why it has none."""
    if ranks:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--master-port",
               str(_port()), "-m", "harness", *args, f"hydra.run.dir={out}"]
    else:
        cmd = [sys.executable, "-m", "harness", *args, f"hydra.run.dir={out}"]
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(out / "stderr.log", "w") as err:
        code = subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err, env=os.environ).returncode
    res = json.loads((out / "result.json").read_text()) if (out / "result.json").exists() else {}
    res["bench/wall_s"] = time.perf_counter() - t0
    if code != 0 or res.get("status") != "ok":
        tail = (out / "stderr.log").read_text()[-1500:]
        res.setdefault("status", "failed")
        res["error"] = res.get("error") or f"exit {code}: {tail}"
    return res


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from harness.config import register

    register()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides)


def plan(overrides: list[str], device: str) -> dict:
    """harness.plan's prediction for the trial of `overrides` on this machine's device, per phase (bytes).
    On CUDA without plan.reserve (the context is not in torch's allocated bytes), as the trial measures."""
    from harness.plan.gpus import resolve
    from harness.plan.trial import plan_trial

    extra = ["plan.gpu=auto", "plan.reserve_gb=0"] if device.startswith("cuda") else ["plan.gpu=cpu"]
    cfg = _compose([o for o in overrides if not o.startswith(("device=", "threads="))] + extra)
    tp = plan_trial(cfg, 1, resolve(cfg.plan))
    phases = {p.name: p.total for p in tp.phases}
    update = max(("update: forward/backward", "update: optimizer step"), key=lambda n: phases[n])
    return {"rollout": phases["rollout"], "update": phases[update], "update_phase": update, "peak": tp.worst.total,
            "params": tp.shapes.params, "update_flops": tp.flops.update + tp.flops.reference,
            "device": tp.device.name, "peak_flops": tp.device.peak_flops, "source": tp.source}


@PARTS.register("memory")
def memory(s: Shapes, device: str, work: Path, record: Callable[[dict], None]) -> None:
    """SGD then AdamW: the measured peak per phase beside the planner's, and the state bytes per parameter."""
    from harness.models import resolve_model_dir

    got: dict[str, Any] = {"shapes": {"prompt_tokens": s.prompt_tokens, "new_tokens": s.new_tokens,
                                      "sequences": s.group, "micro_batch": s.group, "arch": s.arch}}
    cfg = _compose(memory_overrides(s, "sgd", device))
    t0 = time.perf_counter()  # built here, so that the trials only load it (the build's memory is not theirs)
    got["model_dir"] = resolve_model_dir(cfg.model, os.path.expanduser(cfg.cache_dir))
    got["build_s"] = time.perf_counter() - t0
    record(got)
    for opt in ("sgd", "adamw"):
        args = memory_overrides(s, opt, device)
        predicted = plan(args, device)
        r = trial(args, work / f"memory-{opt}")
        got[opt] = {"status": r["status"], "error": r.get("error"), "plan": predicted, "wall_s": r["bench/wall_s"],
                    **{k: r.get(k) for k in ("mem/peak_bytes_rollout", "mem/peak_bytes_update", "mem/peak_bytes",
                                              "mem/peak_kind", "mem/optimizer_state_bytes", "params/trainable",
                                              "perf/update_s_mean", "perf/diagnostics_s_mean", "perf/rollout_s_mean", "perf/step_s_mean",
                                              "sparsity/changed_fraction_bf16", "params/initial_bf16_grid_fraction")}}
        record(got)
    if all(got[o]["status"] == "ok" for o in ("sgd", "adamw")):
        got["state_bytes_per_param_adamw_minus_sgd"] = ((got["adamw"]["mem/optimizer_state_bytes"]
                                                         - got["sgd"]["mem/optimizer_state_bytes"])
                                                        / got["sgd"]["params/trainable"])
        record(got)


@PARTS.register("speed")
def speed(s: Shapes, device: str, work: Path, record: Callable[[dict], None]) -> None:
    """HF generate tokens/s on the random Qwen3-1.7B architecture in bf16, at two batch sizes."""
    import torch
    from transformers import AutoModelForCausalLM

    from harness.models import load_tokenizer, resolve_model_dir
    from harness.tasks import build_task

    cfg = _compose(memory_overrides(s, "sgd", device))
    model_dir = resolve_model_dir(cfg.model, os.path.expanduser(cfg.cache_dir))
    tok = load_tokenizer(model_dir, cfg.model)
    dev = torch.device(device)
    if dev.type == "cpu":
        torch.set_num_threads(1)  # as the trials run here (threads=1): a shared CPU is many times slower with more
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, local_files_only=True).to(dev).eval()
    task = build_task(cfg.task, cfg.seed)
    ids = tok.apply_chat_template(task.messages(task.train[0]), add_generation_prompt=True, tokenize=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)[-s.prompt_tokens:]
    got: dict[str, Any] = {"prompt_tokens": len(ids), "new_tokens": s.gen_tokens, "dtype": "bfloat16", "tokens_per_s": {}}

    def run(batch: int, new: int) -> float:
        x = torch.tensor([ids] * batch, device=dev)
        sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        with torch.no_grad():
            model.generate(x, attention_mask=torch.ones_like(x), do_sample=True, max_new_tokens=new,
                           min_new_tokens=new, pad_token_id=tok.pad_token_id)
        sync()
        return time.perf_counter() - t0

    torch.manual_seed(0)
    run(s.gen_batches[0], 2)  # warm-up: kernels, allocator
    for b in s.gen_batches:
        got["tokens_per_s"][str(b)] = b * s.gen_tokens / run(b, s.gen_tokens)
        record(got)


@PARTS.register("fsdp2")
def fsdp2(s: Shapes, device: str, work: Path, record: Callable[[dict], None]) -> None:
    """distributed=fsdp2 in a world of one (NCCL on CUDA, gloo on CPU) against one process, tiny model, AdamW."""
    import torch

    args = [*TINY, f"device={device}", "optimizer=adamw", "threads=1", "trainer.keep_checkpoint=true",
            "trainer.checkpoint_every=3"]
    one = trial(args, work / "fsdp-one")
    two = trial([*args, "distributed=fsdp2"], work / "fsdp-world1", ranks=1)
    got: dict[str, Any] = {"one": {"status": one["status"], "error": one.get("error")},
                           "fsdp2": {"status": two["status"], "error": two.get("error")},
                           "backend": "nccl" if device.startswith("cuda") else "gloo", "weight_tol": WEIGHT_TOL}
    record(got)
    if one["status"] != "ok" or two["status"] != "ok":
        return
    rows = [[json.loads(x) for x in (work / d / "metrics.jsonl").read_text().splitlines() if "train/loss" in x]
            for d in ("fsdp-one", "fsdp-world1")]
    got["reward_curve_equal"] = one["train/reward_curve"] == two["train/reward_curve"]
    got["grad_norm_max_rel_diff"] = max(abs(b["train/grad_norm"] - a["train/grad_norm"]) / max(abs(a["train/grad_norm"]), 1e-30)
                                        for a, b in zip(*rows))
    wa = torch.load(work / "fsdp-one" / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    dcp_to_torch_save(str(work / "fsdp-world1" / "checkpoint"), str(work / "fsdp-world1" / "flat.pt"))
    wb = torch.load(work / "fsdp-world1" / "flat.pt", map_location="cpu", weights_only=False)["model"]
    got["weights_max_abs_diff"] = max((wa[n].float() - wb[n].float()).abs().max().item() for n in wa)
    got["ok"] = (got["reward_curve_equal"] and got["grad_norm_max_rel_diff"] <= GRAD_NORM_RTOL
                 and got["weights_max_abs_diff"] <= WEIGHT_TOL)
    got["step_s"] = {"one": one.get("perf/step_s_mean"), "fsdp2": two.get("perf/step_s_mean")}
    record(got)


@PARTS.register("bf16")
def bf16(s: Shapes, device: str, work: Path, record: Callable[[dict], None]) -> None:
    """A tiny-model trial end to end in bf16 compute (autocast over fp32 master weights)."""
    r = trial([*TINY, f"device={device}", "threads=1", "model.dtype=bfloat16"], work / "bf16")
    keys = ("eval/accuracy_initial", "eval/accuracy_final", "train/reward_curve", "perf/step_s_mean", "mem/peak_bytes",
            "mem/peak_kind", "sparsity/changed_fraction_bf16")
    loss = r.get("train/loss_curve") or []
    record({"status": r["status"], "error": r.get("error"), **{k: r.get(k) for k in keys},
            "losses_finite": bool(loss) and all(x is not None and math.isfinite(x) for x in loss)})
