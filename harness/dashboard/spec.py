"""The dashboard as one JSON-able dict: the chosen best lrs, the layout, and the exact W&B specs.

`dashboard.json` (written into the sweep folder when the dashboard cannot be saved) holds:
    entity, project, group          where it would be saved
    selected_by, best, best_runs    each optimizer's best lr (by validation accuracy) and its run names
    layout, table                   sections of panels (kind, title, metric keys) and the runs table's keys
    workspaces                      the two workspace views, as wandb-workspaces serialises them for W&B
    report                          the report's spec (its runsets left to the report's own project)
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Optional, Sequence

from harness.metrics import SELECT_BY

from . import build
from . import layout as L
from .select import best_lrs, best_names


def plan(rows: Sequence[dict[str, Any]]) -> tuple[list, list[str]]:
    """(best lr per variant, run names of the trials at those lrs)."""
    best = best_lrs(rows)
    return best, best_names(rows, best)


def to_json(model: Any) -> Any:
    """A wandb-workspaces backend model as W&B receives it (camelCase, no nulls)."""
    return json.loads(model.model_dump_json(by_alias=True, exclude_none=True))


def dashboard_spec(entity: str, project: str, group: Optional[str], rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Everything `python -m harness.dashboard` would save, built without network."""
    best, names = plan(rows)
    return {
        "entity": entity, "project": project, "group": group,
        "selected_by": SELECT_BY,
        "best": [dataclasses.asdict(b) | {"label": b.label()} for b in best],
        "best_runs": names,
        "layout": [dataclasses.asdict(s) for s in L.SECTIONS],
        "table": list(L.TABLE),
        "workspaces": [to_json(w._to_model()) for w in build.workspaces(entity, project, group, names)],
        "report": to_json(build.report(entity, project, group, best, names, resolve=False)._to_model()),
    }
