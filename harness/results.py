"""Files a trial writes: result.json (atomically, once at the end) and metrics.jsonl (a line per step)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def _clean(x: Any) -> Any:
    """JSON-safe: NaN/inf become null (JSON has no NaN), tensors and numpy scalars become numbers."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if hasattr(x, "item") and callable(x.item):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """result.json and friends: JSON-safe (NaN -> null), written all or nothing."""
    atomic_write_text(path, json.dumps(_clean(obj), indent=1))


class MetricsFile:
    """Append-only metrics.jsonl; each line is flushed, so a killed trial keeps its steps so far."""

    def __init__(self, path: str | os.PathLike, keep_through_step: int | None = None):
        self.path = Path(path)
        if keep_through_step is not None and self.path.exists():  # resume: keep steps <= the checkpoint step
            lines = [ln for ln in self.path.read_text().splitlines()
                     if ln.strip() and json.loads(ln).get("step", 0) <= keep_through_step]
            atomic_write_text(self.path, "".join(ln + "\n" for ln in lines))
        elif keep_through_step is None:
            self.path.unlink(missing_ok=True)
        self._f = self.path.open("a", encoding="utf-8")

    def write(self, row: dict) -> None:
        self._f.write(json.dumps(_clean(row)) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write to a temp file in the same folder, fsync, then rename over `path`: all or nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_result(path: str | os.PathLike) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
