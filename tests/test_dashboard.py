"""python -m pytest tests/test_dashboard.py -q

The W&B dashboard (harness.dashboard) against a real three-trial sweep of the tiny model (one pruned), logged
to W&B offline: every key a panel names is one the trials really wrote (metrics.jsonl,
result.json, and the offline W&B run's history, summary and config), the workspace and report
objects are built without network, the offline path prints one line, exits 2 and writes
dashboard.json, and the end-of-sweep hook runs it only for online sweeps that asked for it.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from harness import metrics as M
from harness.callbacks import SweepProgress, dashboard_args
from harness.dashboard import layout as L
from harness.dashboard.select import best_lrs, best_names
from harness.dashboard.spec import dashboard_spec, plan
from harness.report.collect import collect, read_metrics

from .conftest import ROOT, run_harness

NO_KEY = {"WANDB_API_KEY": None, "WANDB_MODE": "offline"}


@pytest.fixture(scope="module")
def sweep(cache_dir, tmp_path_factory) -> Path:
    """A real sweep: SGD and AdamW on the tiny model, 2 steps each, W&B offline; and in the same folder
    SGD at lr 1000, pruned as diverged at its first evaluation (its prune/ keys are public too)."""
    d = tmp_path_factory.mktemp("dash") / "dash_sweep"
    p = run_harness("-m", "model=tiny", "optimizer=sgd,adamw", "trainer.steps=2", "trainer.eval_every=1",
                    f"hydra.sweep.dir={d}", "logger.wandb.project=test")
    assert p.returncode == 0, p.stderr[-3000:]
    p = run_harness("-m", "model=tiny", "optimizer=sgd", "optimizer.lr=1000", "prune.val_accuracy_floor=0.05",
                    "trainer.steps=2", "trainer.eval_every=1", f"hydra.sweep.dir={d}", "logger.wandb.project=test")
    assert p.returncode == 0, p.stderr[-3000:]
    assert sorted(json.loads(f.read_text())["status"] for f in d.rglob("result.json")) == ["ok", "ok", "pruned"]
    return d


def _trials(sweep: Path) -> list[Path]:
    return sorted(p.parent for p in sweep.rglob("result.json"))


# --- the offline W&B run file (LevelDB-log framing of protobuf Records, as wandb-core writes it) ---

def wandb_records(run_file: Path):
    from wandb.proto import wandb_internal_pb2 as pb

    block, header = 32768, 7
    data, pos, buf = run_file.read_bytes(), header, b""
    assert data[:4] == b":W&B"
    while pos + header <= len(data):
        left = block - pos % block
        if left < header:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + header])
        if length == 0 and kind == 0:
            pos += left
            continue
        buf += data[pos + header:pos + header + length]
        pos += header + length
        if kind in (1, 4):  # FULL or LAST
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def wandb_keys(trial: Path) -> dict:
    """{"history", "summary", "config"} keys of the trial's offline W&B run (config: dotted paths),
    and "run": its group, job type and name."""
    (run_file,) = trial.glob("wandb/offline-run-*/run-*.wandb")
    out: dict = {"history": set(), "summary": set(), "config": set()}
    for r in wandb_records(run_file):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["run"] = {"Group": r.run.run_group, "JobType": r.run.job_type, "Name": r.run.display_name}
        if kind == "history":
            out["history"] |= {i.key or "/".join(i.nested_key) for i in r.history.item}
        elif kind == "summary":
            out["summary"] |= {i.key or "/".join(i.nested_key) for i in r.summary.update}
        elif kind in ("run", "config"):
            items = r.run.config.update if kind == "run" else r.config.update
            for i in items:
                out["config"] |= _paths(i.key, json.loads(i.value_json))
    return out


def _paths(prefix: str, value) -> set[str]:
    if isinstance(value, dict):
        return {prefix} | {p for k, v in value.items() for p in _paths(f"{prefix}.{k}", v)}
    return {prefix}


# --- tests ---

def test_layout_names_only_public_metrics() -> None:
    keys = L.panel_keys()
    assert keys["curve"] and keys["summary"]
    assert keys["curve"] <= set(M.CURVES), keys["curve"] - set(M.CURVES)
    assert keys["summary"] <= set(M.SUMMARY), keys["summary"] - set(M.SUMMARY)
    for s in L.SECTIONS:
        for p in s.panels:
            assert all((k in M.CURVES) if p.kind == "line" else (k in M.SUMMARY) for k in p.keys), p
    with pytest.raises(KeyError, match="eval/curve"):
        L.line("old name", "eval/curve")  # a name that is not a per-step metric cannot make a panel
    with pytest.raises(KeyError, match="eval/accuracy_best"):
        L.bar("renamed", "eval/accuracy_best")


@pytest.mark.slow  # reads the real sweep of the `sweep` fixture
def test_every_panel_key_is_written_by_a_real_trial(sweep: Path) -> None:
    """Lines name per-step keys: in metrics.jsonl and W&B history. Bars, scatters and the table name
    result keys: in result.json as scalars, and in the W&B summary. Runs are grouped by config keys
    and the job type, and picked by group and run name: the W&B run's are the trial's."""
    keys = L.panel_keys()
    jsonl, result, history, summary, config = set(), {}, set(), set(), set()
    for t in _trials(sweep):
        trial = json.loads((t / "result.json").read_text())["trial"]
        assert wandb_keys(t)["run"] == {"Group": sweep.name, "JobType": trial["optimizer"], "Name": trial["name"]}
        for rec in read_metrics(t / "metrics.jsonl"):
            jsonl |= {k for k, v in rec.items() if v is not None}
        result.update({k: v for k, v in json.loads((t / "result.json").read_text()).items() if v is not None})
        w = wandb_keys(t)
        history |= w["history"]
        summary |= w["summary"]
        config |= w["config"]
    missing = {
        "curves not in metrics.jsonl": sorted(keys["curve"] - jsonl),
        "curves not in W&B history": sorted(keys["curve"] - history),
        "result keys not in result.json": sorted(keys["summary"] - set(result)),
        "result keys that are not scalars": sorted(k for k in keys["summary"] & set(result)
                                                   if isinstance(result[k], (dict, list))),
        "result keys not in the W&B summary": sorted(keys["summary"] - summary),
        "config keys not in the W&B config": sorted(keys["config"] - config),
    }
    assert not any(missing.values()), "; ".join(f"{what}: {', '.join(k)}" for what, k in missing.items() if k)


@pytest.mark.slow  # reads the real sweep of the `sweep` fixture
def test_every_public_metric_is_written_by_the_real_sweep(sweep: Path) -> None:
    """harness/metrics.py against reality: each per-step key has a value in some trial's metrics.jsonl
    (SGD and AdamW between them cover the optimizer-specific ones), each result key is in result.json."""
    jsonl, result = set(), set()
    for t in _trials(sweep):
        for rec in read_metrics(t / "metrics.jsonl"):
            jsonl |= {k for k, v in rec.items() if v is not None}
        result |= set(json.loads((t / "result.json").read_text()))
    assert not set(M.CURVES) - jsonl, sorted(set(M.CURVES) - jsonl)
    assert not set(M.SUMMARY) - result, sorted(set(M.SUMMARY) - result)
    assert all(k.split("/")[0] in ("train", "eval", "mem", "sparsity", "perf", "optim", "rollout") for k in M.CURVES)


def test_best_lr_is_chosen_by_validation_accuracy_not_test() -> None:
    def row(opt, lr, seed, val, test, best=None, momentum=0.0):
        return {"status": "ok", "name": f"{opt}-lr{lr:g}-s{seed}", "optimizer": opt, "lr": lr, "momentum": momentum,
                "model": "m", "task": "t", "seed": seed, M.SELECT_BY: val, M.SELECT_TIEBREAK: best,
                "eval/accuracy_final": test}

    rows = [row("sgd", 0.1, 0, val=0.2, test=0.9), row("sgd", 0.1, 1, val=0.4, test=0.9),   # test says 0.1
            row("sgd", 0.05, 0, val=0.5, test=0.1), row("sgd", 0.05, 1, val=0.3, test=0.1),  # val mean 0.4 > 0.3
            row("adamw", 1e-5, 0, val=0.5, test=0.0, best=0.6, momentum=None),
            row("adamw", 3e-5, 0, val=0.5, test=1.0, best=0.7, momentum=None),  # tie on val: higher val best wins
            row("sgd", 0.01, 0, val=0.3, test=0.3, momentum=0.9), row("sgd", 0.02, 0, val=0.3, test=0.3, momentum=0.9),
            {**row("sgd", 0.5, 0, val=1.0, test=1.0), "status": "failed"}]  # failed trials never count
    best = {b.label(): b for b in best_lrs(rows)}
    assert {k: b.lr for k, b in best.items()} == {"sgd": 0.05, "adamw": 3e-5, "sgd+m0.9": 0.01}  # ties: smaller lr
    assert best["sgd"].score == pytest.approx(0.4) and best["sgd"].n == 2
    assert best_names(rows, best.values()) == ["adamw-lr3e-05-s0", "sgd-lr0.01-s0", "sgd-lr0.05-s0",
                                                          "sgd-lr0.05-s1"]


@pytest.mark.slow  # reads the real sweep of the `sweep` fixture
def test_workspace_and_report_built_without_network(sweep: Path, monkeypatch) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    rows = collect(sweep)
    best, names = plan(rows)
    assert {b.optimizer for b in best} == {"sgd", "adamw"}
    assert set(names) == {r["name"] for r in rows if r["status"] == "ok"}  # one lr each: both trials are best
    spec = dashboard_spec("me", "proj", sweep.name, rows)
    json.dumps(spec)  # JSON-able as written
    best_view, all_view = spec["workspaces"]
    assert [v["displayName"] for v in spec["workspaces"]] == [f"harness: {sweep.name} (best lr per optimizer)",
                                                              f"harness: {sweep.name} (every trial)"]
    for view, runs in ((best_view, "best"), (all_view, "all")):
        sections = view["spec"]["section"]["panelBankConfig"]["sections"]
        expected = [s for s in L.SECTIONS if s.runs == runs]
        assert [s["name"] for s in sections] == [s.name for s in expected]
        for got_s, want_s in zip(sections, expected):
            for got, want in zip(got_s["panels"], want_s.panels, strict=True):
                assert _panel_keys(got) == list(want.keys), (got, want)
        runset = view["spec"]["section"]["runSets"][0]
        filters = {f["key"]["name"]: f["value"] for f in runset["filters"]["filters"]}
        assert filters["group"] == sweep.name
        assert (sorted(filters["displayName"]) == sorted(names)) if runs == "best" else "displayName" not in filters
        assert runset["runFeed"]["columnOrder"][-len(L.TABLE):] == [f"summary:{k}" for k in L.TABLE]
    scatter = next(p for s in all_view["spec"]["section"]["panelBankConfig"]["sections"] for p in s["panels"]
                   if p["viewType"] == "Scatter Plot")
    assert scatter["config"]["xAxis"] == "config:optimizer.value.lr" and scatter["config"]["xAxisLogScale"] is True
    grids = [b for b in spec["report"]["spec"]["blocks"] if b.get("type") == "panel-grid"]
    assert len(grids) == len(L.SECTIONS)
    report_keys = [_panel_keys(p) for g in grids for p in g["metadata"]["panelBankSectionConfig"]["panels"]]
    assert report_keys == [list(p.keys) for s in L.SECTIONS for p in s.panels]


def _panel_keys(panel: dict) -> list[str]:
    c = panel["config"]
    if panel["viewType"] == "Scatter Plot":
        return [c["yAxis"].removeprefix("summary:")]
    return [m.removeprefix("summary_metrics.") for m in c.get("metrics", [])]


def _dashboard(*args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    e = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    return subprocess.run([sys.executable, "-m", "harness.dashboard", *args], cwd=cwd, env=e,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.slow  # reads the real sweep of the `sweep` fixture
def test_offline_cli_says_so_exits_2_and_writes_the_spec(sweep: Path, tmp_path: Path) -> None:
    spec_file = sweep / "dashboard.json"
    spec_file.unlink(missing_ok=True)
    p = _dashboard("me/proj", "--sweep-dir", str(sweep), "--report", env=NO_KEY, cwd=ROOT)
    assert p.returncode == 2, p.stderr
    assert p.stdout == "" and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "offline" in p.stderr and str(spec_file) in p.stderr
    spec = json.loads(spec_file.read_text())
    assert (spec["entity"], spec["project"], spec["group"]) == ("me", "proj", sweep.name)
    assert spec["selected_by"] == M.SELECT_BY and len(spec["workspaces"]) == 2 and spec["report"]["spec"]["blocks"]

    # online mode but no key anywhere (no env key, an empty netrc): decided before any network call
    netrc = tmp_path / "netrc"
    netrc.write_text("")
    spec_file.unlink()
    p = _dashboard("proj", "--sweep-dir", str(sweep), env={"WANDB_API_KEY": None, "WANDB_MODE": None,
                                                             "NETRC": str(netrc), "HOME": str(tmp_path)}, cwd=ROOT)
    assert p.returncode == 2 and "no W&B API key" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert json.loads(spec_file.read_text())["entity"] == ""

    p = _dashboard("me/proj", env=NO_KEY, cwd=tmp_path)  # no sweep folder: nothing to write
    assert p.returncode == 2 and "give --sweep-dir" in p.stderr and not list(tmp_path.glob("dashboard.json"))
    p = _dashboard("me/proj", "--sweep-dir", str(tmp_path / "nope"), env=NO_KEY, cwd=ROOT)
    assert p.returncode == 2 and p.stderr.strip().endswith("no such folder"), p.stderr


def test_network_decision_uses_a_real_connect(monkeypatch, tmp_path: Path) -> None:
    import socket

    from harness.dashboard.online import offline_reason, view_name

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    with socket.create_server(("127.0.0.1", 0)) as server:  # a listening W&B stand-in: reachable
        port = server.getsockname()[1]
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
        assert offline_reason(timeout_s=5) is None
    reason = offline_reason(timeout_s=5)  # the port is closed now
    assert reason is not None and reason.startswith(f"no network: 127.0.0.1:{port} not reachable")
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv("NETRC", str(tmp_path / "absent"))
    assert offline_reason().startswith("no W&B API key")
    (tmp_path / "netrc").write_text("machine 127.0.0.1 login user password " + "k" * 40 + "\n")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert offline_reason(timeout_s=5).startswith("no network")  # a key in netrc counts
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert offline_reason() == "W&B is disabled (WANDB_MODE=disabled)"
    name = view_name("me", "proj", "harness: s (every trial)")
    assert name == view_name("me", "proj", "harness: s (every trial)") != view_name("me", "proj", "harness: t (every trial)")
    assert len(name) == len("nw-") + 11 + len("-v") and name[3:-2].isalnum() and name[3:-2].islower()


def _sweep_config(sweep: Path, *overrides: str):
    from harness.config import register

    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"hydra.sweep.dir={sweep}", *overrides], return_hydra_config=True)


@pytest.mark.slow  # reads the real sweep of the `sweep` fixture
def test_sweep_end_hook_runs_the_dashboard_only_online_when_asked(sweep: Path, monkeypatch, capsys) -> None:
    assert dashboard_args(_sweep_config(sweep), sweep) is None  # default: offline, dashboard=false
    assert dashboard_args(_sweep_config(sweep, "logger.wandb.dashboard=true"), sweep) is None  # offline
    assert dashboard_args(_sweep_config(sweep, "logger.wandb.mode=online"), sweep) is None  # not asked
    assert dashboard_args(_sweep_config(sweep, "logger=none"), sweep) is None
    cfg = _sweep_config(sweep, "logger.wandb.mode=online", "logger.wandb.dashboard=true",
                        "logger.wandb.entity=me", "logger.wandb.project=proj")
    assert dashboard_args(cfg, sweep) == ["me/proj", "--sweep-dir", str(sweep), "--report"]

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    (sweep / "dashboard.json").unlink(missing_ok=True)
    SweepProgress(report=False).on_multirun_end(cfg)
    err = capsys.readouterr().err
    assert "harness.dashboard: W&B is offline" in err, err
    assert json.loads((sweep / "dashboard.json").read_text())["group"] == sweep.name
