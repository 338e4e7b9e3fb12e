"""Report rows from W&B runs instead of trial folders (needs network and a W&B login).

    python -m harness.report --wandb ENTITY/PROJECT --group NAME [--out DIR]

Each run's summary holds result.json's flat keys ("status", "eval/accuracy_final", "trial",
"sparsity/by_kind", ...; nested values stay nested) and run.config the resolved Hydra config.
row_from_wandb is the pure conversion (tested offline); fetch_rows is the thin API wrapper.
"""

from __future__ import annotations

from typing import Any, Iterable

from .collect import SPARSITY_STEP_KEYS, STATUSES, TRIAL_KEYS, curves_from_metrics, row_from_result, sparsity_curve_from_metrics

NESTED_PREFIXES = ("trial/", "sparsity/by_kind/")  # in case a logger flattened these with "/"


def row_from_wandb(
    summary: dict[str, Any],
    config: dict[str, Any],
    name: str,
    state: str,
    history: Iterable[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One report row from a W&B run's summary, config, name and state ("finished", "failed",
    "crashed", "killed", "running"). history: optional per-step records (metrics.jsonl keys, or
    W&B's "_step"): the curves when the summary has none, and the per-step sparsity curve. Trial fields missing from the summary are
    taken from the config (optimizer.name/lr/momentum, model.name, task.name, seed, trainer.objective)."""
    summary = _unflatten(dict(summary))
    status = summary.get("status")
    if status not in STATUSES:
        summary["status"] = "ok" if state == "finished" else "failed"
        summary["error"] = None if state == "finished" else f"W&B run {state} without a result"
    row = row_from_result(summary, default_name=name)
    if status not in STATUSES and state == "running":
        row.update(status="missing", error="W&B run still running (no result yet)")
    for key, value in _trial_from_config(_unwrap(config)).items():
        if row.get(key) is None:
            row[key] = value
    row["dir"] = f"wandb:{name}"
    if isinstance(row.get("eval/curve"), list) and not isinstance(row.get("eval/val_curve"), list):
        row["eval/val_curve"] = row["eval/curve"]  # a run from before the validation split
    records = [{**r, "step": r.get("step", r.get("_step"))} for r in history or []]
    row["sparsity/step_curve"] = sparsity_curve_from_metrics(records)
    if not isinstance(row.get("eval/val_curve"), list) or not isinstance(row.get("train/reward_curve"), list):
        eval_curve, reward_curve = curves_from_metrics(records)
        for key, curve in (("eval/val_curve", eval_curve), ("train/reward_curve", reward_curve)):
            if not isinstance(row.get(key), list):
                row[key] = curve
    return row


def fetch_rows(path: str, group: str) -> list[dict[str, Any]]:
    """Rows of every run in W&B project path ("entity/project") whose group is `group`."""
    import wandb

    rows = []
    for run in wandb.Api().runs(path, filters={"group": group}):
        summary = getattr(run.summary, "_json_dict", None) or dict(run.summary)
        history = [*run.scan_history(keys=["_step", "eval/val_accuracy"]), *run.scan_history(keys=["_step", "train/reward_mean"]),
                   *run.scan_history(keys=["_step", *(f"sparsity/{k}" for k in SPARSITY_STEP_KEYS)])]
        rows.append(row_from_wandb(summary, dict(run.config), run.name, run.state, history))
    return sorted(rows, key=lambda r: str(r["name"]))


def _trial_from_config(cfg: dict[str, Any]) -> dict[str, Any]:
    opt = cfg.get("optimizer") if isinstance(cfg.get("optimizer"), dict) else {}
    opt_name = opt.get("name") or str(opt.get("_target_", "")).rsplit(".", 1)[-1].lower() or None
    model, task = cfg.get("model"), cfg.get("task")
    trainer = cfg.get("trainer") if isinstance(cfg.get("trainer"), dict) else {}
    return {
        "optimizer": opt_name,
        "lr": opt.get("lr"),
        "momentum": opt.get("momentum"),
        "model": model.get("name") if isinstance(model, dict) else model,
        "task": task.get("name") if isinstance(task, dict) else task,
        "seed": cfg.get("seed"),
        "objective": trainer.get("objective"),
    }


def _unwrap(cfg: Any) -> Any:
    """Old W&B configs wrap each value as {"value": v, "desc": ...}; drop W&B's own "_wandb" key."""
    if isinstance(cfg, dict):
        if set(cfg) <= {"value", "desc"} and "value" in cfg:
            return _unwrap(cfg["value"])
        return {k: _unwrap(v) for k, v in cfg.items() if k != "_wandb"}
    return cfg


def _unflatten(summary: dict[str, Any]) -> dict[str, Any]:
    """Gather "trial/optimizer" into summary["trial"]["optimizer"] and "sparsity/by_kind/mlp/x"
    into summary["sparsity/by_kind"]["mlp"]["x"], unless the nested value is already there."""
    for prefix in NESTED_PREFIXES:
        head = prefix.rstrip("/")
        flat = {k[len(prefix):]: summary.pop(k) for k in [k for k in summary if k.startswith(prefix)]}
        if not flat or isinstance(summary.get(head), dict):
            continue
        nested: dict[str, Any] = {}
        for key, value in flat.items():
            node = nested
            *parents, leaf = key.split("/")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
        summary[head] = nested
    if isinstance(summary.get("trial"), dict):
        summary["trial"] = {k: v for k, v in summary["trial"].items() if k in TRIAL_KEYS}
    return summary
