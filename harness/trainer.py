"""The one RLVR trainer: GRPO with a verifiable reward, for any model, task, optimizer and backend.

Each step: rollout (G sampled completions for each of P prompts) -> score (the task's verifier,
in a separate process with a time limit) -> update (group-normalised advantages, clipped policy
loss + KL to the initial policy, one optimizer step) -> sync the rollout engine -> eval every N.

How it departs from the paper's GRPO (verl 0.5), and why:
- One optimizer update per step on the whole batch (the paper's setting), so the "old" policy is
  the current one: old log-probs are the current log-probs detached (ratio = 1, the clip never
  binds) instead of a second forward pass that would give the same numbers.
- The reference policy is the initial weights, kept once in memory; they also serve as the
  baseline of the update-sparsity measurement. While no optimizer step has been applied the
  reference log-probs equal the policy's and the reference forward is skipped (KL = 0 exactly).
- Each prompt's forward runs once per group and its KV cache is shared by the G completions
  (harness.algo.logprobs); logits are computed only where a completion token is predicted.
- A step whose loss or grad norm is not finite is skipped and counted (as verl does). The trial
  fails with the reason if every step is skipped, if trainer.max_consecutive_skips steps in a row
  are skipped after an update (the run diverged), or if the weights become non-finite.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from harness.algo.grpo import KL_ESTIMATORS, aggregate, clipped_policy_loss, group_advantages
from harness.algo.logprobs import GroupBatch, completion_logprobs
from harness.measure.memory import PhaseTracker, grad_bytes, optimizer_state_bytes
from harness.measure.optim_diag import momentum_grad_cosine, second_moment_stats, update_norm
from harness.rollout.base import Rollout, Sampling
from harness.tasks.base import Problem, Task
from harness.tasks.verify import SafeVerifier


class TrialFailed(RuntimeError):
    """The trial cannot go on (all steps skipped, weights non-finite): recorded as status=failed."""


class Preempted(BaseException):
    """A pre-timeout / preemption signal arrived: a checkpoint was saved, the job should requeue.
    A BaseException, so no `except Exception` records it as a failure."""


@dataclass
class StepBatch:
    problems: list[Problem]
    batch: GroupBatch
    texts: list[str]  # decoded completions, prompt-major
    finished: list[bool]


class GRPOTrainer:
    def __init__(self, cfg: Any, model: torch.nn.Module, tokenizer: Any, task: Task, rollout: Rollout,
                 optimizer: torch.optim.Optimizer, device: torch.device,
                 log: Callable[[dict, int], None], seed: int, checkpoint_path: Optional[Path] = None):
        self.cfg, self.t = cfg, cfg.trainer
        self.model, self.tok, self.task, self.rollout, self.opt = model, tokenizer, task, rollout, optimizer
        self.device, self.log, self.seed = device, log, seed
        self.compute_dtype = getattr(torch, cfg.model.dtype)
        self.pad_id = tokenizer.pad_token_id
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.shared_prefix = not cfg.model.gradient_checkpointing
        self.verifier = SafeVerifier(task.verifier, cfg.task.verify_timeout_s)
        self.phases = PhaseTracker(device)
        # the initial weights: the KL reference and the sparsity baseline (one copy for both)
        self.initial = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.kl_fn = KL_ESTIMATORS[self.t.kl_estimator]
        self.step = 0
        self.updates_applied = 0
        self.skipped = 0
        self.consecutive_skips = 0
        self.history: dict[str, list] = {"reward": [], "eval": [], "samples": []}
        self.max_grad_bytes = 0
        self.verify_errors = self.verify_timeouts = 0
        self._prompt_cache: dict[str, list[int]] = {}
        self.checkpoint_path = checkpoint_path
        self.preempt_requested = False  # set by a signal handler; honoured between steps

    # ---------------------------------------------------------------- helpers
    def autocast(self):
        if self.compute_dtype == self.params[0].dtype:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.compute_dtype)

    def encode(self, problem: Problem) -> list[int]:
        key = problem.question
        if key not in self._prompt_cache:
            ids = self.tok.apply_chat_template(self.task.messages(problem), add_generation_prompt=True,
                                               tokenize=True)
            ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
            self._prompt_cache[key] = ids[-self.t.max_prompt_tokens:]
        return self._prompt_cache[key]

    def step_problems(self, step: int) -> list[Problem]:
        """The P prompts of a step: epochs over a seeded shuffle of the train split (resumable)."""
        n, P = len(self.task.train), self.t.prompts_per_step
        out = []
        for k in range(step * P, (step + 1) * P):
            epoch, i = divmod(k, n)
            order = list(range(n))
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
            out.append(self.task.train[order[i]])
        return out

    # ---------------------------------------------------------------- the steps
    def rollout_step(self, step: int) -> StepBatch:
        problems = self.step_problems(step)
        prompts = [self.encode(p) for p in problems]
        sampling = Sampling(n=self.t.group_size, max_new_tokens=self.t.max_new_tokens,
                            temperature=self.t.temperature, top_p=self.t.top_p,
                            seed=self.seed * 1_000_003 + step)
        gens = self.rollout.generate(prompts, sampling)
        flat = [g for group in gens for g in group]
        completions = [g.completion_ids or [self.tok.eos_token_id] for g in flat]
        texts = self.tok.batch_decode(completions, skip_special_tokens=True)
        return StepBatch(problems, GroupBatch(prompts, completions, self.t.group_size), texts,
                         [g.finished for g in flat])

    def score(self, sb: StepBatch) -> torch.Tensor:
        answers = [p.answer for p in sb.problems for _ in range(self.t.group_size)]
        scores, stats = self.verifier(sb.texts, answers)
        self.verify_errors += stats.errors
        self.verify_timeouts += stats.timeouts
        self._last_verify = stats
        return torch.tensor(scores, dtype=torch.float32)  # [B]

    def _ref_logprobs(self, batch: GroupBatch) -> torch.Tensor:
        with torch.no_grad(), self.autocast():
            wrapper = _LogprobModule(self.model, self.pad_id, self.shared_prefix)
            params = {f"model.{n}": p for n, p in self.initial.items()}
            return torch.func.functional_call(wrapper, params, (batch,), tie_weights=True).float()

    def update(self, sb: StepBatch, rewards: torch.Tensor) -> dict[str, float]:
        G, t = self.t.group_size, self.t
        adv = group_advantages(rewards, G, t.norm_adv_by_std)  # [B]
        total_tokens, num_seqs = sb.batch.num_tokens, len(sb.batch.completions)
        # micro-batches of whole groups, sorted by length so padding is small
        groups_per_mb = max(1, t.micro_batch_size // G)
        order = sorted(range(len(sb.batch.prompts)),
                       key=lambda k: len(sb.batch.prompts[k]) + max(len(c) for c in sb.batch.completions[k * G:(k + 1) * G]))
        sums = {"pg": 0.0, "kl": 0.0, "clip": 0.0, "loss": 0.0}
        finite = True
        for s in range(0, len(order), groups_per_mb):
            ks = order[s:s + groups_per_mb]
            seqs = [k * G + g for k in ks for g in range(G)]
            mb = GroupBatch([sb.batch.prompts[k] for k in ks], [sb.batch.completions[i] for i in seqs], G)
            seq_ids = mb.seq_index().to(self.device)  # [N] index within the micro-batch
            global_ids = torch.tensor(seqs, device=self.device)[seq_ids]  # [N] index within the step
            with self.autocast():
                logp = completion_logprobs(self.model, mb, self.pad_id, self.shared_prefix).float()  # [N]
            if t.kl_coef > 0 and self.updates_applied > 0:
                ref_logp = self._ref_logprobs(mb)  # [N]
            else:
                ref_logp = logp.detach()  # the policy is still the reference: KL = 0 exactly
            a = adv.to(self.device)[global_ids]  # [N]
            pg, clipped = clipped_policy_loss(logp, logp.detach(), a, t.clip_ratio)  # [N], [N]
            kl = self.kl_fn(logp, ref_logp)  # [N]
            per_token = pg + t.kl_coef * kl  # [N]
            loss = aggregate(per_token, global_ids, num_seqs, t.loss_agg, total_tokens)
            if not torch.isfinite(loss):
                finite = False
                break
            loss.backward()
            sums["loss"] += loss.item()
            sums["pg"] += pg.detach().sum().item() / total_tokens
            sums["kl"] += kl.detach().sum().item() / total_tokens
            sums["clip"] += clipped.sum().item() / total_tokens
        self.max_grad_bytes = max(self.max_grad_bytes, grad_bytes(self.model))
        clip = t.grad_clip if t.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, clip).item() if finite else float("nan")
        out = {"train/loss": sums["loss"], "train/pg_loss": sums["pg"], "train/kl": sums["kl"],
               "train/clip_frac": sums["clip"], "train/grad_norm": grad_norm,
               "train/advantage_abs_mean": adv.abs().mean().item()}
        if not finite or not math.isfinite(grad_norm):
            self.opt.zero_grad(set_to_none=True)
            self.skipped += 1
            self.consecutive_skips += 1
            out["train/skipped"] = 1
            if 0 < t.max_consecutive_skips <= self.consecutive_skips and self.updates_applied > 0:
                raise TrialFailed(f"{self.consecutive_skips} steps in a row had a non-finite loss or grad norm "
                                  f"(up to step {self.step}): the run diverged, learning rate too high?")
            return out
        self.consecutive_skips = 0
        diag = self.t.diagnostics
        if diag:
            out["optim/momentum_grad_cosine"] = momentum_grad_cosine(self.opt)
            before = [p.detach().clone() for p in self.params]
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.updates_applied += 1
        out["train/skipped"] = 0
        if diag:
            out["optim/update_norm"] = update_norm(before, self.params)
            del before
            v = second_moment_stats(self.opt)
            if v is not None:
                out.update({f"optim/second_moment_{k}": x for k, x in v.items()})
        if not all(torch.isfinite(p).all() for p in self.params):
            raise TrialFailed(f"weights became non-finite after the optimizer step at step {self.step} "
                              f"(grad norm {grad_norm:.3g}): learning rate too high?")
        t_sync = time.perf_counter()
        self.rollout.sync_weights(self.model)
        out["perf/sync_s"] = time.perf_counter() - t_sync
        return out

    def evaluate(self, step: int) -> float:
        """Greedy accuracy on the held-out split."""
        t = self.t
        prompts = [self.encode(p) for p in self.task.eval]
        correct, samples = 0.0, []
        for s in range(0, len(prompts), t.eval_batch_size):
            gens = self.rollout.generate(prompts[s:s + t.eval_batch_size],
                                         Sampling(n=1, max_new_tokens=t.eval_max_new_tokens, temperature=0.0))
            texts = self.tok.batch_decode([g[0].completion_ids for g in gens], skip_special_tokens=True)
            probs = self.task.eval[s:s + t.eval_batch_size]
            scores, stats = self.verifier(texts, [p.answer for p in probs])
            correct += sum(scores)
            samples += [(p.question, p.answer, x, r) for p, x, r in zip(probs, texts, scores)]
        acc = correct / max(1, len(prompts))
        self.history["eval"].append({"step": step, "accuracy": acc})
        self.history["samples"].append({"step": step, "rows": samples[: t.log_completions]})
        return acc

    # ---------------------------------------------------------------- the loop
    def train(self, progress: Optional[Callable[[int, dict], None]] = None) -> None:
        t = self.t
        if self.step == 0 and not self.history["eval"]:
            with self.phases.phase("eval"):
                acc = self.evaluate(0)
            self.log({"eval/accuracy": acc}, 0)
        while self.step < t.steps:
            step = self.step
            t0 = time.perf_counter()
            before = dict(self.phases.seconds)
            with self.phases.phase("rollout"):
                sb = self.rollout_step(step)
            with self.phases.phase("reward"):
                rewards = self.score(sb)
            with self.phases.phase("update"):
                upd = self.update(sb, rewards)
            secs = {k: self.phases.seconds[k] - before.get(k, 0.0) for k in ("rollout", "reward", "update")}
            n_tok = sb.batch.num_tokens
            m = {"step": step + 1, "train/reward_mean": rewards.mean().item(), "train/reward_std": rewards.std().item(),
                 "train/groups_all_equal": _groups_all_equal(rewards, t.group_size),
                 "train/response_len_mean": n_tok / len(sb.texts),
                 "train/finished_frac": sum(sb.finished) / len(sb.finished),
                 "train/verify_errors": self._last_verify.errors, "train/verify_timeouts": self._last_verify.timeouts,
                 "optim/lr": self.opt.param_groups[0]["lr"],
                 "perf/rollout_s": secs["rollout"], "perf/reward_s": secs["reward"], "perf/update_s": secs["update"],
                 "perf/rollout_tokens_per_s": n_tok / max(secs["rollout"], 1e-9),
                 "perf/update_tokens_per_s": (n_tok + sum(len(p) for p in sb.batch.prompts)) / max(secs["update"], 1e-9),
                 "mem/peak_bytes_rollout": self.phases.last_peak_bytes.get("rollout"),
                 "mem/peak_bytes_update": self.phases.last_peak_bytes.get("update"),
                 "mem/optimizer_state_bytes": optimizer_state_bytes(self.opt), **upd}
            self.history["reward"].append(m["train/reward_mean"])
            if len(self.history["samples"]) < 64:
                self.history["samples"].append({"step": step, "train": True, "rows": [
                    (sb.problems[i // t.group_size].question, sb.problems[i // t.group_size].answer, sb.texts[i], rewards[i].item())
                    for i in range(min(t.log_completions, len(sb.texts)))]})
            self.step = step + 1
            if t.eval_every and self.step % t.eval_every == 0 and self.step < t.steps:
                with self.phases.phase("eval"):
                    m["eval/accuracy"] = self.evaluate(self.step)
            m["perf/step_s"] = time.perf_counter() - t0
            self.log(m, step + 1)
            if progress:
                progress(self.step, m)
            every = t.checkpoint_every
            if self.checkpoint_path is not None and (self.preempt_requested or (every and self.step % every == 0)):
                self.save_checkpoint(self.checkpoint_path)
            if self.preempt_requested:
                raise Preempted(f"checkpoint saved at step {self.step}")
        if self.updates_applied == 0:
            raise TrialFailed(f"every step was skipped ({self.skipped} of {t.steps}): the loss or grad norm was not finite")
        with self.phases.phase("eval"):
            acc = self.evaluate(self.step)
        self.log({"eval/accuracy": acc}, self.step)

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        import numpy as np

        return {
            "step": self.step, "updates_applied": self.updates_applied, "skipped": self.skipped,
            "consecutive_skips": self.consecutive_skips, "history": self.history,
            "max_grad_bytes": self.max_grad_bytes, "verify_errors": self.verify_errors,
            "verify_timeouts": self.verify_timeouts,
            "model": {n: p.detach().cpu() for n, p in self.model.named_parameters()},
            "optimizer": self.opt.state_dict(),
            "phases": {"seconds": self.phases.seconds, "calls": self.phases.calls, "peak_bytes": self.phases.peak_bytes},
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
        }

    def load_state_dict(self, sd: dict) -> None:
        import numpy as np

        with torch.no_grad():
            params = dict(self.model.named_parameters())
            for n, v in sd["model"].items():
                params[n].copy_(v)
        self.opt.load_state_dict(sd["optimizer"])
        for k in ("step", "updates_applied", "skipped", "consecutive_skips", "history", "max_grad_bytes",
                  "verify_errors", "verify_timeouts"):
            setattr(self, k, sd[k])
        self.phases.seconds.update(sd["phases"]["seconds"])
        self.phases.calls.update(sd["phases"]["calls"])
        self.phases.peak_bytes.update(sd["phases"]["peak_bytes"])
        torch.set_rng_state(sd["rng"]["torch"])
        random.setstate(sd["rng"]["python"])
        np.random.set_state(sd["rng"]["numpy"])
        if sd["rng"]["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(sd["rng"]["cuda"])
        self.rollout.sync_weights(self.model)  # the engine started from the initial weights

    def save_checkpoint(self, path: Path) -> None:
        """Atomic: a job killed while saving leaves the previous checkpoint intact. The sidecar
        checkpoint.json (written last) tells a restarted job the step without loading the weights."""
        from harness.results import atomic_write_json

        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)
        atomic_write_json(path.with_suffix(".json"), {"step": self.step, "file": path.name})

    def load_checkpoint(self, path: Path) -> None:
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=False))

    def close(self) -> None:
        self.verifier.close()


class _LogprobModule(torch.nn.Module):
    """Wraps the policy so torch.func.functional_call can run it with the reference weights."""

    def __init__(self, model: torch.nn.Module, pad_id: int, shared_prefix: bool):
        super().__init__()
        self.model, self.pad_id, self.shared_prefix = model, pad_id, shared_prefix

    def forward(self, batch: GroupBatch) -> torch.Tensor:
        return completion_logprobs(self.model, batch, self.pad_id, self.shared_prefix)


def _groups_all_equal(rewards: torch.Tensor, G: int) -> float:
    """Share of groups whose rewards are all equal (zero advantage: no policy gradient)."""
    r = rewards.view(-1, G)
    return (r.max(dim=1).values == r.min(dim=1).values).float().mean().item()
