"""The Optuna study of a search sweep (harness/sweepers/optuna.py) as a report section.

    python -m harness.report.study multirun/search_sgd     # prints the section, writes study_lr.png

study_section(sweep_dir) reads the study named in the sweep's multirun.yaml (hydra.sweeper.storage
and study_name; by default sqlite <sweep dir>/study.db and the folder's name) and returns markdown:
trial counts, the best trials per optimizer, and study_lr.png (the objective vs learning rate of
every sampled trial, log x, one colour per optimizer, failed trials as x on the bottom edge, pruned
ones as open triangles at the running value where they stopped, the best of each optimizer
circled). None when the sweep folder has no study.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

from harness.prune.optuna_link import storage_for

TOP = 3  # best trials listed per optimizer
PLOT = "study_lr.png"


def study_section(sweep_dir: str | Path, out_dir: str | Path | None = None) -> Optional[str]:
    """Markdown for the sweep's study (and study_lr.png written into out_dir or sweep_dir), or None."""
    sweep = Path(sweep_dir)
    found = _locate(sweep)
    if found is None:
        return None
    storage, names = found
    import optuna

    parts = []
    all_rows: list[dict] = []
    objective = "objective"
    for name in names:
        study = optuna.load_study(study_name=name, storage=storage_for(storage))
        objective = study.user_attrs.get("objective", objective)
        rows = study_rows(study, sweep)
        for r in rows:
            r["maximize"] = study.direction.name == "MAXIMIZE"
        all_rows += rows
        parts.append(_study_block(study, rows, objective, storage))
    if not parts:
        return None
    plot = _write_plot(all_rows, objective, Path(out_dir or sweep))
    if plot is not None:
        parts.append(f"![study_lr]({plot.name})")
    return "## Optuna search\n\n" + "\n\n".join(parts)


def _locate(sweep: Path) -> Optional[tuple[str, list[str]]]:
    """(storage URL or journal file, study names) for the sweep folder, from its multirun.yaml or study.db."""
    storage, name = None, None
    cfg_file = sweep / "multirun.yaml"
    if cfg_file.is_file():
        from omegaconf import OmegaConf

        try:
            sw = OmegaConf.load(cfg_file).hydra.sweeper
            if str(sw.get("_target_", "")).endswith("OptunaSweeper"):
                storage, name = sw.get("storage"), sw.get("study_name")
        except Exception:  # noqa: BLE001 - a hand-edited or foreign multirun.yaml: fall back to study.db
            pass
    if storage is None:
        if not (sweep / "study.db").is_file():
            return None
        storage = f"sqlite:///{(sweep / 'study.db').absolute()}"
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        available = optuna.get_all_study_names(storage_for(storage))
    except Exception:  # noqa: BLE001 - optuna not installed, an unreachable database, a file that is not a study
        return None
    wanted = name or sweep.absolute().name
    names = [wanted] if wanted in available else (available if (sweep / "study.db").is_file() else [])
    return (storage, names) if names else None


