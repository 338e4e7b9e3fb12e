"""TRL's GRPOTrainer on the harness's trial settings: the peer side of `python -m harness.bench.peer`.

    python -m harness.bench.trl_trial --out DIR [the same Hydra overrides as python -m harness]

Composes the harness's config from the overrides and runs TRL's GRPOTrainer with it: the same model
folder (fp32 weights loaded by transformers), the same prompts in the same order (the harness
trainer's `step_problems`, fed unshuffled), the same group size, new tokens, temperature, top_p and
no top-k, token-mean loss (TRL's "dapo"), the KL coefficient with a reference model, clip, grad clip,
micro-batch, precision (TRL's bf16=True on CPU is autocast over fp32 weights), thread count and the
very optimizer object the harness builds (`harness.optim.build_optimizer`, constant lr). `DIFFERENCES`
lists what is not the same, and why. Writes DIR/metrics.jsonl (per step: perf/step_s, perf/rollout_s =
TRL's own "transformers.generate" block) and DIR/result.json (mem/peak_bytes = this process's VmHWM)
in the harness's keys, so harness.bench.common reads both sides alike. Exit 2 without TRL.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

MISSING_TRL = "bench.peer: TRL is not installed: pip install -c .ci/constraints.txt -e '.[peer]'"
LOSS_TYPES = {"token-mean": "dapo", "seq-mean-token-mean": "grpo"}  # harness loss_agg -> TRL loss_type

# What differs between the two sides however they are configured, and why (printed by bench.peer).
DIFFERENCES = [
    ("random numbers", "each side samples with its own RNG (TRL: torch's global generator; harness: one seeded "
     "generator per sample), so completions and their lengths differ; both sample from the same distribution"),
    ("reward", "TRL calls the task's verifier inline; the harness runs it in a separate process with a time limit"),
    ("reference forward at step 1", "TRL runs it; the harness skips it while no update has been applied "
     "(reference = policy, KL = 0 exactly)"),
    ("eval", "TRL runs none; the harness's eval is off in the benchmark (trainer.eval_every=0) and its "
     "initial/final evals are outside the timed steps"),
    ("diagnostics", "the harness measures sparsity and optimizer diagnostics each step (trainer.diagnostics); "
     "TRL measures neither. They are in the harness's step time"),
]


def trainer_problems(task: Any, t: Any, seed: int, steps: int) -> list:
    """The prompts of steps 0..steps-1 in the harness trainer's order (its own step_problems)."""
    from harness.trainer import Trainer

    one = SimpleNamespace(task=task, t=t, seed=seed, dist=SimpleNamespace(world_size=1, rank=0))
    return [p for s in range(steps) for _, p in Trainer.step_problems(one, s)]


def compose(overrides: list[str]) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from harness.config import register

    register()
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[2] / "conf"), version_base=None):
        return hydra_compose("config", overrides=overrides)


def check(cfg: Any) -> None:
    """Settings TRL cannot match: one line naming the key (harness.errors.ConfigError)."""
    from harness.errors import check as ok

    t = cfg.trainer
    ok(t.loss_agg in LOSS_TYPES, "trainer.loss_agg", t.loss_agg, ", ".join(LOSS_TYPES))
    ok(t.kl_estimator == "k3", "trainer.kl_estimator", t.kl_estimator, "k3 (TRL's only estimator)")
    ok(cfg.rollout.backend == "hf", "rollout", cfg.rollout.backend, "hf (the peer runs transformers generate)")
    ok((t.prompts_per_step * t.group_size) % t.micro_batch_size == 0, "trainer.micro_batch_size",
       t.micro_batch_size, "a divisor of prompts_per_step * group_size (TRL's gradient accumulation)")


class _Clock:
    """Per optimizer step: wall time between step ends, TRL's profiled blocks, completion tokens."""

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.blocks: dict[str, float] = {}
        self.tokens = 0
        self.reward: float | None = None
        self.questions: list[str] = []
        self.rows: list[dict] = []

    def profiling_context(self, original):
        @contextlib.contextmanager
        def timed(trainer, name):
            t0 = time.perf_counter()
            with original(trainer, name):
                yield
            self.blocks[name] = self.blocks.get(name, 0.0) + time.perf_counter() - t0
        return timed

    def step_end(self, step: int, loss: Any = None) -> None:
        now = time.perf_counter()
        gen = self.blocks.get("transformers.generate", 0.0)
        step_s = now - self.last
        self.rows.append({"step": step, "train/reward_mean": self.reward, "peer/questions": self.questions,
                          "perf/step_s": step_s,
                          "perf/rollout_s": gen, "perf/update_s": step_s - gen,
                          "perf/rollout_tokens_per_s": self.tokens / max(gen, 1e-9),
                          **{f"perf/trl/{k}": v for k, v in self.blocks.items()}})
        self.last, self.blocks, self.tokens = now, {}, 0


