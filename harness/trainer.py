"""The one training loop, for any objective, model, task, optimizer and backend.

Each step: the objective makes the step's batch (harness.objectives: for GRPO and RLOO, G sampled
completions for each of P prompts scored by the task's verifier, in a separate process with a time
limit; for SFT, the reference answers) -> update (the objective's per-token loss over micro-batches,
one optimizer step observed by the diagnostics) -> sync the rollout engine's weights -> evaluate
on the validation split every N steps -> checkpoint.

The trainer gets its own config node (`trainer`) and what it needs, built by harness.trial: the
objective, model, tokenizer, task, rollout, optimizer, verifier, compute dtype, diagnostics and, in a
distributed trial, the process group (`dist`). With `dist`, each rank takes its share of the
step's prompts (a prompt's group never spans two ranks), the loss is normalised by the global
token count, and every logged number is global.

How it departs from the paper's GRPO (verl 0.5), and why:
- One optimizer update per step on the whole batch (the paper's setting), so the "old" policy is
  the current one: old log-probs are the current log-probs detached (ratio = 1, the clip never
  binds) instead of a second forward pass that would give the same numbers.
- The reference policy is the initial weights, kept once (harness.reference: by default left in the
  checkpoint the model was loaded from and read back when needed); they also serve as the baseline
  of the update-sparsity measurement. The reference log-probs of all micro-batches are computed
  before the policy's forwards, so the reference weights made ready for them are gone before the
  gradients exist. While no optimizer step has been applied the reference log-probs equal the
  policy's and the reference forward is skipped (KL = 0 exactly).
- Each prompt's forward runs once per group and its KV cache is shared by the G completions
  (harness.algo.logprobs); logits are computed only where a completion token is predicted.
- Sampling is seeded per prompt (trial seed, step, the prompt's position in the data stream), so
  a trial's samples depend neither on the world size nor on the batching.
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
from typing import Any, Callable, Optional

import torch

from harness.algo.grpo import aggregate
from harness.algo.logprobs import GroupBatch, completion_logprobs
from harness.distributed.reduce import local_tensor as _local
from harness.measure.diagnostics import Diagnostics, StepContext
from harness.measure.memory import PhaseTracker, grad_bytes, optimizer_state_bytes
from harness.parallel import OneProcess
from harness.reference import InitialWeights
from harness.objectives.base import StepBatch
from harness.rollout.base import Rollout, Sampling
from harness.tasks.base import Problem, Task
from harness.tasks.verify import SafeVerifier


class TrialFailed(RuntimeError):
    """The trial cannot go on (all steps skipped, weights non-finite): recorded as status=failed."""


class Preempted(BaseException):
    """A pre-timeout / preemption signal arrived: a checkpoint was saved, the job should requeue.
    A BaseException, so no `except Exception` records it as a failure."""


class Trainer:
    def __init__(self, t: Any, *, objective: Any, model: torch.nn.Module, tokenizer: Any, task: Task, rollout: Rollout,
                 optimizer: torch.optim.Optimizer, verifier: SafeVerifier, compute_dtype: torch.dtype,
                 device: torch.device, diagnostics: Diagnostics, log: Callable[[dict, int], None], seed: int,
                 shared_prefix: bool = True, checkpoint: Optional[Any] = None, dist: Optional[Any] = None,
                 reference: Optional[torch.nn.Module] = None, generation: Optional[Callable[[Any], Any]] = None,
                 initial_files: Optional[Any] = None):
        self.t, self.objective = t, objective  # harness.objectives: the step's batch and its loss
        self.model, self.tok, self.task, self.rollout, self.opt = model, tokenizer, task, rollout, optimizer
        self.verifier, self.compute_dtype, self.device = verifier, compute_dtype, device
        self.diagnostics, self.log, self.seed, self.shared_prefix = diagnostics, log, seed, shared_prefix
        self.checkpoint = checkpoint  # harness.checkpoint: save/load of this trainer's state
        self.dist = dist or OneProcess()
        self.pad_id = tokenizer.pad_token_id
        self.named_params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in self.named_params]
        self.phases = PhaseTracker(device)
        # the initial weights: the KL reference and the sparsity baseline, one copy for both (a separate
        # sharded reference model under FSDP2, whose local shards are then the baseline)
        self.reference = reference
        self.initial = InitialWeights(reference or model, compute_dtype, copy=reference is None, files=initial_files)
        self.generation = generation or (lambda model: contextlib.nullcontext())
        self.reference_bytes = int(self.dist.all_reduce_sum([float(self.initial.nbytes)])[0])
        self.step = 0
        self.updates_applied = 0
        self.skipped = 0
        self.consecutive_skips = 0
        self.history: dict[str, Any] = {"steps": [], "val": [], "test": [], "samples": [], "val_correct_final": None}
        self.max_grad_bytes = 0
        self.verify_errors = self.verify_timeouts = 0
        self._prompt_cache: dict[str, list[int]] = {}
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

    def step_problems(self, step: int) -> list[tuple[int, Problem]]:
        """This rank's share of the step's P prompts, with each prompt's position in the data stream:
        epochs over a seeded shuffle of the train split (resumable)."""
        n, P = len(self.task.train), self.t.prompts_per_step
        per_rank = P // self.dist.world_size
        first = step * P + self.dist.rank * per_rank
        out = []
        for k in range(first, first + per_rank):
            epoch, i = divmod(k, n)
            order = list(range(n))
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
            out.append((k, self.task.train[order[i]]))
        return out

    def _shard(self, items: list) -> list:
        """This rank's contiguous share of `items` (eval problems)."""
        W, r = self.dist.world_size, self.dist.rank
        per = -(-len(items) // W)
        return items[r * per:(r + 1) * per]

    # ---------------------------------------------------------------- the steps
    def _ref_logprobs(self, batches: list[GroupBatch]) -> list[torch.Tensor]:
        """The reference policy's log-probs of every micro-batch ([N] each), before any policy forward:
        the initial weights are made ready for the forward once (read back from the checkpoint, linear
        weights in the compute dtype) and freed before the gradients exist."""
        with torch.no_grad(), self.autocast():
            if self.reference is not None:
                return [completion_logprobs(self.reference, b, self.pad_id, self.shared_prefix).float()
                        for b in batches]
            wrapper = _LogprobModule(self.model, self.pad_id, self.shared_prefix)
            params = {f"model.{n}": p for n, p in self.initial.for_forward().items()}
            return [torch.func.functional_call(wrapper, params, (b,), tie_weights=True).float() for b in batches]

    def update(self, sb: StepBatch) -> dict[str, Any]:
        """Loss and gradients over micro-batches, then one optimizer step observed by the diagnostics."""
        t, obj = self.t, self.objective
        G = sb.batch.group_size
        state = obj.loss_state(self, sb)  # e.g. the advantages [B]
        # the normalisers are global: every rank's loss is a share of the whole step's loss
        total_tokens, num_seqs = (int(x) for x in self.dist.all_reduce_sum(
            [float(sb.batch.num_tokens), float(len(sb.batch.completions))]))
        # micro-batches of whole groups, sorted by length so padding is small
        groups_per_mb = max(1, t.micro_batch_size // G)
        order = sorted(range(len(sb.batch.prompts)),
                       key=lambda k: len(sb.batch.prompts[k]) + max(len(c) for c in sb.batch.completions[k * G:(k + 1) * G]))
        sums: dict[str, float] = {"train/loss": 0.0}
        finite = 1.0
        offset = self._seq_offset(len(sb.batch.completions))
        mbs = []  # (micro-batch, the step's sequence index of each of its sequences)
        for s in range(0, len(order), groups_per_mb):
            ks = order[s:s + groups_per_mb]
            seqs = [k * G + g for k in ks for g in range(G)]
            mbs.append((GroupBatch([sb.batch.prompts[k] for k in ks], [sb.batch.completions[i] for i in seqs], G), seqs))
        # while no update has been applied the policy is the reference: KL = 0 exactly, no forward
        refs = self._ref_logprobs([mb for mb, _ in mbs]) if obj.uses_reference(t) and self.updates_applied > 0 else None
        for j, (mb, seqs) in enumerate(mbs):
            seq_ids = mb.seq_index().to(self.device)  # [N] index within the micro-batch
            local_ids = torch.tensor(seqs, device=self.device)[seq_ids]  # [N] index within this rank's step
            with self.autocast():
                logp = completion_logprobs(self.model, mb, self.pad_id, self.shared_prefix).float()  # [N]
            ref_logp = refs[j] if refs is not None else logp.detach()  # [N]
            per_token, parts = obj.loss(t, logp, ref_logp, local_ids, state)  # [N], {name: [N]}
            loss = aggregate(per_token, local_ids + offset, num_seqs, t.loss_agg, total_tokens)
            if not torch.isfinite(loss):
                finite = 0.0  # the step is skipped below; backward still runs, so every rank's collectives line up
            loss.backward()
            sums["train/loss"] += loss.item()
            for name, part in parts.items():  # token means over the step
                sums[name] = sums.get(name, 0.0) + part.detach().sum().item() / total_tokens
        *totals, finite_all = self.dist.all_reduce_sum([*sums.values(), finite])
        finite_all = finite_all == self.dist.world_size
        self.max_grad_bytes = max(self.max_grad_bytes, int(self.dist.all_reduce_sum([float(grad_bytes(self.model))])[0]))
        clip = t.grad_clip if t.grad_clip > 0 else float("inf")
        grad_norm = _clip_grad_norm(self.params, clip) if finite_all else float("nan")
        out: dict[str, Any] = {**dict(zip(sums, totals)), "train/grad_norm": grad_norm,
                               **obj.update_metrics(self, state, num_seqs)}
        if not finite_all or not math.isfinite(grad_norm):
            self.opt.zero_grad(set_to_none=True)
            self.skipped += 1
            self.consecutive_skips += 1
            out["train/skipped"] = 1
            if 0 < t.max_consecutive_skips <= self.consecutive_skips and self.updates_applied > 0:
                raise TrialFailed(f"{self.consecutive_skips} steps in a row had a non-finite loss or grad norm "
                                  f"(up to step {self.step}): the run diverged, learning rate too high?")
            return out
        self.consecutive_skips = 0
        ctx = StepContext(self.opt, self.initial, self.dist.all_reduce_sum, self.dist.all_gather_object)
        out.update(self.diagnostics.step(ctx, self.named_params))
        self.opt.zero_grad(set_to_none=True)
        self.updates_applied += 1
        out["train/skipped"] = 0
        bad = float(sum(not bool(torch.isfinite(_local(p)).all()) for p in self.params))
        if self.dist.all_reduce_sum([bad])[0]:
            raise TrialFailed(f"weights became non-finite after the optimizer step at step {self.step} "
                              f"(grad norm {grad_norm:.3g}): learning rate too high?")
        return out

    def _seq_offset(self, local_seqs: int) -> int:
        """Index of this rank's first sequence in the step (ranks hold equal shares)."""
        return self.dist.rank * local_seqs

    def sync(self) -> float:
        """Load the updated weights into the rollout engine; returns the seconds it took."""
        t0 = time.perf_counter()
        self.rollout.sync_weights(self.model)
        return time.perf_counter() - t0

    def evaluate(self, problems: list[Problem]) -> tuple[float, list[float], list]:
        """Greedy accuracy on `problems` (split over the ranks), the per-problem scores in order, and samples."""
        t = self.t
        mine = self._shard(problems)
        prompts = [self.encode(p) for p in mine]
        scores_all: list[float] = []
        samples = []
        for s in range(0, len(prompts), t.eval_batch_size):
            with self.generation(self.model):
                gens = self.rollout.generate(prompts[s:s + t.eval_batch_size],
                                             Sampling(n=1, max_new_tokens=t.eval_max_new_tokens, temperature=0.0))
            texts = self.tok.batch_decode([g[0].completion_ids for g in gens], skip_special_tokens=True)
            probs = mine[s:s + t.eval_batch_size]
            scores, _ = self.verifier(texts, [p.answer for p in probs])
            scores_all += scores
            samples += [(p.question, p.answer, x, r) for p, x, r in zip(probs, texts, scores)]
        scores_all = [x for part in self.dist.all_gather_object(scores_all) for x in part]
        return sum(scores_all) / max(1, len(scores_all)), scores_all, samples[: t.log_completions]

    def evaluate_val(self, step: int) -> float:
        acc, correct, samples = self.evaluate(self.task.val)
        self.history["val"].append({"step": step, "accuracy": acc})
        self.history["val_correct_final"] = correct
        self.history["samples"].append({"step": step, "split": "val", "rows": samples})
        return acc

    def evaluate_test(self, step: int) -> float:
        acc, correct, samples = self.evaluate(self.task.eval)
        self.history["test"].append({"step": step, "accuracy": acc, "correct": correct})
        self.history["samples"].append({"step": step, "split": "test", "rows": samples})
        return acc

    # ---------------------------------------------------------------- the loop
    def train(self, progress: Optional[Callable[[int, dict], None]] = None) -> None:
        t = self.t
        if self.step == 0 and not self.history["val"]:
            with self.phases.phase("eval"):
                val, test = self.evaluate_val(0), self.evaluate_test(0)
            self.log({"eval/val_accuracy": val, "eval/test_accuracy": test}, 0)
        while self.step < t.steps:
            step = self.step
            _injected_fault(self.dist.rank, step + 1)
            t0 = time.perf_counter()
            before = dict(self.phases.seconds)
            sb = self.objective.batch(self, step)  # times its own phases (rollout, reward; batch)
            with self.phases.phase("update"):
                upd = self.update(sb)
            if not upd["train/skipped"]:
                with self.phases.phase("sync"):
                    upd["perf/sync_s"] = self.sync()
            secs = {k: self.phases.seconds.get(k, 0.0) - before.get(k, 0.0) for k in self.phases.seconds}
            m = {"step": step + 1, **self._step_metrics(sb, secs), **upd}
            self.history["steps"].append(m)
            if len(self.history["samples"]) < 64:
                self.history["samples"].append({"step": step, "split": "train",
                                                "rows": self.objective.sample_rows(sb, t.log_completions)})
            self.step = step + 1
            if t.eval_every and self.step % t.eval_every == 0 and self.step < t.steps:
                with self.phases.phase("eval"):
                    m["eval/val_accuracy"] = self.evaluate_val(self.step)
            m["perf/step_s"] = time.perf_counter() - t0
            self.log(m, step + 1)
            if progress:
                progress(self.step, m)
            every = t.checkpoint_every
            # every rank stops at the same step, whichever of them the signal reached first
            self.preempt_requested = self.dist.all_reduce_sum([float(self.preempt_requested)])[0] > 0
            if self.checkpoint is not None and (self.preempt_requested or (every and self.step % every == 0)):
                self.checkpoint.save(self)
            if self.preempt_requested:
                raise Preempted(f"checkpoint saved at step {self.step}")
        if self.updates_applied == 0:
            raise TrialFailed(f"every step was skipped ({self.skipped} of {t.steps}): the loss or grad norm was not finite")
        with self.phases.phase("eval"):
            val, test = self.evaluate_val(self.step), self.evaluate_test(self.step)
        self.log({"eval/val_accuracy": val, "eval/test_accuracy": test}, self.step)

    def _step_metrics(self, sb: StepBatch, secs: dict[str, float]) -> dict[str, Any]:
        """The objective's own per-step metrics, then those every objective has (global numbers)."""
        m = self.objective.step_metrics(self, sb, secs)
        n_tok, n_prompt_tok = sb.batch.num_tokens, sum(len(p) for p in sb.batch.prompts)
        n, tok, ptok = self.dist.all_reduce_sum([float(len(sb.batch.completions)), float(n_tok), float(n_prompt_tok)])
        update_s = secs.get("update", 0.0)
        return {**m, "train/response_len_mean": tok / n, "optim/lr": self.opt.param_groups[0]["lr"],
                "perf/update_s": update_s, "perf/update_tokens_per_s": (tok + ptok) / max(update_s, 1e-9),
                "mem/peak_bytes_update": self.phases.last_peak_bytes.get("update"),
                "mem/optimizer_state_bytes": self.optimizer_state_bytes()}

    def optimizer_state_bytes(self) -> int:
        """The optimizer's state bytes summed over the ranks, replicated scalars (step counters) once."""
        own = optimizer_state_bytes(self.opt, replicated=self.dist.is_main)
        return int(self.dist.all_reduce_sum([float(own)])[0])

    # ---------------------------------------------------------------- state (for checkpoints)
    COUNTERS = ("step", "updates_applied", "skipped", "consecutive_skips", "history", "max_grad_bytes",
                "verify_errors", "verify_timeouts")

    def counters(self) -> dict:
        return {k: getattr(self, k) for k in self.COUNTERS} | {
            "phases": {"seconds": self.phases.seconds, "calls": self.phases.calls, "peak_bytes": self.phases.peak_bytes}}

    def load_counters(self, sd: dict) -> None:
        for k in self.COUNTERS:
            setattr(self, k, sd[k])
        self.phases.seconds.update(sd["phases"]["seconds"])
        self.phases.calls.update(sd["phases"]["calls"])
        self.phases.peak_bytes.update(sd["phases"]["peak_bytes"])

    def close(self) -> None:
        self.verifier.close()
        self.initial.close()


def _injected_fault(rank: int, step: int) -> None:
    """Test-only: HARNESS_INJECT_FAULT="RANK:STEP" makes that rank fail as it starts that step."""
    spec = os.environ.get("HARNESS_INJECT_FAULT")
    if spec and spec == f"{rank}:{step}":
        raise RuntimeError(f"injected fault (HARNESS_INJECT_FAULT={spec})")


def _clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> float:
    """torch's clip_grad_norm_; with sharded (DTensor) gradients its norm is already global."""
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    return (norm.full_tensor() if hasattr(norm, "full_tensor") else norm).item()


class _LogprobModule(torch.nn.Module):
    """Wraps the policy so torch.func.functional_call can run it with the reference weights."""

    def __init__(self, model: torch.nn.Module, pad_id: int, shared_prefix: bool):
        super().__init__()
        self.model, self.pad_id, self.shared_prefix = model, pad_id, shared_prefix

    def forward(self, batch: GroupBatch) -> torch.Tensor:
        return completion_logprobs(self.model, batch, self.pad_id, self.shared_prefix)
