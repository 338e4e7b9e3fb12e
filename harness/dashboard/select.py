"""Each optimizer's best lr, chosen by validation accuracy (never by test accuracy).

Rows are harness.report rows (harness.report.collect for a sweep folder, row_from_wandb for W&B
runs). A variant is (model, task, optimizer, momentum); its best lr has the highest mean over seeds
of metrics.SELECT_BY (eval/val_accuracy_final), then of SELECT_TIEBREAK, then the smaller lr.
Only rows with status "ok" count.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Iterable, Optional

from harness.metrics import SELECT_BY, SELECT_TIEBREAK


@dataclass(frozen=True)
class Best:
    model: Any
    task: Any
    optimizer: str
    momentum: Optional[float]
    lr: float
    score: Optional[float]  # mean SELECT_BY over the seeds at this lr (None: no trial reported it)
    n: int  # seeds at this lr

    def label(self) -> str:
        """"sgd", "sgd+m0.9", "adamw" (as in the report)."""
        return f"{self.optimizer}+m{self.momentum:g}" if self.momentum else str(self.optimizer)


def _key(r: dict[str, Any]) -> Optional[tuple]:
    """(model, task, optimizer, momentum, lr) of an ok row, else None."""
    if r.get("status") != "ok" or _num(r.get("lr")) is None or not r.get("optimizer"):
        return None
    return (r.get("model"), r.get("task"), r["optimizer"], _num(r.get("momentum")), float(r["lr"]))


def best_lrs(rows: Iterable[dict[str, Any]]) -> list[Best]:
    """The best lr of every variant among the ok rows, sorted by (model, task, optimizer, momentum)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        key = _key(r)
        if key is not None:
            groups.setdefault(key, []).append(r)
    winners: dict[tuple, tuple[tuple, Best]] = {}
    for (model, task, opt, momentum, lr), members in groups.items():
        score, tiebreak = _mean(members, SELECT_BY), _mean(members, SELECT_TIEBREAK)
        rank = (_or_neg_inf(score), _or_neg_inf(tiebreak), -lr)
        variant = (model, task, opt, momentum)
        if variant not in winners or rank > winners[variant][0]:
            winners[variant] = (rank, Best(model, task, opt, momentum, lr, score, len(members)))
    return [b for _, (_, b) in sorted(winners.items(), key=lambda kv: tuple(str(x) for x in kv[0]))]


def best_names(rows: Iterable[dict[str, Any]], best: Iterable[Best]) -> list[str]:
    """The run names (W&B display names, `sgd-lr0.05-s0`) of the ok trials at each variant's best lr."""
    chosen = {(b.model, b.task, b.optimizer, b.momentum, b.lr) for b in best}
    return sorted({str(r["name"]) for r in rows if r.get("name") and _key(r) in chosen})


def _mean(rows: list[dict], key: str) -> Optional[float]:
    xs = [x for x in (_num(r.get(key)) for r in rows) if x is not None and math.isfinite(x)]
    return statistics.fmean(xs) if xs else None


def _or_neg_inf(x: Optional[float]) -> float:
    return -math.inf if x is None else x


def _num(x: Any) -> Optional[float]:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None
