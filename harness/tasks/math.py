"""The paper's kind of task: math problems with a reference answer, reward from MATH's normalisation + math-verify.

Data: a local .jsonl or .parquet file (or a Hugging Face dataset name, which needs network) with a
question column and an answer column; optional row filter (NuminaMath-CoT: source=synthetic_math).
Splits (`splits`): test = `eval_path` or num_eval rows held out of `path`; validation = `val_path`
or the next num_val rows of `path`; train = the rest; disjoint by question text.

Reward (`verify_boxed`): 1.0 if the last \\boxed{...} in the completion equals the reference under
MATH's normalisation (harness.tasks.math_normalize, Hendrycks' is_equiv: what the paper scores
with), or under math-verify on the raw strings or on MATH-normalised strings. It accepts every
pair MATH accepts (tests/test_math_answers.py holds the table), e.g. `10\\%` vs `10` (math-verify
alone reads 10% as 0.1), `5\\text{ cm}`, `90^\\circ`, `\\dfrac`, `x=3` vs `3`.
Deliberately more lenient than MATH (math-verify compares values and sets, not strings): decimals
vs fractions other than 0.5 (`0.50`, `3.0`), unreduced fractions, equal radicals (`2\\sqrt{2}` vs
`\\sqrt{8}`), rationalised denominators, reordered terms (`x^2+1` vs `1+x^2`), thousands
separators (`1,000`, `1{,}000`, `\\$1,000`), `\\$5.00` vs `5`, `10.0\\%` vs `10`, multiple-choice
letters in parentheses or `\\text{}`/`\\textbf{}`/`\\mbox{}` (`(A)` vs `A`), a word in `\\text{}`, a
`x \\in` before an interval, and sets or lists of solutions in any order (`1,2` vs `2,1`; ordered
pairs `(1,2)` vs `(2,1)` stay unequal). Kept from MATH although lax: a short left-hand side is
dropped on both sides, so `x=3` equals `y=3`. Neither accepts a bare `%`, `1\\,000` or an answer
wholly inside `\\text{5 cm}`.
Only math-verify's LaTeX extraction is used: its plain-expression extraction runs sympy's
parse_expr (eval) on the text, which model output must never reach.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Optional

from harness.tasks.base import Problem


class TaskDataError(ValueError):
    """A task file that is missing, empty or malformed (the message names file and line)."""


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise TaskDataError(f"{path}:{lineno}: malformed JSON line ({e.msg})") from None
            if not isinstance(row, dict):
                raise TaskDataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            row["_line"] = lineno
            rows.append(row)
    return rows


def _read_rows(source: str, split: str) -> list[dict]:
    path = Path(source).expanduser()
    if path.suffix in (".jsonl", ".json", ".parquet") or path.exists():
        if not path.is_file():
            raise TaskDataError(f"task file {path} does not exist")
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            rows = pq.read_table(path).to_pylist()
            for i, r in enumerate(rows, 1):
                r["_line"] = i
        else:
            rows = _read_jsonl(path)
        if not rows:
            raise TaskDataError(f"task file {path} is empty")
        return rows
    import datasets  # a Hugging Face dataset name: optional dependency, needs network

    return [dict(r, _line=i) for i, r in enumerate(datasets.load_dataset(source, split=split), 1)]


def load_problems(source: str, split: str, question_key: str, answer_key: str,
                  filter_key: Optional[str] = None, filter_value: Optional[str] = None) -> list[Problem]:
    rows = _read_rows(source, split)
    out = []
    for r in rows:
        if filter_key is not None and str(r.get(filter_key)) != str(filter_value):
            continue
        for key in (question_key, answer_key):
            if r.get(key) in (None, ""):
                raise TaskDataError(f"{source}:{r['_line']}: missing field {key!r} (task.question_key/"
                                    f"task.answer_key name the columns; this row has {sorted(k for k in r if k != '_line')})")
        out.append(Problem(question=str(r[question_key]), answer=str(r[answer_key])))
    if not out:
        raise TaskDataError(f"{source}: no rows left after filter {filter_key}={filter_value}")
    return out


def splits(cfg) -> tuple[list[Problem], list[Problem], list[Problem]]:
    """(train, val, test). `path` is shuffled with task.shuffle_seed (the paper: seed 42); the test
    split is `eval_path`'s first num_eval rows or else the first num_eval rows of `path`, the
    validation split `val_path`'s first num_val rows or else the next num_val rows of `path`, and
    train is what is left of `path` (first num_train rows, 0 = all). Disjoint by question text: a
    validation row that is also a test question, and a train row that is in either, are dropped
    (so files that overlap, e.g. a train set that contains MATH500, stay clean). A file with too few
    distinct questions for the splits asked is a TaskDataError naming the file and the counts."""
    rows = load_problems(cfg.path, cfg.split, cfg.question_key, cfg.answer_key, cfg.filter_key, cfg.filter_value)
    random.Random(cfg.shuffle_seed).shuffle(rows)
    held = [f"task.num_eval={cfg.num_eval} test"] if not cfg.eval_path else []
    held += [f"task.num_val={cfg.num_val} validation"] if not cfg.val_path else []
    need = (0 if cfg.eval_path else cfg.num_eval) + (0 if cfg.val_path else cfg.num_val) + 1
    distinct = _distinct(rows)
    if distinct < need:
        raise TaskDataError(
            f"{cfg.path}: too few distinct questions for the splits asked: {distinct} distinct in {len(rows)} rows, "
            f"the splits need {need} ({' + '.join(held + ['1 to train on'])}; disjoint by question text): "
            "lower those counts or name task.eval_path / task.val_path")
    if cfg.eval_path:
        test = load_problems(cfg.eval_path, cfg.eval_split, cfg.question_key, cfg.answer_key)[: cfg.num_eval]
    else:
        test, rows = rows[: cfg.num_eval], rows[cfg.num_eval:]
    taken = {p.question for p in test}
    test_source = cfg.eval_path or cfg.path
    if cfg.val_path:
        pool = load_problems(cfg.val_path, cfg.val_split, cfg.question_key, cfg.answer_key)
        val = [p for p in pool if p.question not in taken][: cfg.num_val]
        if not val:
            raise TaskDataError(f"{cfg.val_path}: too few distinct questions for the splits asked: all {_distinct(pool)} "
                                f"distinct questions are test questions (of {test_source}), none left for validation")
    else:
        rows = [p for p in rows if p.question not in taken]
        if _distinct(rows) < cfg.num_val + 1:
            raise TaskDataError(
                f"{cfg.path}: too few distinct questions for the splits asked: {_distinct(rows)} of its {distinct} "
                f"distinct questions are not test questions (of {test_source}), the splits need {cfg.num_val + 1} "
                f"(task.num_val={cfg.num_val} validation + 1 to train on)")
        val, rows = rows[: cfg.num_val], rows[cfg.num_val:]
    taken |= {p.question for p in val}
    train = [p for p in rows if p.question not in taken]
    if cfg.num_train:
        train = train[: cfg.num_train]
    if not train:
        raise TaskDataError(f"{cfg.path}: too few distinct questions for the splits asked: all {distinct} distinct "
                            "questions are validation or test questions, none left to train on")
    return train, val, test


def _distinct(problems: list[Problem]) -> int:
    return len({p.question for p in problems})


def last_boxed(text: str) -> Optional[str]:
    """Content of the last \\boxed{...} (balanced braces), or None."""
    start = text.rfind("\\boxed")
    while start != -1:
        i = text.find("{", start)
        if i != -1 and text[start + len("\\boxed"):i].strip() == "":
            depth, j = 0, i
            while j < len(text):
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                if depth == 0:
                    return text[i + 1:j]
                j += 1
        start = text.rfind("\\boxed", 0, start)
    return None


def verify_boxed(completion: str, answer: str) -> float:
    """1.0 if the last \\boxed{} answer equals the reference, else 0.0: equal under MATH's
    normalisation (harness.tasks.math_normalize.is_equiv, what the paper scores with), or under
    math-verify on the raw strings, or under math-verify on both strings after MATH's
    normalisation (so "10\\%" vs "10", "10.0\\%" vs "10", "90^\\circ" vs "90" all pass). See
    the module docstring for where this is more lenient than MATH.

    Time limits are enforced by harness.tasks.verify (a separate process), so math-verify's own
    signal-based timeouts are turned off.
    """
    from harness.tasks.math_normalize import is_equiv, strip_string

    boxed = last_boxed(completion)
    if boxed is None:
        return 0.0
    gold = last_boxed(answer) if "\\boxed" in answer else answer
    if gold is None:
        return 0.0
    if is_equiv(boxed, gold) or _math_verify_equal(gold, boxed):
        return 1.0
    try:
        stripped = strip_string(gold), strip_string(boxed)
    except (ValueError, IndexError):
        return 0.0
    return 1.0 if stripped[0] and stripped[1] and _math_verify_equal(*stripped) else 0.0


def _math_verify_equal(gold: str, pred: str) -> bool:
    """math-verify on two answer strings, LaTeX extraction only (never its eval-based parsing)."""
    import math_verify.grader
    import math_verify.parser
    from math_verify import LatexExtractionConfig, parse, verify

    math_verify.parser.TIMEOUT_WARNING_SHOWN = math_verify.grader.TIMEOUT_WARNING_SHOWN = True  # we time out
    cfg = [LatexExtractionConfig(boxed_match_priority=0)]
    g = parse(f"$\\boxed{{{gold}}}$", extraction_config=cfg, parsing_timeout=None)
    p = parse(f"$\\boxed{{{pred}}}$", extraction_config=cfg, parsing_timeout=None)
    return bool(g and p and verify(g, p, timeout_seconds=None))
