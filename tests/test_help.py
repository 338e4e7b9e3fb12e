"""python -m pytest -q tests/test_help.py

`python -m harness --help` names the harness, lists the config groups a user picks from (those of
conf/config.yaml's defaults list, each with every file in conf/GROUP/) and points to docs/.
"""

from __future__ import annotations

import re

import yaml

from tests.conftest import ROOT, run_harness


def _user_groups() -> dict[str, set[str]]:
    """group -> options, from conf/config.yaml's defaults list and the files in conf/GROUP/."""
    defaults = yaml.safe_load((ROOT / "conf" / "config.yaml").read_text())["defaults"]
    groups = [next(iter(d)) for d in defaults if isinstance(d, dict) and not next(iter(d)).startswith("override ")]
    return {g: {f.stem for f in (ROOT / "conf" / g).glob("*.yaml")} for g in groups}


def test_help_names_the_harness_lists_the_user_groups_and_points_to_the_docs():
    p = run_harness("--help", timeout=120)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert out.startswith("harness: "), out[:200]
    assert "powered by Hydra" not in out and "__main__" not in out
    section = out.split("== Config groups (group=option) ==\n", 1)[1].split("\n\n", 1)[0]
    listed = {}
    for line in section.splitlines():
        m = re.fullmatch(r"(\S+): (.+?)   \(picked: (\S+)\)", line)
        assert m, f"not a group line: {line!r}"
        listed[m.group(1)] = set(m.group(2).split(", "))
    expected = _user_groups()
    assert set(expected) >= {"model", "task", "optimizer", "trainer", "rollout", "logger", "distributed"}
    assert listed == expected  # every user group with all its options; no `base`, no `schema`
    assert "docs/" in out
    assert "optimizer:\n  _target_: torch.optim.SGD" in out  # the composed config follows, overridable key by key


def test_help_reflects_overrides():
    p = run_harness("--help", "optimizer=adamw", timeout=120)
    assert p.returncode == 0, p.stderr
    assert re.search(r"^optimizer: .*\(picked: adamw\)$", p.stdout, re.M)