def study_rows(study: Any, sweep: Path) -> list[dict]:
    """One dict per trial: number, state, value, params, dir, error, optimizer, lr, momentum."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        info = _trial_info(sweep / t.user_attrs["dir"]) if t.user_attrs.get("dir") else {}
        lr_key = next((k for k in t.params if k.split(".")[-1] == "lr"), None)
        mom_key = next((k for k in t.params if k.split(".")[-1] == "momentum"), None)
        rows.append({
            "number": t.number, "state": t.state.name, "value": t.value, "params": dict(t.params),
            "dir": t.user_attrs.get("dir"), "error": t.user_attrs.get("error"),
            "optimizer": t.params.get("optimizer") or info.get("optimizer") or "?",
            "lr": t.params[lr_key] if lr_key else info.get("lr"),
            "momentum": t.params[mom_key] if mom_key else info.get("momentum"),
        })
    return rows


def _trial_info(folder: Path) -> dict:
    try:
        info = json.loads((folder / "result.json").read_text()).get("trial")
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError, AttributeError):
        return {}


def _study_block(study: Any, rows: list[dict], objective: str, storage: str) -> str:
    counts = {s: sum(r["state"] == s for r in rows) for s in ("COMPLETE", "FAIL", "PRUNED", "RUNNING")}
    where = (Path(storage[len("sqlite:///"):]).name if storage.startswith("sqlite:///")
             else Path(storage).name if "://" not in storage else "a database")
    pruned = f"{counts['PRUNED']} pruned, " if counts["PRUNED"] else ""
    head = (f"Study `{study.study_name}` ({where}): {len(rows)} trials, {counts['COMPLETE']} complete, "
            f"{counts['FAIL']} failed, {pruned}{counts['RUNNING']} running; objective {objective} "
            f"({study.direction.name.lower()}). Best {TOP} trials per optimizer:")
    sign = -1 if study.direction.name == "MAXIMIZE" else 1
    other = sorted({k for r in rows for k in r["params"] if k.split(".")[-1] not in ("lr", "momentum", "optimizer")})
    lines = [f"| optimizer | rank | trial | {objective} | lr | momentum | {' | '.join(other) + ' | ' if other else ''}folder |",
             "| --- " * (6 + len(other)) + "| --- |"]
    for opt in sorted({r["optimizer"] for r in rows}):
        done = sorted((r for r in rows if r["optimizer"] == opt and r["state"] == "COMPLETE"),
                      key=lambda r: (sign * r["value"], r["number"]))
        for rank, r in enumerate(done[:TOP], 1):
            cells = [opt, str(rank), str(r["number"]), f"{r['value']:.4g}", _fmt(r["lr"]), _fmt(r["momentum"]),
                     *(_fmt(r["params"].get(k)) for k in other), f"`{r['dir']}`"]
            lines.append("| " + " | ".join(cells) + " |")
    if len(lines) == 2:
        return head + "\n\nNo complete trials."
    return head + "\n\n" + "\n".join(lines)


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def _write_plot(rows: list[dict], objective: str, out: Path) -> Optional[Path]:
    pts = [r for r in rows if isinstance(r["lr"], (int, float)) and r["lr"] > 0 and r["state"] in ("COMPLETE", "FAIL", "PRUNED")]
    if not pts:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    ok = [r for r in pts if r["state"] == "COMPLETE" and r["value"] is not None and math.isfinite(r["value"])]
    lo = min((r["value"] for r in ok), default=0.0)
    hi = max((r["value"] for r in ok), default=1.0)
    floor = lo - 0.05 * ((hi - lo) or 1.0)
    for i, opt in enumerate(sorted({r["optimizer"] for r in pts})):
        color = f"C{i}"
        mine = [r for r in ok if r["optimizer"] == opt]
        for mom in sorted({r["momentum"] or 0.0 for r in mine}):
            sel = [r for r in mine if (r["momentum"] or 0.0) == mom]
            label = opt if not mom else f"{opt} momentum {mom:g}"
            ax.scatter([r["lr"] for r in sel], [r["value"] for r in sel], color=color, alpha=0.8,
                       marker="o" if not mom else "^", label=label)
        failed = [r for r in pts if r["optimizer"] == opt and r["state"] == "FAIL"]
        if failed:
            ax.scatter([r["lr"] for r in failed], [floor] * len(failed), color=color, marker="x",
                       label=f"{opt} failed")
        pruned = [r for r in pts if r["optimizer"] == opt and r["state"] == "PRUNED" and r["value"] is not None]
        if pruned:  # at the running value where they stopped (harness.prune)
            ax.scatter([r["lr"] for r in pruned], [r["value"] for r in pruned], facecolors="none", edgecolors=color,
                       marker="v", label=f"{opt} pruned (value where it stopped)")
        if mine:
            best = max(mine, key=lambda r: r["value"] if r.get("maximize", True) else -r["value"])
            ax.scatter([best["lr"]], [best["value"]], s=220, facecolors="none", edgecolors=color, linewidths=1.5)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(objective)
    ax.set_title("Optuna search: every sampled trial (x = failed, v = pruned)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    FigureCanvasAgg(fig)
    path = out / PLOT
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


if __name__ == "__main__":
    import sys

    section = study_section(sys.argv[1])
    print(section if section is not None else f"no Optuna study in {sys.argv[1]}")
