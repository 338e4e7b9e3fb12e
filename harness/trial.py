"""One trial: build model, task, optimizer and rollout from config, train, measure, write results.

    python -m harness model=tiny trainer.steps=2                            # one process
    torchrun --nproc-per-node 2 -m harness model=tiny distributed=fsdp2     # one trial over 2 ranks

Writes into `out_dir`: metrics.jsonl (a line per step, as it goes) and result.json (atomically, at
the end, with status "ok" or "failed" and the reason). A failure after validation never raises out
of `run_trial`: it is recorded, so a sweep goes on. In a distributed trial only the main rank writes
files and W&B; a failure on any rank ends the trial with that rank's reason.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import hydra.utils
import torch

from harness import checkpoint as ckpt_files
from harness.allocator import retain_freed_memory
from harness.distributed.failure import SigtermHold, kill_for_test
from harness.errors import ConfigError
from harness.measure.diagnostics import Diagnostics
from harness.distributed.reduce import local_tensor
from harness.measure.memory import param_bytes
from harness.measure.sparsity import bf16_grid_counts
from harness.optim import build_optimizer
from harness.parallel import setup as setup_parallel
from harness.provenance import provenance, trial_info
from harness.results import MetricsFile, atomic_write_json
from harness.rollout import build_rollout
from harness.signals import on_signal, requeue
from harness.summary import summarise
from harness.trainer import Preempted, Trainer
from harness.validate import validate


def run_trial(cfg: Any, out_dir: str | os.PathLike, choices: Optional[dict] = None,
              overrides: Optional[list[str]] = None, group: Optional[str] = None,
              progress: bool = True) -> dict:
    """Validate (raises ConfigError before any work), then run; returns the result dict."""
    device = validate(cfg)
    info = trial_info(cfg, choices or {}, overrides or [])
    from harness.prune import Pruning, Stopped, stopped_curves
    from harness.tasks import build_task
    from harness.tasks.verify import SafeVerifier

    try:
        task = build_task(cfg.task, cfg.seed)  # reads task files: bad data is a config error
    except ValueError as e:
        raise ConfigError(str(e)) from None
    par = setup_parallel(cfg.distributed, device, model_cfg=cfg.model)
    dist = par.dist
    out = Path(dist.agree(str(Path(out_dir).resolve())))  # rank 0 decides the trial folder
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    t_start = time.perf_counter()
    result: dict = {"status": "failed", "error": None, "trial": info}
    checkpoint = par.checkpoint(out)
    resume_step = dist.agree(ckpt_files.saved_step(out))
    metrics = MetricsFile(out / "metrics.jsonl", keep_through_step=resume_step) if dist.is_main else None
    logger = trainer = rollout = pruning = None
    preempted = False
    hold = SigtermHold()  # torchrun's SIGTERM to the survivors of a failed rank waits until the result is written
    try:
        pruning = Pruning(cfg.prune, str(cfg.objective), out, overrides or [], dist)  # divergence; the sweeper's rule
        from harness.loggers import NoLogger, build_logger
        from harness.models import load_model, load_tokenizer, resolve_model_dir
        from harness.models.safetensors_files import SafetensorsFiles

        torch.manual_seed(cfg.seed)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        retain_freed_memory(bool(cfg.malloc_retain))
        result["provenance"] = provenance(cfg, par.device)
        if dist.is_main:
            logger = build_logger(cfg.logger, out, info["name"], result["provenance"]["config"], group,
                                  tags=[info["optimizer"], str(info["model"])], job_type=info["optimizer"])
        else:
            logger = NoLogger()
        result["wandb_run_id"] = logger.run_id
        t0 = time.perf_counter()
        cache = hydra.utils.to_absolute_path(cfg.cache_dir)
        if dist.is_main:  # builds and caches the model folder (transformers saves on rank 0 only)
            model_dir = resolve_model_dir(cfg.model, cache)
        dist.barrier()
        if not dist.is_main:
            model_dir = resolve_model_dir(cfg.model, cache)
        tokenizer = load_tokenizer(model_dir, cfg.model)
        model = par.wrap(load_model(cfg.model, model_dir, par.device))
        model.train()
        on_grid, numel = dist.all_reduce_sum(list(bf16_grid_counts([local_tensor(p) for p in model.parameters()])))
        result["params/initial_bf16_grid_fraction"] = on_grid / max(1, numel)  # 1.0 for a checkpoint published in bf16
        optimizer = build_optimizer(cfg.optimizer, model)
        compute_dtype = getattr(torch, cfg.model.dtype)
        rollout = build_rollout(cfg.rollout, model=model, tokenizer=tokenizer, model_dir=model_dir,
                                compute_dtype=compute_dtype, seed=cfg.seed, device=par.device)
        setup_s = time.perf_counter() - t0

        def log(m: dict, step: int) -> None:
            if metrics is not None:
                metrics.write({"step": step, **m} if "step" not in m else m)
            logger.log(m, step)

        from harness.objectives import build_objective

        trainer = Trainer(
            cfg.trainer, objective=build_objective(cfg.trainer), model=model, tokenizer=tokenizer, task=task,
            rollout=rollout, optimizer=optimizer,
            verifier=SafeVerifier(task.verifier, cfg.task.verify_timeout_s), compute_dtype=compute_dtype,
            device=par.device, diagnostics=Diagnostics(list(cfg.trainer.diagnostics), cfg.trainer.diagnostics_chunk_numel,
                                                          cfg.trainer.diagnostics_block_numel),
            log=log, seed=cfg.seed, shared_prefix=not cfg.model.gradient_checkpointing, checkpoint=checkpoint,
            dist=dist, reference=par.reference, generation=par.generation,
            # a separate (sharded) reference model is its own baseline: no files then
            initial_files=SafetensorsFiles.find(model_dir)
            if cfg.trainer.initial_weights == "checkpoint" and par.reference is None else None)
        if resume_step is not None:
            checkpoint.load(trainer)
            trainer.sync()  # the engine started from the initial weights
            result["resumed_from_step"] = resume_step
            print(f"[harness] {out}: resumed from the checkpoint at step {resume_step}", file=sys.stderr)
        on_signal(signal.SIGUSR2, lambda: setattr(trainer, "preempt_requested", True))
        kill_for_test(optimizer, dist.rank, lambda: trainer.step + 1)  # test-only, HARNESS_TEST_SIGKILL=RANK:STEP
        pruning.start(trainer.step, save=lambda: checkpoint.save(trainer))  # paused at a rung: its decision now
        bar = _progress_bar(cfg.trainer.steps, info["name"]) if progress and dist.is_main else None
        if bar is not None:
            bar.update(trainer.step)

        def on_step(step: int, m: dict) -> None:
            if bar is not None:
                shown = {name: f"{m[k]:.2f}" for k, name in (("train/reward_mean", "reward"), ("train/loss", "loss")) if k in m}
                bar.set_postfix(**shown, acc=m.get("eval/val_accuracy", ""), refresh=False)
                bar.update(1)
            pruning.after_step(step, m)  # at an evaluation: may raise Pruned or Paused

        try:
            trainer.train(on_step)
        finally:
            if bar is not None:
                bar.close()
        with trainer.phases.phase("sparsity"):
            sparsity = par.final_sparsity(trainer.initial, model, cfg.trainer.rank_energy,
                                         cfg.trainer.diagnostics_block_numel)
        params_total = int(dist.all_reduce_sum([float(param_bytes(model))])[0])
        result.update(summarise(trainer, model, optimizer, sparsity, params_total, trainer.optimizer_state_bytes()))
        result.update(par.memory_report(trainer))
        result["perf/setup_s"] = setup_s
        result["status"] = "ok"
        if dist.is_main:
            _log_tables(logger, trainer)
    except Preempted:
        preempted = True  # checkpoint saved: no result; the requeued job resumes
    except Stopped as e:  # pruned at an evaluation (or paused there until its rung is decided): not a failure
        result.update(e.result(), **(stopped_curves(trainer.history) if trainer is not None else {}))
    except Exception as e:  # noqa: BLE001 - a failed trial is recorded, never kills the sweep
        hold.failed()  # from here: a SIGTERM cannot cut the reason short, and is dropped once it is written
        result["status"] = "failed"
        result["error"] = par.failure_reason(e, out, step=None if trainer is None else trainer.step + 1)
        if dist.is_main:
            (out / "error.txt").write_text(traceback.format_exc())
    finally:
        with hold:  # held from here (or from the failure) until the result is written and the trial cleaned up
            result["perf/total_s"] = time.perf_counter() - t_start
            if trainer is not None:
                result.setdefault("train/steps_done", trainer.step)
                result.setdefault("train/steps_skipped", trainer.skipped)
            if metrics is not None:
                _quietly(metrics.close)
            if not preempted and dist.is_main:  # before the slower cleanup below
                atomic_write_json(out / "result.json", result)
            if pruning is not None and not preempted:
                _quietly(lambda: pruning.finish(result))
            if trainer is not None:
                _quietly(trainer.close)
            if rollout is not None:
                _quietly(rollout.close)
            if preempted or result["status"] == "paused":  # resumed later: W&B run and checkpoint kept
                if logger is not None:
                    logger.preempted()
            elif dist.is_main:
                if logger is not None:
                    logger.finish({k: v for k, v in result.items()
                                   if not isinstance(v, (dict, list)) or k.startswith(("eval/", "train/", "trial"))},
                                  failed=result["status"] == "failed")
                if not cfg.trainer.keep_checkpoint:
                    ckpt_files.remove(out)
            par.close()
    if preempted:
        requeue(signal.SIGUSR2)
    return result


def _quietly(close: Callable[[], Any]) -> None:
    """Run one cleanup step; an error in it is printed and the rest of the cleanup goes on."""
    try:
        close()
    except Exception as e:  # noqa: BLE001 - the trial is ending: its result is already written
        print(f"[harness] cleanup: {type(e).__name__}: {e}".splitlines()[0][:300], file=sys.stderr)


def _progress_bar(total: int, name: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=name, unit="step", dynamic_ncols=True, file=sys.stderr)


def _log_tables(logger, trainer) -> None:
    rows = [[s["step"], s["split"], q, a, c, r] for s in trainer.history["samples"] for (q, a, c, r) in s["rows"]]
    if rows:
        logger.table("samples/completions", ["step", "split", "question", "answer", "completion", "reward"], rows)
