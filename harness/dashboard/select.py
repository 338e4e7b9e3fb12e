"""Each optimizer's best lr, chosen by validation accuracy (never by test accuracy).

Rows are harness.report rows (harness.report.collect for a sweep folder, row_from_wandb for W&B
runs). A variant is (model, task, objective, optimizer, momentum), the objective being the trial's
`trainer.objective` (grpo for results from before it existed); its best lr has the highest mean over
seeds of metrics.SELECT_BY (eval/val_accuracy_final), then of SELECT_TIEBREAK, then the smaller lr.
Only rows with status "ok" count.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Iterable, Optional

from harness.metrics import SELECT_BY, SELECT_TIEBREAK
from harness.report.compare import DEFAULT_OBJECTIVE, objective_of


@dataclass(frozen=True)
class Best:
    model: Any
    task: Any
    optimizer: str
    momentum: Optional[float]
    lr: float
    score: Optional[float]  # mean SELECT_BY over the seeds at this lr (None: no trial reported it)
    n: int  # seeds at this lr
    objective: str = DEFAULT_OBJECTIVE  # trainer.objective: grpo, rloo, sft

    def label(self) -> str:
        """"sgd", "sgd+m0.9", "adamw" (as in the report); other objectives than grpo go first: "sft sgd"."""
        label = f"{self.optimizer}+m{self.momentum:g}" if self.momentum else str(self.optimizer)
        return label if self.objective == DEFAULT_OBJECTIVE else f"{self.objective} {label}"


def _key(r: dict[str, Any]) -> Optional[tuple]:
    """(model, task, objective, optimizer, momentum, lr) of an ok row, else None."""
    if r.get("status") != "ok" or _num(r.get("lr")) is None or not r.get("optimizer"):
        return None
    return (r.get("model"), r.get("task"), objective_of(r), r["optimizer"], _num(r.get("momentum")), float(r["lr"]))


def best_lrs(rows: Iterable[dict[str, Any]]) -> list[Best]:
    """The best lr of every variant among the ok rows, sorted by (model, task, objective, optimizer, momentum)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        key = _key(r)
        if key is not None:
            groups.setdefault(key, []).append(r)
    winners: dict[tuple, tuple[tuple, Best]] = {}
    for (model, task, objective, opt, momentum, lr), members in groups.items():
        score, tiebreak = _mean(members, SELECT_BY), _mean(members, SELECT_TIEBREAK)
        rank = (_or_neg_inf(score), _or_neg_inf(tiebreak), -lr)
        variant = (model, task, objective, opt, momentum)
        if variant not in winners or rank > winners[variant][0]:
            winners[variant] = (rank, Best(model, task, opt, momentum, lr, score, len(members), objective))
    return [b for _, (_, b) in sorted(winners.items(), key=lambda kv: tuple(str(x) for x in kv[0]))]


def best_names(rows: Iterable[dict[str, Any]], best: Iterable[Best]) -> list[str]:
    """The run names (W&B display names, `sgd-lr0.05-s0`) of the ok trials at each variant's best lr."""
    chosen = {(b.model, b.task, b.objective, b.optimizer, b.momentum, b.lr) for b in best}
    return sorted({str(r["name"]) for r in rows if r.get("name") and _key(r) in chosen})


def _mean(rows: list[dict], key: str) -> Optional[float]:
    xs = [x for x in (_num(r.get(key)) for r in rows) if x is not None and math.isfinite(x)]
    return statistics.fmean(xs) if xs else None


def _or_neg_inf(x: Optional[float]) -> float:
    return -math.inf if x is None else x


def _num(x: Any) -> Optional[float]:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None
