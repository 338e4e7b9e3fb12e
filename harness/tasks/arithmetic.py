"""Generated arithmetic problems with exact integer answers (the default task, runs on a CPU).

Problems are drawn from a seeded generator: the train and eval splits come from different streams
of the same seed, and eval problems never appear in train. Reward: 1.0 if the last integer in the
completion equals the answer, else 0.0.
"""

from __future__ import annotations

import random
import re

from harness.tasks.base import Problem

_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
_INT = re.compile(r"-?\d+")


def make_problems(n: int, seed: int, min_value: int, max_value: int, ops: list[str],
                  exclude: frozenset[str] = frozenset()) -> list[Problem]:
    """n distinct problems `a op b` with a, b uniform in [min_value, max_value], none in `exclude`."""
    bad = [op for op in ops if op not in _OPS]
    if bad or not ops:
        raise ValueError(f"task.ops={ops} must be a non-empty list of {sorted(_OPS)}")
    space = (max_value - min_value + 1) ** 2 * len(set(ops)) - len(exclude)
    if n > space:
        raise ValueError(f"task asks for {n} distinct problems but only {space} exist in "
                         f"[{min_value}, {max_value}] with ops {ops}: raise task.max_value")
    rng = random.Random(seed)
    seen: set[str] = set(exclude)
    out: list[Problem] = []
    while len(out) < n:
        a, b = rng.randint(min_value, max_value), rng.randint(min_value, max_value)
        op = rng.choice(ops)
        q = f"{a} {op} {b}"
        if q in seen:
            continue
        seen.add(q)
        out.append(Problem(question=q, answer=str(_OPS[op](a, b))))
    return out


def splits(num_train: int, num_eval: int, seed: int, min_value: int, max_value: int,
           ops: list[str]) -> tuple[list[Problem], list[Problem]]:
    """Held-out eval split first (its own stream), then train problems that avoid it."""
    eval_ = make_problems(num_eval, seed * 2 + 1, min_value, max_value, ops)
    train = make_problems(num_train, seed * 2, min_value, max_value, ops,
                          exclude=frozenset(p.question for p in eval_))
    return train, eval_


def verify_last_integer(completion: str, answer: str) -> float:
    """1.0 if the last integer in the completion equals the answer (plain text parsing only)."""
    found = _INT.findall(completion.replace(",", ""))
    return 1.0 if found and int(found[-1]) == int(answer) else 0.0
