"""A new task, `task=largest`: "What is the largest of 7, 12, 3?" (docs/extending.md, run by tests/test_docs.py).

In the harness itself this module would be harness/tasks/largest.py, imported by harness/tasks/__init__.py,
and its YAML conf/task/largest.yaml. Three parts, side by side:
- a typed schema (types only; the defaults are written once, in the YAML), stored in Hydra's ConfigStore
  under the name the YAML's defaults list asks for (`/schema/task_largest@_here_`);
- `validate`: the checks that types can't express, each failure one line naming the key (ConfigError);
- the builder, registered in TASKS under the name `task.name` picks: three disjoint splits and a verifier.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from harness.errors import check
from harness.tasks import TASKS, Problem, Task
from harness.tasks.arithmetic import verify_last_integer  # reward: the last integer equals the answer
from harness.tasks.schema import TaskBase


@dataclass
class LargestTaskConfig(TaskBase):  # TaskBase: prompt_template, num_train, num_val, num_eval, ...
    count: int = MISSING  # numbers per problem
    max_value: int = MISSING  # numbers drawn from [1, max_value]


ConfigStore.instance().store(group="schema", name="task_largest", node=LargestTaskConfig)


def problems(n: int, rng: random.Random, count: int, max_value: int, taken: set[str]) -> list[Problem]:
    """n distinct problems not in `taken` (which grows with them)."""
    out: list[Problem] = []
    while len(out) < n:
        xs = [rng.randint(1, max_value) for _ in range(count)]
        q = "the largest of " + ", ".join(map(str, xs))
        if q not in taken:
            taken.add(q)
            out.append(Problem(question=q, answer=str(max(xs))))
    return out


def validate(cfg) -> None:
    check(cfg.count >= 2, "task.count", cfg.count, "must be >= 2")
    check(cfg.max_value >= 2, "task.max_value", cfg.max_value, "must be >= 2")
    need, space = cfg.num_train + cfg.num_val + cfg.num_eval, cfg.max_value ** cfg.count
    check(need <= space, "task.max_value", cfg.max_value,
          f"the splits ask for {need} distinct problems but only {space} exist: raise task.max_value")
    check(cfg.num_eval >= 1 and cfg.num_val >= 1, "task.num_eval", cfg.num_eval, "test and validation need >= 1")


@TASKS.register("largest", validate=validate)
def build(cfg, seed: int) -> Task:
    rng, taken = random.Random(f"largest-{seed}"), set()
    test = problems(cfg.num_eval, rng, cfg.count, cfg.max_value, taken)  # test first: it depends on the seed alone
    val = problems(cfg.num_val, rng, cfg.count, cfg.max_value, taken)
    train = problems(cfg.num_train, rng, cfg.count, cfg.max_value, taken)
    return Task(name=cfg.name, train=train, val=val, eval=test, verifier=verify_last_integer,
                prompt_template=cfg.prompt_template, system_prompt=cfg.system_prompt)
