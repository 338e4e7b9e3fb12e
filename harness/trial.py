"""One trial: set up model, task, optimizer and rollout from config, train, measure, write results.

Writes into `out_dir`: metrics.jsonl (a line per step, as it goes) and result.json (atomically, at
the end, with status "ok" or "failed" and the reason). A failure after validation never raises out
of `run_trial`: it is recorded, so a sweep goes on.
"""

from __future__ import annotations

import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Optional

import hydra.utils
import torch
from omegaconf import OmegaConf

from harness.allocator import retain_freed_memory
from harness.measure.memory import param_bytes
from harness.measure.sparsity import update_sparsity
from harness.results import MetricsFile, atomic_write_json
from harness.trainer import GRPOTrainer, Preempted
from harness.validate import ConfigError, validate

REPO = Path(__file__).resolve().parent.parent


def trial_info(cfg: Any, choices: dict, overrides: list[str]) -> dict:
    opt = cfg.optimizer
    momentum = opt.get("momentum") if "momentum" in opt else None
    info = {"optimizer": opt.get("name") or str(opt._target_).rsplit(".", 1)[-1].lower(),
            "lr": float(opt.lr), "momentum": None if momentum is None else float(momentum),
            "model": choices.get("model") or cfg.model.name, "task": choices.get("task") or cfg.task.name,
            "seed": int(cfg.seed), "overrides": list(overrides),
            "slurm_job_id": os.environ.get("SLURM_ARRAY_JOB_ID", os.environ.get("SLURM_JOB_ID"))}
    m = "" if momentum in (None, 0, 0.0) else f"-m{momentum:g}"
    info["name"] = f"{info['optimizer']}{m}-lr{info['lr']:g}-s{info['seed']}"
    return info


