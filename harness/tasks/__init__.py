"""Tasks by name: the TASKS registry builds train / validation / test problems, prompts and verifier.

    TASKS.validate(cfg.task.name, cfg.task)   # the entry's own checks (ConfigError), before any work
    task = build_task(cfg.task, seed)         # = TASKS.build(cfg.task.name, cfg.task, seed)

Each entry registers its builder and its validate side by side; its schema is in
harness.tasks.schema (types) and its defaults in conf/task/NAME.yaml.
"""

from __future__ import annotations

from typing import Any

from harness.errors import check
from harness.registry import Registry
from harness.tasks import arithmetic, math
from harness.tasks.base import Problem, Task, Verifier

__all__ = ["Problem", "Task", "Verifier", "TASKS", "build_task"]

TASKS: Registry = Registry("task.name")


def _check_common(cfg: Any) -> None:
    check(cfg.verify_timeout_s > 0, "task.verify_timeout_s", cfg.verify_timeout_s, "must be > 0")
    check("{question}" in cfg.prompt_template, "task.prompt_template", cfg.prompt_template, "must contain {question}")
    check("{answer}" in cfg.answer_template, "task.answer_template", cfg.answer_template, "must contain {answer}")
    check(cfg.num_eval >= 1, "task.num_eval", cfg.num_eval, "must be >= 1 (test problems)")
    check(cfg.num_val >= 1, "task.num_val", cfg.num_val, "must be >= 1 (validation problems)")


def _make(cfg: Any, verifier: Verifier, splits: tuple[list[Problem], list[Problem], list[Problem]]) -> Task:
    train, val, test = splits
    return Task(name=cfg.name, train=train, val=val, eval=test, verifier=verifier,
                prompt_template=cfg.prompt_template, system_prompt=cfg.system_prompt,
                answer_template=cfg.answer_template)


def validate_arithmetic(cfg: Any) -> None:
    _check_common(cfg)
    check(cfg.num_train >= 1, "task.num_train", cfg.num_train, "must be >= 1")
    check(cfg.min_value <= cfg.max_value, "task.max_value", cfg.max_value, f"must be >= task.min_value={cfg.min_value}")
    ops = list(cfg.ops)
    check(bool(ops) and all(o in ("+", "-", "*") for o in ops), "task.ops", ops, "allowed values are ['+', '-', '*']")
    space = arithmetic.space_size(cfg.min_value, cfg.max_value, ops)
    need = cfg.num_train + cfg.num_val + cfg.num_eval
    check(need <= space, "task.max_value", cfg.max_value,
          f"task.num_train + num_val + num_eval = {need} distinct problems, but only {space} exist in "
          f"[{cfg.min_value}, {cfg.max_value}] with ops {ops}: raise task.max_value or lower the counts")


@TASKS.register("arithmetic", validate=validate_arithmetic)
def build_arithmetic(cfg: Any, seed: int) -> Task:
    return _make(cfg, arithmetic.verify_last_integer,
                 arithmetic.splits(cfg.num_train, cfg.num_val, cfg.num_eval, seed, cfg.min_value, cfg.max_value,
                                   list(cfg.ops)))


def validate_math(cfg: Any) -> None:
    _check_common(cfg)
    check(cfg.num_train >= 0, "task.num_train", cfg.num_train, "must be >= 0 (0 = every row)")
    check(bool(cfg.path), "task.path", cfg.path, "must name a .jsonl/.parquet file or a dataset")


@TASKS.register("math", validate=validate_math)
def build_math(cfg: Any, seed: int) -> Task:
    return _make(cfg, math.verify_boxed, math.splits(cfg))  # data order: task.shuffle_seed's, not the trial's


def build_task(cfg: Any, seed: int) -> Task:
    """The task of config node `cfg` (cfg.task): TASKS.build(cfg.name, cfg, seed)."""
    return TASKS.build(cfg.name, cfg, seed)
