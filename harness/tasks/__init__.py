"""Tasks by name: `build_task(cfg.task, seed)` gives train/eval problems, prompts and the verifier."""

from __future__ import annotations

from harness.tasks import arithmetic, math
from harness.tasks.base import Problem, Task, Verifier

__all__ = ["Problem", "Task", "Verifier", "build_task", "VERIFIERS"]

VERIFIERS: dict[str, Verifier] = {
    "arithmetic": arithmetic.verify_last_integer,
    "math": math.verify_boxed,
}


def build_task(cfg, seed: int) -> Task:
    if cfg.name == "arithmetic":
        train, eval_ = arithmetic.splits(cfg.num_train, cfg.num_eval, seed, cfg.min_value, cfg.max_value, list(cfg.ops))
    elif cfg.name == "math":
        train, eval_ = math.splits(cfg)
    else:
        raise ValueError(f"task.name={cfg.name!r}: allowed values are {sorted(VERIFIERS)}")
    return Task(name=cfg.name, train=train, eval=eval_, verifier=VERIFIERS[cfg.name],
                prompt_template=cfg.prompt_template, system_prompt=cfg.system_prompt)
