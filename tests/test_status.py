"""python -m pytest -q tests/test_status.py

`python -m harness.status SWEEP_DIR` from trial folders alone (no sweep run, no SLURM): how many
trials are ok, failed, not finished, and each failure's reason. A real sweep's status is checked
in tests/test_sweeps.py (slow).
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.status import main, summary


def _trial(root: Path, name: str, result: dict | None) -> None:
    folder = root / name
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(f"- optimizer.lr={name}\n")
    if result is not None:
        (folder / "result.json").write_text(json.dumps(result))


def test_status_counts_the_trial_folders_and_names_the_failures(tmp_path, capsys):
    _trial(tmp_path, "a", {"status": "ok", "trial": {"optimizer": "sgd"}})
    _trial(tmp_path, "b", {"status": "failed", "error": "rank 1 lost: connection reset during all-reduce at step 3"})
    _trial(tmp_path, "c", None)  # started, no result yet
    lines = summary(tmp_path)
    assert lines[0] == f"{tmp_path}: 3 trials: ok 1, failed 1, not finished 1"
    assert "  failed   b: rank 1 lost: connection reset during all-reduce at step 3" in lines
    assert not any(line.lstrip().startswith("ok") for line in lines[1:])
    assert main([str(tmp_path)]) == 0 and capsys.readouterr().out.splitlines()[0] == lines[0]
    assert main([str(tmp_path / "nope")]) == 2 and "is not a folder" in capsys.readouterr().err
