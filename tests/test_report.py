"""python -m pytest tests/test_report.py -q

The sweep report on a hand-made sweep folder (real files, no mocks), its CLI, and the W&B row
conversion on a dict shaped like a W&B summary.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.report import build_report, collect, write_report
from harness.report.tables import aggregate, best_lr, sig3
from harness.report.wandb_source import row_from_wandb

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def result(optimizer: str, lr: float, seed: int, final: float, momentum: float | None = 0.0, **extra) -> dict:
    adam = optimizer == "adamw"
    frac = 0.09 if adam else 0.0002  # fraction of weights changed (bf16)
    out = {
        "status": "ok",
        "error": None,
        "trial": {
            "name": f"{optimizer}-lr{lr:g}-s{seed}", "optimizer": optimizer, "lr": lr,
            "momentum": None if adam else momentum, "model": "smollm2-135m", "task": "arithmetic",
            "seed": seed, "overrides": [f"optimizer={optimizer}", f"optimizer.lr={lr}", f"seed={seed}"],
            "slurm_job_id": None,
        },
        "eval/accuracy_initial": 0.2,
        "eval/accuracy_final": final,
        "eval/accuracy_best": final + 0.05,
        "eval/curve": [{"step": 0, "accuracy": 0.2}, {"step": 5, "accuracy": (0.2 + final) / 2}, {"step": 10, "accuracy": final}],
        "train/reward_curve": [0.1 * i for i in range(10)],
        "train/steps_done": 10,
        "train/steps_skipped": 0,
        "mem/optimizer_state_bytes": 1_080_000_000 if adam else 0,
        "mem/param_bytes": 540_000_000,
        "mem/grad_bytes": 540_000_000,
        "mem/peak_bytes": 3_500_000_000 if adam else 2_250_000_000,
        "mem/peak_bytes_rollout": 1_000_000_000,
        "mem/peak_bytes_update": 2_000_000_000,
        "mem/peak_kind": "cpu_rss",
        "sparsity/changed_fraction_bf16": frac,
        "sparsity/changed_fraction_fp32": frac * 10,
        "sparsity/changed_fraction_tol1e-5": frac / 2,
        "sparsity/by_kind": {
            "embed": {"changed_fraction_bf16": 0.0, "changed_fraction_fp32": 0.0, "changed_fraction_tol1e-5": 0.0, "numel": 100},
            "attention": {"changed_fraction_bf16": frac, "changed_fraction_fp32": frac, "changed_fraction_tol1e-5": frac, "numel": 400},
            "mlp": {"changed_fraction_bf16": frac * 2, "changed_fraction_fp32": frac, "changed_fraction_tol1e-5": frac, "numel": 800},
        },
        "sparsity/update_rank_mean": 80.0 if adam else 20.0 + seed,
        "sparsity/update_rank_fraction_mean": 0.5,
        "perf/step_s_mean": 2.0 + seed,
        "perf/rollout_s_mean": 1.5,
        "perf/update_s_mean": 0.5,
        "perf/total_s": 30.0,
        "params/trainable": 134_515_008,
        "provenance": {"git": "abc"},
    }
    out.update(extra)
    return out


def write_trial(folder: Path, res: dict | str | None) -> None:
    folder.mkdir(parents=True)
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "overrides.yaml").write_text("- optimizer=sgd\n- optimizer.lr=0.2\n- seed=3\n")
    if res is not None:
        (folder / "result.json").write_text(res if isinstance(res, str) else json.dumps(res))
        (folder / "metrics.jsonl").write_text(json.dumps({"step": 0, "train/reward_mean": 0.1, "train/loss": 0.0}) + "\n")


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "multirun" / "2026-01-01" / "12-00-00"
    write_trial(root / "0", result("sgd", 0.05, 0, 0.5))
    write_trial(root / "1", result("sgd", 0.05, 1, 0.7))
    write_trial(root / "2", result("adamw", 1e-5, 0, 0.4))
    write_trial(root / "3", result("adamw", 1e-5, 1, 0.4))
    write_trial(root / "4", result("sgd", 0.1, 0, 0.3))
    failed = result("sgd", 1.0, 0, 0.0, status="failed", error="NaN loss at step 1")
    failed.update({"eval/accuracy_final": None, "eval/accuracy_best": None})
    write_trial(root / "5", failed)
    write_trial(root / "6", None)  # never finished
    write_trial(root / "7", '{"status": "ok", "trial": ')  # torn / corrupt
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def read_csv(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    with path.open() as f:
        return {(r["optimizer"], r["lr"]): r for r in csv.DictReader(f)}


def test_collect_rows(sweep: Path) -> None:
    rows = {r["dir"]: r for r in collect(sweep)}
    assert len(rows) == 8
    assert [rows[d]["status"] for d in "01234"] == ["ok"] * 5
    assert rows["5"]["status"] == "failed" and rows["5"]["error"] == "NaN loss at step 1"
    assert rows["6"]["status"] == "missing" and rows["6"]["lr"] == 0.2 and rows["6"]["seed"] == 3
    assert rows["7"]["status"] == "failed" and rows["7"]["error"].startswith("unreadable result.json: ")
    assert rows["0"]["optimizer"] == "sgd" and rows["0"]["model"] == "smollm2-135m" and "provenance" not in rows["0"]


def test_curves_fall_back_to_metrics_jsonl(tmp_path: Path) -> None:
    write_trial(tmp_path / "t", result("sgd", 0.05, 0, 0.5, **{"eval/curve": [], "train/reward_curve": []}))
    lines = [{"step": 0, "train/reward_mean": 0.25, "eval/accuracy": 0.2}, {"step": 1, "train/reward_mean": 0.5}]
    (tmp_path / "t" / "metrics.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n{torn")
    (row,) = collect(tmp_path)
    assert row["train/reward_curve"] == [0.25, 0.5]
    assert row["eval/curve"] == [{"step": 0, "accuracy": 0.2}]


def test_report_files(sweep: Path) -> None:
    md = write_report(sweep, echo=False)
    table = read_csv(sweep / "report.csv")
    assert set(table) == {("sgd", "0.05"), ("sgd", "0.1"), ("adamw", "1e-05")}

    sgd = table[("sgd", "0.05")]
    assert sgd["n"] == "2" and sgd["seeds"] == "0;1" and sgd["momentum"] == "0.0"
    assert float(sgd["acc_final_mean"]) == pytest.approx(0.6)
    assert float(sgd["acc_final_std"]) == pytest.approx(0.141421, abs=1e-6)
    assert float(sgd["acc_best_mean"]) == pytest.approx(0.65)
    assert float(sgd["acc_gain_mean"]) == pytest.approx(0.4)
    assert float(sgd["opt_state_gb_mean"]) == 0.0
    assert float(sgd["peak_mem_gb_mean"]) == pytest.approx(2.25)
    assert float(sgd["changed_bf16_pct_mean"]) == pytest.approx(0.02)
    assert float(sgd["changed_fp32_pct_mean"]) == pytest.approx(0.2)
    assert float(sgd["changed_tol1e5_pct_mean"]) == pytest.approx(0.01)
    assert float(sgd["update_rank_mean"]) == pytest.approx(20.5)
    assert float(sgd["step_s_mean"]) == pytest.approx(2.5) and float(sgd["step_s_std"]) == pytest.approx(0.707107, abs=1e-6)
    assert sgd["best_lr"] == "1" and sgd["peak_kind"] == "cpu_rss"

    adam = table[("adamw", "1e-05")]
    assert adam["momentum"] == "" and adam["n"] == "2" and adam["best_lr"] == "1"
    assert float(adam["acc_final_mean"]) == pytest.approx(0.4) and float(adam["acc_final_std"]) == 0.0
    assert float(adam["opt_state_gb_mean"]) == pytest.approx(1.08)
    assert float(adam["changed_bf16_pct_mean"]) == pytest.approx(9.0)

    single = table[("sgd", "0.1")]
    assert single["n"] == "1" and float(single["acc_final_std"]) == 0.0 and single["best_lr"] == "0"

    text = md.read_text()
    assert "| smollm2-135m | arithmetic | sgd | **0.05** | 0.0 | 2 | 0.600 ± 0.141 |" in text
    assert "| 0.0200 ± 0.0000 |" in text  # % changed bf16: 3 significant digits, std at the same decimals
    assert "1.080 ± 0.000" in text  # adamw optimizer state in GB
    assert "NaN loss at step 1" in text and "unreadable result.json" in text and "never finished" in text
    for name in ("curves.png", "lr_sensitivity.png", "sparsity_by_kind.png"):
        png = sweep / name
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000
        assert f"]({name})" in text


def test_best_lr_ties_prefer_higher_best_accuracy() -> None:
    rows = [
        {**_flat(result("sgd", 0.05, 0, 0.5)), "status": "ok"},
        {**_flat(result("sgd", 0.1, 0, 0.5, **{"eval/accuracy_best": 0.9})), "status": "ok"},
        {**_flat(result("sgd", 0.1, 0, 0.5, momentum=0.9)), "status": "ok"},
    ]
    winners = best_lr(aggregate(rows))
    assert winners[("smollm2-135m", "arithmetic", "sgd", 0.0)]["lr"] == 0.1
    assert ("smollm2-135m", "arithmetic", "sgd", 0.9) in winners  # momentum is its own variant


def test_sig3() -> None:
    assert [sig3(x) for x in (0.02, 0.00134, 8.7, 91.3, 100.0, 0.0)] == ["0.0200", "0.00134", "8.70", "91.3", "100", "0"]


def test_report_with_no_finished_trials(tmp_path: Path) -> None:
    write_trial(tmp_path / "0", None)
    md = build_report(collect(tmp_path), tmp_path / "out")
    assert "No finished trials." in md.read_text() and (tmp_path / "out" / "report.csv").is_file()


def test_cli(sweep: Path) -> None:
    proc = _cli(str(sweep))
    assert proc.returncode == 0, proc.stderr
    assert "| model | task | optimizer | lr |" in proc.stdout and "0.600 ± 0.141" in proc.stdout
    assert (sweep / "report.md").is_file()


def test_cli_missing_or_empty_dir(tmp_path: Path) -> None:
    for folder in (tmp_path / "nope", tmp_path):
        proc = _cli(str(folder))
        assert proc.returncode == 2
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == ""


def test_row_from_wandb() -> None:
    summary = result("sgd", 0.05, 1, 0.7)
    del summary["eval/curve"]
    summary["trial"] = {"name": "sgd-a", "model": "smollm2-135m", "seed": 1}  # rest from config
    config = {
        "optimizer": {"_target_": "torch.optim.SGD", "name": "sgd", "lr": 0.05, "momentum": 0.0},
        "task": {"name": "arithmetic"}, "model": {"name": "HuggingFaceTB/SmolLM2-135M-Instruct"}, "seed": 1,
        "_wandb": {"value": {"cli_version": "0.31.0"}},
    }
    history = [{"_step": 0, "eval/accuracy": 0.2}, {"_step": 10, "eval/accuracy": 0.7}]
    row = row_from_wandb(summary, config, "run-1", "finished", history)
    assert row["status"] == "ok" and row["name"] == "sgd-a" and row["dir"] == "wandb:run-1"
    assert (row["optimizer"], row["lr"], row["momentum"], row["task"], row["model"]) == ("sgd", 0.05, 0.0, "arithmetic", "smollm2-135m")
    assert row["sparsity/by_kind"]["mlp"]["changed_fraction_bf16"] == pytest.approx(0.0004)
    assert row["eval/curve"] == [{"step": 0, "accuracy": 0.2}, {"step": 10, "accuracy": 0.7}]
    assert row["train/reward_curve"] == summary["train/reward_curve"]

    crashed = row_from_wandb({}, {"optimizer": {"value": {"_target_": "torch.optim.AdamW", "lr": 1e-5}}}, "run-2", "crashed")
    assert crashed["status"] == "failed" and "crashed" in crashed["error"]
    assert crashed["optimizer"] == "adamw" and crashed["lr"] == 1e-5 and crashed["name"] == "run-2"

    flat = {"status": "ok", "trial/optimizer": "sgd", "trial/lr": 0.1, "sparsity/by_kind/mlp/changed_fraction_bf16": 0.5}
    row = row_from_wandb(flat, {}, "run-3", "finished")
    assert row["optimizer"] == "sgd" and row["lr"] == 0.1
    assert row["sparsity/by_kind"] == {"mlp": {"changed_fraction_bf16": 0.5}}
    assert row_from_wandb({}, {}, "run-4", "running")["status"] == "missing"


def _flat(res: dict) -> dict:
    return {**{k: v for k, v in res.items() if k != "trial"}, **res["trial"]}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.report", *args], cwd=REPO, capture_output=True, text=True, timeout=60)
