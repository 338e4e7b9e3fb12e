"""The paper's kind of task: math problems with a reference answer, reward from math-verify.

Data: a local .jsonl or .parquet file (or a Hugging Face dataset name, which needs network) with a
question column and an answer column; optional row filter (NuminaMath-CoT: source=synthetic_math).
Reward: 1.0 if the last \\boxed{...} in the completion equals the reference after math-verify's
normalisation. Only math-verify's LaTeX extraction is used: its plain-expression extraction runs
sympy's parse_expr (eval) on the text, which model output must never reach.
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


def splits(cfg) -> tuple[list[Problem], list[Problem]]:
    """Train and eval problems. Train is shuffled with task.shuffle_seed (the paper: seed 42)."""
    train = load_problems(cfg.path, cfg.split, cfg.question_key, cfg.answer_key, cfg.filter_key, cfg.filter_value)
    random.Random(cfg.shuffle_seed).shuffle(train)
    if cfg.eval_path:
        eval_ = load_problems(cfg.eval_path, cfg.eval_split, cfg.question_key, cfg.answer_key)[: cfg.num_eval]
    else:
        if len(train) <= cfg.num_eval:
            raise TaskDataError(f"{cfg.path}: {len(train)} rows, not enough to hold out task.num_eval={cfg.num_eval}")
        eval_, train = train[: cfg.num_eval], train[cfg.num_eval:]
    if cfg.num_train:
        train = train[: cfg.num_train]
    return train, eval_


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
    """1.0 if the last \\boxed{} answer equals the reference under math-verify (LaTeX parsing only).

    Time limits are enforced by harness.tasks.verify (a separate process), so math-verify's own
    signal-based timeouts are turned off.
    """
    import math_verify.grader
    import math_verify.parser
    from math_verify import LatexExtractionConfig, parse, verify

    math_verify.parser.TIMEOUT_WARNING_SHOWN = math_verify.grader.TIMEOUT_WARNING_SHOWN = True  # we time out
    boxed = last_boxed(completion)
    if boxed is None:
        return 0.0
    cfg = [LatexExtractionConfig(boxed_match_priority=0)]
    gold = parse(f"${answer}$" if "\\boxed" not in answer else answer, extraction_config=cfg,
                 parsing_timeout=None)
    pred = parse(f"$\\boxed{{{boxed}}}$", extraction_config=cfg, parsing_timeout=None)
    if not gold or not pred:
        return 0.0
    return 1.0 if verify(gold, pred, timeout_seconds=None) else 0.0
