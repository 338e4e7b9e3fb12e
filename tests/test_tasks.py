"""Tasks: seeded splits, verifiers (plain text parsing), task files, and the safe verifier."""

import json
import time

import pytest

from harness.tasks import arithmetic
from harness.tasks.math import TaskDataError, last_boxed, load_problems, verify_boxed
from harness.tasks.verify import SafeVerifier


def test_arithmetic_splits_are_seeded_and_disjoint():
    tr, ev = arithmetic.splits(100, 20, 0, 1, 20, ["+"])
    tr2, ev2 = arithmetic.splits(100, 20, 0, 1, 20, ["+"])
    assert (tr, ev) == (tr2, ev2)
    assert not {p.question for p in tr} & {p.question for p in ev}
    for p in tr[:5]:
        a, op, b = p.question.split()
        assert op == "+" and int(p.answer) == int(a) + int(b)
    assert arithmetic.splits(100, 20, 1, 1, 20, ["+"])[1] != ev


def test_arithmetic_too_many_problems_is_clear():
    with pytest.raises(ValueError, match="raise task.max_value"):
        arithmetic.splits(500, 10, 0, 1, 20, ["+"])


@pytest.mark.parametrize("text,answer,reward", [
    ("7", "7", 1.0), ("The answer is 12.", "12", 1.0), ("3 + 4 = 7", "7", 1.0), ("7 or 8", "7", 0.0),
    ("no number", "7", 0.0), ("-3", "-3", 1.0), ("1,000", "1000", 1.0), ("007", "7", 1.0),
])
def test_last_integer_verifier(text, answer, reward):
    assert arithmetic.verify_last_integer(text, answer) == reward


def test_last_boxed():
    assert last_boxed(r"a \boxed{1} then \boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert last_boxed(r"\boxed{x^{2}}") == "x^{2}"
    assert last_boxed("none") is None
    assert last_boxed(r"\boxed{unclosed") is None


@pytest.mark.parametrize("completion,gold,reward", [
    (r"so \boxed{\frac{1}{2}}", "0.5", 1.0), (r"\boxed{2}", "3", 0.0), ("42", "42", 0.0),
    (r"\boxed{\sqrt{4}}", "2", 1.0), (r"\boxed{__import__('os').system('true')}", "1", 0.0),
])
def test_math_verifier(completion, gold, reward):
    assert verify_boxed(completion, gold) == reward


def test_task_file_errors(tmp_path):
    with pytest.raises(TaskDataError, match="does not exist"):
        load_problems(str(tmp_path / "nope.jsonl"), "train", "problem", "answer")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(TaskDataError, match="is empty"):
        load_problems(str(empty), "train", "problem", "answer")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"problem": "1+1", "answer": "2"}) + "\n{not json\n")
    with pytest.raises(TaskDataError, match=r"bad.jsonl:2: malformed JSON"):
        load_problems(str(bad), "train", "problem", "answer")
    nokey = tmp_path / "nokey.jsonl"
    nokey.write_text(json.dumps({"question": "1+1", "answer": "2"}) + "\n")
    with pytest.raises(TaskDataError, match=r"nokey.jsonl:1: missing field 'problem'"):
        load_problems(str(nokey), "train", "problem", "answer")


def test_task_file_filter(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text("".join(json.dumps({"problem": f"p{i}", "answer": str(i), "source": s}) + "\n"
                         for i, s in enumerate(["a", "synthetic_math", "synthetic_math"])))
    probs = load_problems(str(f), "train", "problem", "answer", "source", "synthetic_math")
    assert [p.answer for p in probs] == ["1", "2"]


def _verifier(completion: str, answer: str) -> float:
    if completion == "hang":
        while True:
            pass
    if completion == "raise":
        raise RuntimeError("boom")
    if completion == "nan":
        return float("nan")
    return arithmetic.verify_last_integer(completion, answer)


def test_safe_verifier_handles_raise_hang_and_nan():
    with SafeVerifier(_verifier, timeout_s=0.5) as v:
        t = time.perf_counter()
        scores, stats = v(["7", "hang", "8", "raise", "nan", "9"], ["7", "1", "8", "1", "1", "9"])
        took = time.perf_counter() - t
        assert scores == [1.0, 0.0, 1.0, 0.0, 0.0, 1.0]
        assert stats.timeouts == 1 and stats.errors == 2
        assert took < 5
        scores, stats = v(["1", "2"], ["1", "3"])  # a fresh worker after the kill
        assert scores == [1.0, 0.0] and stats.timeouts == 0
