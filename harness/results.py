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
    """Write to a temp file in the same folder, fsync, then rename over `path`: all or nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(_clean(obj), f, indent=1, sort_keys=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class MetricsFile:
    """Append-only metrics.jsonl; each line is flushed, so a killed trial keeps its steps so far."""

    def __init__(self, path: str | os.PathLike, keep_steps_below: int | None = None):
        self.path = Path(path)
        if keep_steps_below is not None and self.path.exists():  # resume: drop steps after the checkpoint
            lines = [ln for ln in self.path.read_text().splitlines()
                     if ln.strip() and json.loads(ln).get("step", 0) <= keep_steps_below]
            atomic_write_text(self.path, "".join(ln + "\n" for ln in lines))
        elif keep_steps_below is None:
            self.path.unlink(missing_ok=True)
        self._f = self.path.open("a", encoding="utf-8")

    def write(self, row: dict) -> None:
        self._f.write(json.dumps(_clean(row)) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def read_result(path: str | os.PathLike) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
