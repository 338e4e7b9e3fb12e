"""python -m pytest tests/test_tasks.py -q

Tasks: the registry (build + validate), schemas, seeded disjoint train / validation / test splits,
verifiers (plain text parsing), task files, and the safe verifier.
"""

import json
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from harness.config import register
from harness.errors import ConfigError
from harness.tasks import TASKS, arithmetic, build_task
from harness.tasks.math import TaskDataError, last_boxed, load_problems, verify_boxed
from harness.tasks.verify import SafeVerifier
from tests.conftest import run_harness

CONF = str(Path(__file__).resolve().parents[1] / "conf")
register()  # the schemas, the task ones included (harness.tasks.schema.register_schemas)


def _task(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        return compose(config_name="config", overrides=list(overrides)).task


def _questions(problems) -> set[str]:
    return {p.question for p in problems}


def test_arithmetic_splits_are_seeded_and_disjoint():
    tr, va, ev = arithmetic.splits(100, 30, 20, 0, 1, 20, ["+"])
    assert (tr, va, ev) == arithmetic.splits(100, 30, 20, 0, 1, 20, ["+"])
    assert (len(tr), len(va), len(ev)) == (100, 30, 20)
    assert not _questions(tr) & _questions(ev) and not _questions(tr) & _questions(va)
    assert not _questions(va) & _questions(ev)
    for p in tr[:5] + va[:5]:
        a, op, b = p.question.split()
        assert op == "+" and int(p.answer) == int(a) + int(b)
    other = arithmetic.splits(100, 30, 20, 1, 1, 20, ["+"])
    assert other[1] != va and other[2] != ev
    # the test split depends on (seed, num_eval, range, ops) only: same problems whatever num_val/num_train
    assert arithmetic.splits(50, 10, 20, 0, 1, 20, ["+"])[2] == ev


def test_arithmetic_uses_the_whole_space_disjointly():
    tr, va, ev = arithmetic.splits(10, 10, 5, 3, 1, 5, ["+"])  # 25 problems exist: all used once
    assert len(_questions(tr) | _questions(va) | _questions(ev)) == 25


def test_arithmetic_too_many_problems_is_clear():
    with pytest.raises(ValueError, match="raise task.max_value"):
        arithmetic.splits(500, 10, 10, 0, 1, 20, ["+"])


def test_task_yamls_compose_with_their_schemas_and_build():
    cfg = _task()
    assert OmegaConf.get_type(cfg).__name__ == "ArithmeticTaskConfig"
    task = build_task(cfg, seed=0)
    assert (len(task.train), len(task.val), len(task.eval)) == (cfg.num_train, cfg.num_val, cfg.num_eval)
    assert not _questions(task.val) & _questions(task.eval)
    assert not _questions(task.train) & (_questions(task.val) | _questions(task.eval))
    TASKS.validate(cfg.name, cfg)
    math_cfg = _task("task=math", "task.path=x.jsonl")
    assert OmegaConf.get_type(math_cfg).__name__ == "MathTaskConfig"
    with pytest.raises(Exception, match="min_value"):  # an arithmetic key is not a math key
        _task("task=math", "task.path=x.jsonl", "task.min_value=3")


@pytest.mark.parametrize("override,key", [
    ("task.num_val=0", "task.num_val"), ("task.num_eval=0", "task.num_eval"), ("task.ops=[/]", "task.ops"),
    ("task.min_value=30", "task.max_value"), ("task.num_train=400", "task.max_value"),
    ("task.prompt_template=hi", "task.prompt_template"), ("task.verify_timeout_s=0", "task.verify_timeout_s"),
])
def test_task_validate_names_the_key(override, key):
    cfg = _task(override)
    with pytest.raises(ConfigError, match=rf"^{key}="):
        TASKS.validate(cfg.name, cfg)


def test_unknown_task_is_a_config_error():
    with pytest.raises(ConfigError, match=r"task.name='nope': allowed values are arithmetic, math"):
        TASKS.validate("nope")


def _rows(path: Path, questions: list[str]) -> str:
    path.write_text("".join(json.dumps({"problem": q, "answer": str(i)}) + "\n" for i, q in enumerate(questions)))
    return str(path)


def test_math_splits_held_out_of_one_file(tmp_path):
    path = _rows(tmp_path / "d.jsonl", [f"q{i}" for i in range(50)])
    cfg = _task("task=math", f"task.path={path}", "task.num_eval=10", "task.num_val=5")
    TASKS.validate(cfg.name, cfg)
    task = build_task(cfg, seed=0)
    assert (len(task.train), len(task.val), len(task.eval)) == (35, 5, 10)
    assert len(_questions(task.train) | _questions(task.val) | _questions(task.eval)) == 50
    assert build_task(cfg, seed=1).eval == task.eval  # data order is task.shuffle_seed's, not the trial's
    with pytest.raises(TaskDataError, match=r"too few distinct questions for the splits asked: 50 distinct in 50 rows, "
                                            r"the splits need 51 \(task.num_eval=40 test \+ task.num_val=10 validation"):
        build_task(_task("task=math", f"task.path={path}", "task.num_eval=40", "task.num_val=10"), seed=0)


def test_math_file_of_one_question_names_the_file_and_the_counts(tmp_path):
    same = _rows(tmp_path / "same.jsonl", ["What is 1+1?"] * 50)
    with pytest.raises(TaskDataError) as e:
        build_task(_task("task=math", f"task.path={same}", "task.num_eval=5", "task.num_val=5"), seed=0)
    assert str(e.value).startswith(f"{same}: too few distinct questions for the splits asked: 1 distinct in 50 rows, "
                                   "the splits need 11 (task.num_eval=5 test + task.num_val=5 validation + 1 to train on")
    # 12 distinct questions, each twice: enough for 5 + 5 + 1, and the splits stay disjoint
    twice = _rows(tmp_path / "twice.jsonl", [f"q{i % 12}" for i in range(24)])
    task = build_task(_task("task=math", f"task.path={twice}", "task.num_eval=5", "task.num_val=5"), seed=0)
    assert task.train and not _questions(task.train) & (_questions(task.val) | _questions(task.eval))
    assert not _questions(task.val) & _questions(task.eval)


def test_math_files_that_overlap_too_much_name_the_file(tmp_path):
    test = _rows(tmp_path / "test.jsonl", ["a", "b", "c"])
    train = _rows(tmp_path / "train.jsonl", ["a", "b", "c", "d"])  # only d is not a test question
    with pytest.raises(TaskDataError, match=rf"^{train}: too few distinct questions for the splits asked: 1 of its 4 "
                                            r"distinct questions are not test questions \(of .*test.jsonl\), the splits need 3"):
        build_task(_task("task=math", f"task.path={train}", f"task.eval_path={test}", "task.num_eval=3",
                         "task.num_val=2"), seed=0)
    val = _rows(tmp_path / "val.jsonl", ["b", "a"])  # every validation question is a test question
    with pytest.raises(TaskDataError, match=rf"^{val}: too few distinct questions for the splits asked: all 2 distinct "
                                            "questions are test questions"):
        build_task(_task("task=math", f"task.path={train}", f"task.eval_path={test}", f"task.val_path={val}",
                         "task.num_eval=3", "task.num_val=2"), seed=0)
    small = _rows(tmp_path / "small.jsonl", ["a", "b"])  # the train file holds only test questions
    with pytest.raises(TaskDataError, match=rf"^{small}: too few distinct questions for the splits asked: all 2 distinct "
                                            "questions are validation or test questions, none left to train on"):
        build_task(_task("task=math", f"task.path={small}", f"task.eval_path={test}", f"task.val_path={train}",
                         "task.num_eval=3", "task.num_val=1"), seed=0)


def test_math_file_of_one_question_is_one_line_from_the_cli(tmp_path):
    same = _rows(tmp_path / "same.jsonl", ["What is 1+1?"] * 50)
    p = run_harness("model=tiny", "logger=none", "task=math", f"task.path={same}", "task.num_eval=5", "task.num_val=5",
                    f"hydra.run.dir={tmp_path}/run")
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().startswith(f"error: {same}: too few distinct questions for the splits asked: 1 distinct"), p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_math_splits_from_files_stay_disjoint(tmp_path):
    # the train file contains some test and validation questions; the validation file some test ones
    train = _rows(tmp_path / "train.jsonl", [f"q{i}" for i in range(30)])
    test = _rows(tmp_path / "test.jsonl", ["q0", "q1", "t2", "t3"])
    val = _rows(tmp_path / "val.jsonl", ["q1", "q5", "v1", "v2"])
    cfg = _task("task=math", f"task.path={train}", f"task.eval_path={test}", f"task.val_path={val}",
                "task.num_eval=4", "task.num_val=3")
    task = build_task(cfg, seed=0)
    assert _questions(task.eval) == {"q0", "q1", "t2", "t3"}
    assert _questions(task.val) == {"q5", "v1", "v2"}  # q1 is a test question
    assert not _questions(task.train) & (_questions(task.val) | _questions(task.eval))
    assert len(task.train) == 27  # 30 minus q0, q1, q5


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