def provenance(cfg: Any, device: torch.device) -> dict:
    import transformers

    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=5).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=5).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    versions = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}
    for pkg in ("vllm", "wandb", "hydra", "math_verify"):
        mod = sys.modules.get(pkg)
        if mod is not None:
            versions[pkg] = getattr(mod, "__version__", None)
    hw = {"platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
          "torch_threads": torch.get_num_threads(), "device": str(device), "hostname": socket.gethostname()}
    if device.type == "cuda":
        hw["gpu"] = torch.cuda.get_device_name(device)
    return {"config": OmegaConf.to_container(cfg, resolve=True), "seed": int(cfg.seed), "versions": versions,
            "git_commit": commit, "git_dirty": dirty, "hardware": hw, "argv": sys.argv,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def build_rollout(cfg: Any, model, tokenizer, model_dir: str, device: torch.device):
    if cfg.rollout.backend == "vllm":
        from harness.rollout.vllm import VLLMRollout

        return VLLMRollout(cfg.rollout, model_dir, cfg.seed, device, eos_token_id=tokenizer.eos_token_id)
    from harness.rollout.hf import HFRollout

    return HFRollout(model, tokenizer.eos_token_id, tokenizer.pad_token_id, getattr(torch, cfg.model.dtype),
                     cfg.rollout.batch_size)


def _mean(xs: list) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


def run_trial(cfg: Any, out_dir: str | os.PathLike, choices: Optional[dict] = None,
              overrides: Optional[list[str]] = None, group: Optional[str] = None,
              progress: bool = True) -> dict:
    """Validate (raises ConfigError before any work), then run; returns the result dict."""
    out = Path(out_dir)
    device = validate(cfg)
    info = trial_info(cfg, choices or {}, overrides or [])
    from harness.tasks import build_task
    from harness.tasks.math import TaskDataError

    try:
        task = build_task(cfg.task, cfg.seed)  # reads task files: bad data is a config error
    except (TaskDataError, ValueError) as e:
        raise ConfigError(str(e)) from None

    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    result: dict = {"status": "failed", "error": None, "trial": info}
    ckpt = out / "checkpoint.pt"
    resume_step = _checkpoint_step(ckpt)
    metrics = MetricsFile(out / "metrics.jsonl", keep_through_step=resume_step)
    logger = trainer = rollout = None
    preempted = False
    try:
        from harness.loggers import build_logger
        from harness.models import load_model, load_tokenizer, resolve_model_dir

        torch.manual_seed(cfg.seed)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        retain_freed_memory(bool(cfg.malloc_retain))
        result["provenance"] = provenance(cfg, device)
        logger = build_logger(cfg.logger, out, info["name"], result["provenance"]["config"], group,
                              tags=[info["optimizer"], str(info["model"])], job_type=info["optimizer"])
        result["wandb_run_id"] = logger.run_id
        t0 = time.perf_counter()
        model_dir = resolve_model_dir(cfg.model, hydra.utils.to_absolute_path(cfg.cache_dir))
        tokenizer = load_tokenizer(model_dir)
        model = load_model(cfg.model, model_dir, device)
        model.train()
        optimizer = make_optimizer(cfg.optimizer, model)
        rollout = build_rollout(cfg, model, tokenizer, model_dir, device)
        setup_s = time.perf_counter() - t0

        def log(m: dict, step: int) -> None:
            metrics.write({"step": step, **m} if "step" not in m else m)
            logger.log(m, step)

        trainer = GRPOTrainer(cfg, model, tokenizer, task, rollout, optimizer, device, log, cfg.seed,
                              checkpoint_path=ckpt)
        if resume_step is not None:
            trainer.load_checkpoint(ckpt)
            result["resumed_from_step"] = resume_step
            print(f"[harness] {out}: resumed from the checkpoint at step {resume_step}", file=sys.stderr)
        _on_signal(signal.SIGUSR2, lambda: setattr(trainer, "preempt_requested", True))
        bar = _progress_bar(cfg.trainer.steps, info["name"]) if progress else None
        if bar is not None:
            bar.update(trainer.step)

        def on_step(step: int, m: dict) -> None:
            if bar is not None:
                bar.set_postfix(reward=f"{m['train/reward_mean']:.2f}", acc=m.get("eval/accuracy", ""), refresh=False)
                bar.update(1)

        try:
            trainer.train(on_step)
        finally:
            if bar is not None:
                bar.close()
        with trainer.phases.phase("sparsity"):
            sparsity = update_sparsity(trainer.initial, dict(model.named_parameters()),
                                       rank_energy=cfg.trainer.rank_energy)
        result.update(_summarise(trainer, model, optimizer, sparsity, metrics.path))
        result["perf/setup_s"] = setup_s
        result["status"] = "ok"
        _log_tables(logger, trainer)
    except Preempted:
        preempted = True  # checkpoint saved: no result; the requeued job resumes
    except Exception as e:  # noqa: BLE001 - a failed trial is recorded, never kills the sweep
        result["status"] = "failed"
        result["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:500]
        (out / "error.txt").write_text(traceback.format_exc())
    finally:
        result["perf/total_s"] = time.perf_counter() - t_start
        if trainer is not None:
            result.setdefault("train/steps_done", trainer.step)
            result.setdefault("train/steps_skipped", trainer.skipped)
            trainer.close()
        metrics.close()
        if rollout is not None:
            rollout.close()
        if preempted:
            if logger is not None:
                logger.preempted()
        else:
            atomic_write_json(out / "result.json", result)
            if logger is not None:
                logger.finish({k: v for k, v in result.items()
                               if not isinstance(v, (dict, list)) or k.startswith(("eval/", "train/", "trial"))},
                              failed=result["status"] != "ok")
            if not cfg.trainer.keep_checkpoint:
                ckpt.with_suffix(".json").unlink(missing_ok=True)
                ckpt.unlink(missing_ok=True)
    if preempted:
        _requeue(signal.SIGUSR2)
    return result


_previous_handlers: dict[int, Any] = {}


def _on_signal(signum: int, flag: Any) -> None:
    """Note the signal (the trainer checkpoints between steps), remembering who handled it before
    (submitit: requeue the job). Only the main thread can set handlers."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    prev = signal.getsignal(signum)
    if not getattr(prev, "_harness", False):
        _previous_handlers[signum] = prev

    def handler(sig, frame):
        print(f"[harness] signal {sig}: checkpointing after this step", file=sys.stderr, flush=True)
        flag()

    handler._harness = True  # type: ignore[attr-defined]
    signal.signal(signum, handler)


def _requeue(signum: int) -> None:
    """Hand the signal to whoever handled it before us: under submitit that requeues the job."""
    prev = _previous_handlers.get(signum)
    if callable(prev):
        prev(signum, None)
    sys.exit(128 + signum)  # no requeue handler: exit as if killed by the signal


def _checkpoint_step(path: Path) -> Optional[int]:
    """The step of the checkpoint in the trial folder (from its sidecar), or None: start from scratch."""
    from harness.results import read_result

    meta = read_result(path.with_suffix(".json"))
    if not meta or not path.exists():
        return None
    return int(meta["step"])


def make_optimizer(cfg_opt: Any, model: torch.nn.Module) -> torch.optim.Optimizer:
    """`_target_` + `_partial_: true` give a factory; `name` is the harness's label, not an argument."""
    node = OmegaConf.to_container(cfg_opt, resolve=True)
    node.pop("name", None)
    factory = hydra.utils.instantiate(node, _convert_="all")
    return factory([p for p in model.parameters() if p.requires_grad])


def _progress_bar(total: int, name: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=name, unit="step", dynamic_ncols=True, file=sys.stderr)


def _summarise(trainer, model, optimizer, sparsity: dict, metrics_path: Path) -> dict:
    from harness.measure.memory import optimizer_state_bytes

    import json

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    steps = [r for r in rows if "train/reward_mean" in r]
    curve = trainer.history["eval"]
    accs = [c["accuracy"] for c in curve]
    ph = trainer.phases
    n_steps = max(1, len(steps))
    res = {
        "eval/accuracy_initial": accs[0] if accs else None,
        "eval/accuracy_final": accs[-1] if accs else None,
        "eval/accuracy_best": max(accs) if accs else None,
        "eval/curve": curve,
        "train/reward_curve": trainer.history["reward"],
        "train/reward_mean": _mean([r["train/reward_mean"] for r in steps]),
        "train/reward_mean_last": steps[-1]["train/reward_mean"] if steps else None,
        "train/steps_done": trainer.step, "train/steps_skipped": trainer.skipped,
        "train/verify_errors": trainer.verify_errors, "train/verify_timeouts": trainer.verify_timeouts,
        "mem/optimizer_state_bytes": optimizer_state_bytes(optimizer),
        "mem/param_bytes": param_bytes(model),
        "mem/grad_bytes": trainer.max_grad_bytes,
        "mem/reference_bytes": sum(t.numel() * t.element_size() for t in trainer.initial.values()),
        "mem/peak_bytes": max(ph.peak_bytes.values()) if ph.peak_bytes else None,
        "mem/peak_bytes_rollout": ph.peak_bytes.get("rollout"),
        "mem/peak_bytes_update": ph.peak_bytes.get("update"),
        "mem/peak_bytes_eval": ph.peak_bytes.get("eval"),
        "mem/peak_kind": ph.peak.kind,
        "params/trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "params/total": sum(p.numel() for p in model.parameters()),
        "optim/momentum_grad_cosine_mean": _mean([r.get("optim/momentum_grad_cosine") for r in steps]),
        "optim/second_moment_cv_mean": _mean([r.get("optim/second_moment_cv") for r in steps]),
        "optim/update_norm_mean": _mean([r.get("optim/update_norm") for r in steps]),
        "train/grad_norm_mean": _mean([r.get("train/grad_norm") for r in steps]),
    }
    for phase in ("rollout", "reward", "update"):
        res[f"perf/{phase}_s_mean"] = ph.seconds.get(phase, 0.0) / n_steps
    res["perf/step_s_mean"] = _mean([r.get("perf/step_s") for r in steps])
    res["perf/eval_s"] = ph.seconds.get("eval", 0.0)
    res["perf/sparsity_s"] = ph.seconds.get("sparsity", 0.0)
    res["perf/rollout_tokens_per_s"] = _mean([r.get("perf/rollout_tokens_per_s") for r in steps])
    res.update(sparsity)
    return res


def _log_tables(logger, trainer) -> None:
    rows = [[s["step"], "train" if s.get("train") else "eval", q, a, c, r]
            for s in trainer.history["samples"] for (q, a, c, r) in s["rows"]]
    if rows:
        logger.table("samples/completions", ["step", "split", "question", "answer", "completion", "reward"], rows)


def summary_lines(result: dict) -> list[str]:
    """The short summary printed at the end of a run."""
    if result.get("status") != "ok":
        return [f"trial FAILED: {result.get('error')}"]

    def gb(x):
        return "n/a" if x is None else f"{x / 1e9:.3f} GB"

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.4g}%"

    return [
        f"accuracy (greedy, held out): {result['eval/accuracy_initial']:.3f} -> {result['eval/accuracy_final']:.3f}"
        f" (best {result['eval/accuracy_best']:.3f})",
        f"mean reward per step: first {result['train/reward_curve'][0]:.3f}, last {result['train/reward_curve'][-1]:.3f}",
        f"optimizer state: {gb(result['mem/optimizer_state_bytes'])}   params: {gb(result['mem/param_bytes'])}"
        f"   peak memory ({result['mem/peak_kind']}): {gb(result['mem/peak_bytes'])}",
        f"weights changed: {pct(result['sparsity/changed_fraction_bf16'])} in bf16, "
        f"{pct(result['sparsity/changed_fraction_fp32'])} in fp32, {pct(result['sparsity/changed_fraction_tol1e-5'])} by more than 1e-5",
        f"time: {result['perf/step_s_mean']:.2f} s/step, {result['perf/total_s']:.1f} s total",
    ]
