"""The layout (harness.dashboard.layout) as wandb-workspaces objects: two workspace views and a report.

Builds objects only; nothing here touches the network except `report(..., resolve=True)`'s
runsets, whose serialisation looks the project up (so the offline spec is built with resolve=False).

Runs are picked by top-level run fields, which W&B filters reliably: the group (the sweep's
name) and, for the best-lr sections, the run names (`sgd-lr0.05-s0`: result.json's trial.name) of
the trials at each optimizer's best lr. Lines and bars group runs by optimizer (the run's job
type), objective and momentum (config), so seeds become a mean with a std band.
"""

from __future__ import annotations

from typing import Optional, Sequence

from . import layout as L
from .select import Best


def _libs():
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces import expr

    return ws, wr, expr


def runs_filter(group: Optional[str], names: Optional[Sequence[str]] = None):
    """Runs of the group (all groups when None), optionally only those with these run names."""
    _, _, expr = _libs()
    clauses = []
    if group:
        clauses.append(expr.Metric("Group") == group)
    if names is not None:
        clauses.append(expr.Metric("Name").isin(sorted(set(names))))
    return clauses  # a list of FilterExpr is AND'd


def panel(p: L.Panel):
    """One layout panel as a wandb-workspaces panel."""
    _, wr, _ = _libs()
    return _PANELS[p.kind](wr, p)


_PANELS = {
    "line": lambda wr, p: wr.LinePlot(title=p.title, x=p.x, y=list(p.keys), groupby_aggfunc="mean",
                                      groupby_rangefunc="stddev"),
    "bar": lambda wr, p: wr.BarPlot(title=p.title, metrics=[wr.SummaryMetric(k) for k in p.keys],
                                    groupby_aggfunc="mean", groupby_rangefunc="stddev"),
    "scatter": lambda wr, p: wr.ScatterPlot(title=p.title, x=wr.Config(p.x), y=wr.SummaryMetric(p.keys[0]),
                                            log_x=p.log_x),
    "compare": lambda wr, p: wr.RunComparer(diff_only="split"),
}


def table_columns() -> list[str]:
    """The runs table: name, optimizer (job type), objective, momentum, lr, seed, then the public result keys."""
    config = [f"config:{k.split('.', 1)[0]}.value.{k.split('.', 1)[1]}" for k in (L.OBJECTIVE, L.MOMENTUM, L.LR)]
    return ["run:displayName", "run:jobType", *config, "config:seed.value", *(f"summary:{k}" for k in L.TABLE)]


def _group_expr(key: str):
    _, _, expr = _libs()
    return expr.Metric(key) if key in L.RUN_ATTRIBUTES else expr.Config(key)


def _group_str(key: str) -> str:
    return key if key in L.RUN_ATTRIBUTES else f"config.{key}"


def title(group: Optional[str]) -> str:
    return f"harness: {group}" if group else "harness: all sweeps"


def workspaces(entity: str, project: str, group: Optional[str], names: Sequence[str],
               sections: Sequence[L.Section] = L.SECTIONS) -> list:
    """Two saved views: the best-lr sections (runs filtered to `names`) and the every-trial sections."""
    ws, _, _ = _libs()
    views = []
    for runs, suffix, groupby, picked in (("best", "best lr per optimizer", L.VARIANT_GROUPBY, names),
                                          ("all", "every trial", L.ALL_GROUPBY, None)):
        secs = [ws.Section(name=s.name, panels=[panel(p) for p in s.panels], is_open=True)
                for s in sections if s.runs == runs]
        views.append(ws.Workspace(
            entity=entity, project=project, name=f"{title(group)} ({suffix})", sections=secs,
            settings=ws.WorkspaceSettings(x_axis="Step", max_runs=100),
            runset_settings=ws.RunsetSettings(filters=runs_filter(group, picked),
                                              groupby=[_group_expr(k) for k in groupby],
                                              pinned_columns=table_columns())))
    return views


def report(entity: str, project: str, group: Optional[str], best: Sequence[Best], names: Sequence[str],
           sections: Sequence[L.Section] = L.SECTIONS, resolve: bool = True):
    """The saved report: a heading per section, each a panel grid over its runs (best lr or all).
    resolve=False leaves the runsets' project to the report's (no project lookup: offline)."""
    _, wr, _ = _libs()
    where = dict(entity=entity, project=project) if resolve else {}
    chosen = ", ".join(f"{b.label()} lr {b.lr:g} ({_score(b)}, {b.n} seed{'s' * (b.n != 1)})" for b in best)
    blocks: list = [wr.P(text=f"Best lr per optimizer, by validation accuracy (eval/val_accuracy_final, mean over "
                              f"seeds): {chosen or 'none finished'}. Built by python -m harness.dashboard.")]
    for s in sections:
        picked = names if s.runs == "best" else None
        groupby = L.VARIANT_GROUPBY if s.runs == "best" else L.ALL_GROUPBY
        runset = wr.Runset(**where, name="best lr" if picked is not None else "every trial",
                           filters=runs_filter(group, picked), groupby=[_group_str(k) for k in groupby],
                           pinned_columns=table_columns() if s.runs == "all" else [])
        blocks += [wr.H2(text=s.name), wr.PanelGrid(runsets=[runset], panels=[panel(p) for p in s.panels])]
    return wr.Report(entity=entity, project=project, title=title(group), width="fluid",
                     description="SGD vs AdamW in RLVR: accuracy, memory, sparsity and time, from the harness's sweep.",
                     blocks=blocks)


def _score(b: Best) -> str:
    return "val n/a" if b.score is None else f"val {b.score:.3f}"