def _peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run(cfg: Any, out: Path) -> dict:
    import hydra.utils
    import torch
    import trl
    import trl.trainer.grpo_trainer as grpo_module
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from harness.models import resolve_model_dir
    from harness.optim import build_optimizer
    from harness.tasks import build_task

    t0 = time.perf_counter()
    t = cfg.trainer
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    task = build_task(cfg.task, cfg.seed)
    problems = trainer_problems(task, t, cfg.seed, t.steps)
    model_dir = resolve_model_dir(cfg.model, hydra.utils.to_absolute_path(cfg.cache_dir))
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, cfg.model.param_dtype),
                                                 attn_implementation=cfg.model.attn_implementation)
    optimizer = build_optimizer(cfg.optimizer, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)  # constant lr, no warm-up
    clock = _Clock()

    def reward(completions, answer, question, completion_ids, **_):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        scores = [float(task.verifier(x, a)) for x, a in zip(texts, answer)]
        clock.tokens += sum(len(c) for c in completion_ids)
        clock.reward = sum(scores) / len(scores)
        clock.questions = list(question[::t.group_size])  # what TRL fed, one per group, in order
        return scores

    reward.__name__ = f"{task.name}_verifier"
    G, P = t.group_size, t.prompts_per_step
    bf16 = cfg.model.dtype == "bfloat16" and cfg.model.param_dtype == "float32"
    args = trl.GRPOConfig(
        output_dir=str(out / "trl"), use_cpu=True, bf16=bf16, fp16=cfg.model.dtype == "float16",
        per_device_train_batch_size=t.micro_batch_size, gradient_accumulation_steps=P * G // t.micro_batch_size,
        num_generations=G, max_completion_length=t.max_new_tokens, temperature=t.temperature, top_p=t.top_p,
        top_k=0, beta=t.kl_coef, epsilon=t.clip_ratio, loss_type=LOSS_TYPES[t.loss_agg], num_iterations=1,
        scale_rewards="group" if t.norm_adv_by_std else "none", max_grad_norm=t.grad_clip or 1e30,
        learning_rate=float(cfg.optimizer.lr), lr_scheduler_type="constant", warmup_steps=0, max_steps=t.steps,
        gradient_checkpointing=bool(cfg.model.gradient_checkpointing), shuffle_dataset=False, seed=int(cfg.seed),
        generation_kwargs={"min_new_tokens": t.min_new_tokens} if t.min_new_tokens else None,
        logging_steps=1, report_to="none", save_strategy="no", disable_tqdm=True, dataloader_num_workers=0)

    class StepTimes(TrainerCallback):
        def on_train_begin(self, *a, **k):
            clock.last = time.perf_counter()

        def on_step_end(self, args, state, control, **k):
            clock.step_end(state.global_step)

    data = Dataset.from_list([{"prompt": task.messages(p), "answer": p.answer, "question": p.question}
                              for p in problems])
    grpo_module.profiling_context = clock.profiling_context(grpo_module.profiling_context)
    trainer = trl.GRPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=data,
                              processing_class=tok, optimizers=(optimizer, scheduler), callbacks=[StepTimes()])
    setup_s = time.perf_counter() - t0
    trainer.train()
    with (out / "metrics.jsonl").open("w") as f:
        for row in clock.rows:
            f.write(json.dumps(row) + "\n")
    return {"status": "ok", "error": None, "perf/setup_s": setup_s, "mem/peak_bytes": _peak_rss_bytes(),
            "mem/peak_kind": "cpu_rss", "peer": {"trl": trl.__version__, "bf16_autocast": bf16,
                                                  "ref_model": trainer.ref_model is not None,
                                                  "threads": torch.get_num_threads(),
                                                  "glibc_tunables": os.environ.get("GLIBC_TUNABLES")}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="folder for metrics.jsonl and result.json")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, as for python -m harness")
    a = ap.parse_args(argv)
    try:
        import trl  # noqa: F401
    except ImportError:
        print(MISSING_TRL, file=sys.stderr)
        return 2
    from harness.errors import ConfigError

    cfg = compose(a.overrides)
    try:
        check(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    result = run(cfg, a.out)
    (a.out / "result.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
