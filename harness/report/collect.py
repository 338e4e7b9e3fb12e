"""Read a sweep folder into report rows: one flat dict per trial.

A trial folder is any folder below the sweep folder that holds `result.json` (written atomically
by the trial, with `metrics.jsonl` beside it). A folder with `.hydra/overrides.yaml` and no
`result.json` is a trial that never finished (or is still running): its row has status "missing".

A row is result.json with the "trial" fields lifted to the top level (name, optimizer, lr,
momentum, model, task, seed, overrides, slurm_job_id, objective) plus "dir" (the folder relative to the sweep
folder), "status" ("ok" | "failed" | "pruned" | "missing") and "error" (None or a one-line reason).
A pruned trial (stopped early at an evaluation, harness.prune) is neither ok nor failed: its row
has prune/step, prune/value, prune/reason and its curves so far; a trial paused at a rung of the
grid's stop rule is "missing" until the sweep resumes it. If
result.json has no curves (`eval/val_curve`, `train/reward_curve`), they are rebuilt from
metrics.jsonl; results written before the validation split existed have `eval/curve` (the test
split), which stands in for `eval/val_curve`. The per-step sparsity curve `sparsity/step_curve`
(a list of {"step", "changed_fraction_bf16", "step_changed_fraction_bf16", ... fp32}) always comes
from metrics.jsonl.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from harness.metrics import STEP_SPARSITY, curve

VAL_ACCURACY_CURVE = curve("eval/val_accuracy")

RESULT = "result.json"
METRICS = "metrics.jsonl"
OVERRIDES = os.path.join(".hydra", "overrides.yaml")
STATUSES = ("ok", "failed", "pruned")  # what a finished trial's result.json says
TRIAL_KEYS = ("name", "optimizer", "lr", "momentum", "model", "task", "seed", "overrides", "slurm_job_id", "objective")


def collect(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per trial folder under sweep_dir (finished, failed, unreadable or missing), sorted by dir."""
    root = Path(sweep_dir)
    rows = []
    for folder, files in _walk(root):
        rel = str(folder.relative_to(root)) if folder != root else "."
        if RESULT in files:
            rows.append(read_trial(folder, rel))
        elif (folder / OVERRIDES).is_file():
            rows.append(missing_row(folder, rel))
    return sorted(rows, key=lambda r: r["dir"])


def read_trial(folder: Path, rel: str = ".") -> dict[str, Any]:
    """The row of one trial folder that holds result.json; unreadable JSON gives a "failed" row."""
    try:
        result = json.loads((folder / RESULT).read_text())
        if not isinstance(result, dict):
            raise ValueError(f"expected a JSON object, got {type(result).__name__}")
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason = " ".join(f"unreadable {RESULT}: {e}".split())
        return {**_trial_fields({}, folder.name), "dir": rel, "status": "failed", "error": reason}
    row = row_from_result(result, default_name=folder.name)
    row["dir"] = rel
    records = read_metrics(folder / METRICS)
    if not row.get("eval/val_curve") or not row.get("train/reward_curve"):
        val_curve, reward_curve = curves_from_metrics(records)
        row["eval/val_curve"] = row.get("eval/val_curve") or row.get("eval/curve") or val_curve
        row["train/reward_curve"] = row.get("train/reward_curve") or reward_curve
    row["sparsity/step_curve"] = sparsity_curve_from_metrics(records)
    return row


def row_from_result(result: dict[str, Any], default_name: str = "") -> dict[str, Any]:
    """Flatten a result.json object (or a W&B summary of the same keys) into a row."""
    trial = result.get("trial") if isinstance(result.get("trial"), dict) else {}
    row = {k: v for k, v in result.items() if k not in ("trial", "provenance")}
    row.update(_trial_fields(trial, default_name))
    status = result.get("status")
    row["status"] = status if status in STATUSES else "missing" if status == "paused" else "failed"
    row["error"] = result.get("error")
    if status == "paused":
        row["error"] = f"paused at step {result.get('prune/step')} until its rung is decided (the sweep resumes it)"
    elif status not in STATUSES:
        row["error"] = f"{RESULT} has no valid status (got {status!r})"
    if row["status"] == "failed" and not row["error"]:
        row["error"] = "failed (no reason given)"
    return row


def missing_row(folder: Path, rel: str = ".") -> dict[str, Any]:
    """A row for a trial folder that has Hydra's overrides but no result.json."""
    overrides = read_overrides(folder / OVERRIDES)
    row = _trial_fields({"overrides": overrides}, folder.name)
    for item in overrides:
        key, _, value = item.lstrip("+~").partition("=")
        if key in ("optimizer", "model", "task"):
            row[key] = value
        elif key in ("optimizer.lr", "seed", "optimizer.momentum"):
            row[key.split(".")[-1]] = _number(value)
    reason = f"no {RESULT} (never finished or still running)"
    return {**row, "dir": rel, "status": "missing", "error": reason}


def read_overrides(path: Path) -> list[str]:
    """Hydra's overrides.yaml is a YAML list of `key=value` strings, one `- item` per line."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    items = [line[2:].strip() for line in lines if line.startswith("- ")]
    return [i[1:-1] if len(i) > 1 and i[0] == i[-1] and i[0] in "'\"" else i for i in items]


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl records; a missing file or a torn last line is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def curves_from_metrics(records: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[float]]:
    """(validation curve [{"step", "accuracy"}], reward per step) from per-step metric records
    (`eval/val_accuracy`; `eval/accuracy` in results from before the validation split)."""
    eval_curve, reward = [], []
    for r in _by_step(records):
        acc = r.get(VAL_ACCURACY_CURVE, r.get("eval/accuracy"))
        if _is_num(acc):
            eval_curve.append({"step": int(r["step"]), "accuracy": float(acc)})
        if _is_num(r.get("train/reward_mean")):
            reward.append(float(r["train/reward_mean"]))
    return eval_curve, reward


SPARSITY_STEP_KEYS = tuple(k.split("/", 1)[1] for k in STEP_SPARSITY)  # "step_changed_fraction_bf16", ...


def sparsity_curve_from_metrics(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """[{"step", <SPARSITY_STEP_KEYS present>}] from the per-step `sparsity/...` records."""
    out = []
    for r in _by_step(records):
        point = {k: float(r[f"sparsity/{k}"]) for k in SPARSITY_STEP_KEYS if _is_num(r.get(f"sparsity/{k}"))}
        if point:
            out.append({"step": int(r["step"]), **point})
    return out


def _by_step(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((r for r in records if _is_num(r.get("step"))), key=lambda r: r["step"])


def _walk(root: Path) -> Iterable[tuple[Path, set[str]]]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in (".hydra", "wandb"))
        yield Path(dirpath), set(filenames)


def _trial_fields(trial: dict[str, Any], default_name: str) -> dict[str, Any]:
    row: dict[str, Any] = {k: trial.get(k) for k in TRIAL_KEYS}
    row["name"] = row["name"] or default_name
    row["overrides"] = list(row["overrides"] or [])
    return row


def _number(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return None if text in ("null", "None") else text


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)
