"""Generated arithmetic problems with exact integer answers (the default task, runs on a CPU).

Problems are drawn from a seeded generator: the test (eval), validation and train splits come from
different streams of the same seed, in that order, each avoiding the ones before it, so the three
are disjoint. The test split depends only on (seed, num_eval, value range, ops): every trial with
the same seed and task config is scored on the same problems. Reward: 1.0 if the last integer in the
completion equals the answer, else 0.0.
"""

from __future__ import annotations

import random
import re

from harness.tasks.base import Problem

_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
_INT = re.compile(r"-?\d+")


def make_problems(n: int, seed: int | str, min_value: int, max_value: int, ops: list[str],
                  exclude: frozenset[str] = frozenset()) -> list[Problem]:
    """n distinct problems `a op b` with a, b uniform in [min_value, max_value], none in `exclude`."""
    bad = [op for op in ops if op not in _OPS]
    if bad or not ops:
        raise ValueError(f"task.ops={ops} must be a non-empty list of {sorted(_OPS)}")
    space = space_size(min_value, max_value, ops) - len(exclude)
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


def space_size(min_value: int, max_value: int, ops: list[str]) -> int:
    """How many distinct problems the value range and ops allow."""
    return max(0, max_value - min_value + 1) ** 2 * len(set(ops))


def splits(num_train: int, num_val: int, num_eval: int, seed: int, min_value: int, max_value: int,
           ops: list[str]) -> tuple[list[Problem], list[Problem], list[Problem]]:
    """(train, val, test): the test split first (its own stream, as before validation existed),
    then validation avoiding it, then train avoiding both."""
    eval_ = make_problems(num_eval, seed * 2 + 1, min_value, max_value, ops)
    taken = frozenset(p.question for p in eval_)
    val = make_problems(num_val, f"val-{seed}", min_value, max_value, ops, exclude=taken)
    taken |= {p.question for p in val}
    train = make_problems(num_train, seed * 2, min_value, max_value, ops, exclude=taken)
    return train, val, eval_


def verify_last_integer(completion: str, answer: str) -> float:
    """1.0 if the last integer in the completion equals the answer (plain text parsing only)."""
    found = _INT.findall(completion.replace(",", ""))
    return 1.0 if found and int(found[-1]) == int(answer) else 0.0
