"""Typed schemas of the task configs (conf/task/*.yaml), one per variant, registered in Hydra's ConfigStore.

Each task YAML names its schema in its defaults list (`- /schema/task_arithmetic@_here_`), so
Hydra checks types and rejects unknown keys at compose time. Types only: every default is written
once, in the YAML; a field the YAML leaves out is MISSING. Value checks (num_eval >= 1, ...) are
each task's `validate` in harness.tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import MISSING


@dataclass
class TaskBase:
    """What every task has: prompt, split sizes, verifier time limit."""

    name: str = MISSING  # the TASKS registry entry: arithmetic | math
    system_prompt: Optional[str] = MISSING
    prompt_template: str = MISSING  # "{question}" is replaced by the problem text
    answer_template: str = MISSING  # trainer=sft's target: "{answer}" is replaced by the reference answer
    num_train: int = MISSING  # train problems (arithmetic: generated; math: first N rows, 0 = all)
    num_val: int = MISSING  # validation problems: eval during training, lr choice in the report
    num_eval: int = MISSING  # test problems: the final eval, the reported accuracy
    verify_timeout_s: float = MISSING


@dataclass
class ArithmeticTaskConfig(TaskBase):
    min_value: int = MISSING  # operands drawn from [min_value, max_value]
    max_value: int = MISSING
    ops: list[str] = MISSING  # any of + - *


@dataclass
class MathTaskConfig(TaskBase):
    path: str = MISSING  # .jsonl/.parquet file or a Hugging Face dataset name (needs network)
    split: str = MISSING  # dataset split of `path` (dataset names only)
    val_path: Optional[str] = MISSING  # null: hold out num_val rows of `path`
    val_split: str = MISSING
    eval_path: Optional[str] = MISSING  # null: hold out num_eval rows of `path`
    eval_split: str = MISSING
    question_key: str = MISSING
    answer_key: str = MISSING
    filter_key: Optional[str] = MISSING  # e.g. "source" for NuminaMath-CoT (train file only)
    filter_value: Optional[str] = MISSING  # e.g. "synthetic_math"
    shuffle_seed: int = MISSING  # order of `path` before the hold-outs (the paper: 42)


SCHEMAS = {"task_arithmetic": ArithmeticTaskConfig, "task_math": MathTaskConfig}


def register_schemas(cs: Any) -> None:
    """Store the task schemas in ConfigStore `cs` as schema/task_arithmetic and schema/task_math."""
    for name, node in SCHEMAS.items():
        cs.store(group="schema", name=name, node=node)
