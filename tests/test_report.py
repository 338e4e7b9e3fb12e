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
from harness.report import ReportOptions
from harness.report.tables import aggregate, chosen_lr, chosen_table, sig3
from harness.report.wandb_source import row_from_wandb

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


N_TEST = 40  # test problems per trial


def correct(acc: float, seed: int, n: int = N_TEST) -> list[int]:
    """Per-problem 0/1 scores with exactly round(acc * n) ones; which ones depends on the seed
    only, so two methods on the same seed overlap (as real optimizers do on easy problems)."""
    k = round(acc * n)
    order = sorted(range(n), key=lambda j: (j * 7919 + seed * 104729) % n)
    ones = set(order[:k])
    return [int(j in ones) for j in range(n)]


def result(optimizer: str, lr: float, seed: int, final: float, momentum: float | None = 0.0, val: float | None = None,
           **extra) -> dict:
    """A result.json shaped like the trainer's (validation/test protocol). val: validation accuracy
    (default: the test accuracy)."""
    adam = optimizer == "adamw"
    frac = 0.09 if adam else 0.0002  # fraction of weights changed (bf16)
    val = final if val is None else val
    out = {
        "status": "ok",
        "error": None,
        "trial": {
            "name": f"{optimizer}-lr{lr:g}-s{seed}", "optimizer": optimizer, "lr": lr,
            "momentum": None if adam else momentum, "model": "smollm2-135m", "task": "arithmetic",
            "seed": seed, "overrides": [f"optimizer={optimizer}", f"optimizer.lr={lr}", f"seed={seed}"],
            "slurm_job_id": None,
        },
        "eval/val_accuracy_initial": 0.2,
        "eval/val_accuracy_final": val,
        "eval/val_accuracy_best": val + 0.05,
        "eval/val_curve": [{"step": 0, "accuracy": 0.2}, {"step": 5, "accuracy": (0.2 + val) / 2}, {"step": 10, "accuracy": val}],
        "eval/accuracy_initial": 0.2,
        "eval/accuracy_final": final,
        "eval/test_correct_initial": correct(0.2, seed),
        "eval/test_correct_final": correct(final, seed),
        "eval/val_correct_final": correct(val, seed, 20),
        "eval/test_size": N_TEST,
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
        "sparsity/rounded_away_fraction": frac * 8,
        "sparsity/update_abs_median": 3e-6 if adam else 1e-7 * (1 + seed),
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
        steps = [{"step": 0, "eval/val_accuracy": 0.2}]
        steps += [{"step": i, "train/reward_mean": 0.1 * i, "train/loss": 0.0, "sparsity/step_changed_fraction_bf16": 0.01 / i,
                   "sparsity/step_changed_fraction_fp32": 0.5, "sparsity/changed_fraction_bf16": 0.01 * i,
                   "sparsity/changed_fraction_fp32": 0.8} for i in range(1, 4)]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in steps))


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "multirun" / "2026-01-01" / "12-00-00"
    write_trial(root / "0", result("sgd", 0.05, 0, 0.5))
    write_trial(root / "1", result("sgd", 0.05, 1, 0.7))
    write_trial(root / "2", result("adamw", 1e-5, 0, 0.4))
    write_trial(root / "3", result("adamw", 1e-5, 1, 0.4))
    write_trial(root / "4", result("sgd", 0.1, 0, 0.3))
    failed = result("sgd", 1.0, 0, 0.0, status="failed", error="NaN loss at step 1")
    failed.update({"eval/accuracy_final": None, "eval/val_accuracy_final": None, "eval/val_accuracy_best": None})
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
    write_trial(tmp_path / "t", result("sgd", 0.05, 0, 0.5, **{"eval/val_curve": [], "train/reward_curve": []}))
    lines = [{"step": 0, "train/reward_mean": 0.25, "eval/val_accuracy": 0.2},
             {"step": 1, "train/reward_mean": 0.5, "sparsity/step_changed_fraction_bf16": 0.1, "sparsity/changed_fraction_bf16": 0.1}]
    (tmp_path / "t" / "metrics.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n{torn")
    (row,) = collect(tmp_path)
    assert row["train/reward_curve"] == [0.25, 0.5]
    assert row["eval/val_curve"] == [{"step": 0, "accuracy": 0.2}]
    assert row["sparsity/step_curve"] == [{"step": 1, "changed_fraction_bf16": 0.1, "step_changed_fraction_bf16": 0.1}]


def test_old_results_without_validation_fall_back_to_test_and_say_so(tmp_path: Path) -> None:
    old = result("sgd", 0.05, 0, 0.5)
    for key in ("eval/val_accuracy_final", "eval/val_accuracy_best", "eval/val_curve"):
        del old[key]
    old["eval/curve"] = [{"step": 0, "accuracy": 0.2}]
    write_trial(tmp_path / "t", old)
    (row,) = collect(tmp_path)
    assert row["eval/val_curve"] == [{"step": 0, "accuracy": 0.2}]
    (g,) = aggregate([row])
    assert chosen_lr([g])[("smollm2-135m", "arithmetic", "", "sgd", 0.0, "grpo")]["selected_on"] == "test"
    assert "| 0.05 (test) |" in chosen_table([g], ReportOptions())


def test_report_files(sweep: Path) -> None:
    md = write_report(sweep, echo=False)
    table = read_csv(sweep / "report.csv")
    assert set(table) == {("sgd", "0.05"), ("sgd", "0.1"), ("adamw", "1e-05")}
    assert all(r["setting"] == "" for r in table.values())

    sgd = table[("sgd", "0.05")]
    assert sgd["n"] == "2" and sgd["seeds"] == "0;1" and sgd["momentum"] == "0.0"
    assert float(sgd["acc_final_mean"]) == pytest.approx(0.6)
    assert float(sgd["acc_final_std"]) == pytest.approx(0.141421, abs=1e-6)
    assert float(sgd["val_acc_best_mean"]) == pytest.approx(0.65)
    # 95% t interval over 2 seeds: 0.6 ± 12.706 * 0.141421 / sqrt(2) = 0.6 ± 1.27, clipped to [0, 1]
    assert (float(sgd["acc_final_ci_lo"]), float(sgd["acc_final_ci_hi"])) == (0.0, 1.0)
    assert float(sgd["rounded_away_pct_mean"]) == pytest.approx(0.16)
    assert float(sgd["update_abs_median_mean"]) == pytest.approx(1.5e-7)
    assert float(sgd["acc_gain_mean"]) == pytest.approx(0.4)
    assert float(sgd["opt_state_gb_mean"]) == 0.0
    assert float(sgd["peak_mem_gb_mean"]) == pytest.approx(2.25)
    assert float(sgd["changed_bf16_pct_mean"]) == pytest.approx(0.02)
    assert float(sgd["changed_fp32_pct_mean"]) == pytest.approx(0.2)
    assert float(sgd["changed_tol1e5_pct_mean"]) == pytest.approx(0.01)
    assert float(sgd["update_rank_mean"]) == pytest.approx(20.5)
    assert float(sgd["step_s_mean"]) == pytest.approx(2.5) and float(sgd["step_s_std"]) == pytest.approx(0.707107, abs=1e-6)
    assert sgd["chosen_lr"] == "1" and sgd["peak_kind"] == "cpu_rss"

    adam = table[("adamw", "1e-05")]
    assert adam["momentum"] == "" and adam["n"] == "2" and adam["chosen_lr"] == "1"
    assert float(adam["acc_final_mean"]) == pytest.approx(0.4) and float(adam["acc_final_std"]) == 0.0
    assert float(adam["opt_state_gb_mean"]) == pytest.approx(1.08)
    assert float(adam["changed_bf16_pct_mean"]) == pytest.approx(9.0)

    single = table[("sgd", "0.1")]
    assert single["n"] == "1" and float(single["acc_final_std"]) == 0.0 and single["chosen_lr"] == "0"
    assert single["acc_final_ci_lo"] == ""  # no interval from one seed

    text = md.read_text()
    assert "| smollm2-135m | arithmetic | sgd | **0.05** | 0.0 | 2 | 0.600 ± 0.141 | 0.600 ± 0.141 |" in text
    assert "chosen on the validation split" in text and "10000 resamples, numpy seed 0" in text
    assert "| 0.0200 ± 0.0000 |" in text  # % changed bf16: 3 significant digits, std at the same decimals
    assert "1.080 ± 0.000" in text  # adamw optimizer state in GB
    assert "NaN loss at step 1" in text and "unreadable result.json" in text and "never finished" in text
    for name in ("curves.png", "lr_sensitivity.png", "difference.png", "sparsity_by_kind.png", "sparsity_steps.png",
                 "sparsity_scaling.png"):
        png = sweep / name
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000
        assert f"]({name})" in text


def test_lr_ties_on_validation_prefer_higher_best_validation_accuracy() -> None:
    rows = [
        {**_flat(result("sgd", 0.05, 0, 0.5)), "status": "ok"},
        {**_flat(result("sgd", 0.1, 0, 0.5, **{"eval/val_accuracy_best": 0.9})), "status": "ok"},
        {**_flat(result("sgd", 0.1, 0, 0.5, momentum=0.9)), "status": "ok"},
    ]
    winners = chosen_lr(aggregate(rows))
    assert winners[("smollm2-135m", "arithmetic", "", "sgd", 0.0, "grpo")]["lr"] == 0.1
    assert ("smollm2-135m", "arithmetic", "", "sgd", 0.9, "grpo") in winners  # momentum is its own variant


def _validation_vs_test_sweep(root: Path) -> None:
    """SGD's lr 0.05 is best on validation but worst on test; lr 0.1 the reverse. AdamW: one lr."""
    for seed in (0, 1, 2):
        write_trial(root / f"sgd05-{seed}", result("sgd", 0.05, seed, final=0.5, val=0.8))
        write_trial(root / f"sgd1-{seed}", result("sgd", 0.1, seed, final=0.9, val=0.6))
        write_trial(root / f"adam-{seed}", result("adamw", 1e-5, seed, final=0.4, val=0.5))


def test_table_follows_validation_not_test(tmp_path: Path) -> None:
    _validation_vs_test_sweep(tmp_path)
    md = write_report(tmp_path, echo=False, options=ReportOptions(bootstrap_resamples=2000))
    text = md.read_text()
    chosen = text[text.index("## Each method"):text.index("## All groups")]
    sgd_line = next(line for line in chosen.splitlines() if line.startswith("| smollm2-135m | arithmetic | sgd |"))
    assert "| 0.05 (validation) |" in sgd_line and "| 0.800 |" in sgd_line
    assert "0.500 [0.500, 0.500]" in sgd_line  # the test accuracy at the validation-chosen lr, not 0.9
    # SGD - AdamW at lr 0.05: 0.5 - 0.4 = +10 points on every seed; the scores nest (see `correct`),
    # so every cell differs by 0 or +1 and the interval is inside (0, 20]: "better"
    diff = sgd_line.split(" | ")[7]
    assert diff.startswith("+10.0 [") and diff.endswith("] points: better")
    lo, hi = (float(x) for x in diff[diff.index("[") + 1:diff.index("]")].split(", "))
    assert 0 < lo < 10 < hi < 20
    assert "×0.643 [0.643, 0.643]: lower" in sgd_line  # peak memory 2.25 / 3.5 on every seed
    assert "×0.00222 [0.00222, 0.00222]: lower" in sgd_line  # bf16 changed 0.0002 / 0.09
    table = read_csv(tmp_path / "report.csv")
    assert table[("sgd", "0.05")]["chosen_lr"] == "1" and table[("sgd", "0.1")]["chosen_lr"] == "0"
    adam_line = next(line for line in chosen.splitlines() if "| adamw |" in line)
    assert "(baseline)" in adam_line


def test_verdict_matches_and_margin_from_the_cli(tmp_path: Path) -> None:
    for seed in (0, 1, 2):
        write_trial(tmp_path / f"sgd-{seed}", result("sgd", 0.05, seed, final=0.5))
        write_trial(tmp_path / f"adam-{seed}", result("adamw", 1e-5, seed, final=0.5))
    proc = _cli(str(tmp_path), "--margin", "1", "--bootstrap-resamples", "500", "--bootstrap-seed", "3")
    assert proc.returncode == 0, proc.stderr
    assert "+0.0 [+0.0, +0.0] points: matches" in proc.stdout  # identical per-problem scores
    text = (tmp_path / "report.md").read_text()
    assert "500 resamples, numpy seed 3; two-level" in text and "margin 1 points" in text
    assert _cli(str(tmp_path), "--problems-only").returncode == 0
    assert "problems only: each seed's problems" in (tmp_path / "report.md").read_text()
    assert _cli(str(tmp_path), "--bootstrap-resamples", "0").returncode == 2


def test_mismatched_test_problems_give_no_difference(tmp_path: Path) -> None:
    write_trial(tmp_path / "sgd", result("sgd", 0.05, 0, final=0.5))
    write_trial(tmp_path / "adam", result("adamw", 1e-5, 0, final=0.5, **{"eval/test_correct_final": [1, 0]}))
    groups = aggregate(collect(tmp_path))
    assert "lengths differ" in chosen_table(groups, ReportOptions(bootstrap_resamples=100))


def test_settings_split_groups(tmp_path: Path) -> None:
    """A sparsity-scaling sweep: prompts_per_step and bf16 master weights are their own groups."""
    for i, extra in enumerate([[], ["trainer.prompts_per_step=32"], ["model.param_dtype=bfloat16"]]):
        for opt, lr in (("sgd", 0.05), ("adamw", 1e-5)):
            res = result(opt, lr, 0, 0.5)
            res["trial"]["overrides"] += extra
            res["sparsity/update_abs_median"] = 1e-7 * 10 ** i if opt == "sgd" else 1e-6 * 10 ** i
            res["sparsity/changed_fraction_bf16"] = 1e-3 * 10 ** i if opt == "sgd" else 1e-2 * 10 ** i
            write_trial(tmp_path / f"{opt}-{i}", res)
    groups = aggregate(collect(tmp_path))
    assert sorted({g["setting"] for g in groups}) == ["", "model.param_dtype=bfloat16", "trainer.prompts_per_step=32"]
    text = chosen_table(groups, ReportOptions(bootstrap_resamples=100))
    assert text.count("(baseline)") == 3  # AdamW in each setting
    from harness.report.plots import loglog_fit, paper_crossing, scaling_points

    points = scaling_points(groups)
    assert len(points) == 6 and sum(p["bf16_master"] for p in points) == 2
    assert all(p["gain"] is not None for p in points)  # every trial on the sparsity-vs-learning panel
    sgd = [p for p in points if p["method"] == "sgd" and not p["bf16_master"]]
    fit = loglog_fit([p["x"] for p in sgd], [p["y"] for p in sgd])
    assert fit[0] == pytest.approx(1.0)  # 10x the update, 10x the changed fraction, by construction
    # y = 0.1% at x = 1e-7 with slope 1: 0.02% at x = 2e-8
    assert paper_crossing(fit) == pytest.approx(2e-8)
    assert paper_crossing((-1.0, 0.0)) is None
    build_report(collect(tmp_path), tmp_path / "out", options=ReportOptions(bootstrap_resamples=100))
    assert (tmp_path / "out" / "sparsity_scaling.png").read_bytes()[:8] == PNG_MAGIC


def test_sig3() -> None:
    assert [sig3(x) for x in (0.02, 0.00134, 8.7, 91.3, 100.0, 0.0)] == ["0.0200", "0.00134", "8.70", "91.3", "100", "0"]


def test_report_with_no_finished_trials(tmp_path: Path) -> None:
    write_trial(tmp_path / "0", None)
    md = build_report(collect(tmp_path), tmp_path / "out")
    assert "No finished trials." in md.read_text() and (tmp_path / "out" / "report.csv").is_file()


def test_cli(sweep: Path) -> None:
    proc = _cli(str(sweep))
    assert proc.returncode == 0, proc.stderr
    assert "| model | task | method | lr (chosen on) |" in proc.stdout and "0.600 [" in proc.stdout
    assert (sweep / "report.md").is_file()


def test_cli_missing_or_empty_dir(tmp_path: Path) -> None:
    for folder in (tmp_path / "nope", tmp_path):
        proc = _cli(str(folder))
        assert proc.returncode == 2
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == ""


def test_row_from_wandb() -> None:
    summary = result("sgd", 0.05, 1, 0.7)
    del summary["eval/val_curve"]
    summary["trial"] = {"name": "sgd-a", "model": "smollm2-135m", "seed": 1}  # rest from config
    config = {
        "optimizer": {"_target_": "torch.optim.SGD", "name": "sgd", "lr": 0.05, "momentum": 0.0},
        "task": {"name": "arithmetic"}, "model": {"name": "HuggingFaceTB/SmolLM2-135M-Instruct"}, "seed": 1,
        "_wandb": {"value": {"cli_version": "0.31.0"}},
    }
    history = [{"_step": 0, "eval/val_accuracy": 0.2}, {"_step": 10, "eval/val_accuracy": 0.7, "sparsity/changed_fraction_bf16": 0.1}]
    row = row_from_wandb(summary, config, "run-1", "finished", history)
    assert row["status"] == "ok" and row["name"] == "sgd-a" and row["dir"] == "wandb:run-1"
    assert (row["optimizer"], row["lr"], row["momentum"], row["task"], row["model"]) == ("sgd", 0.05, 0.0, "arithmetic", "smollm2-135m")
    assert row["sparsity/by_kind"]["mlp"]["changed_fraction_bf16"] == pytest.approx(0.0004)
    assert row["eval/val_curve"] == [{"step": 0, "accuracy": 0.2}, {"step": 10, "accuracy": 0.7}]
    assert row["sparsity/step_curve"] == [{"step": 10, "changed_fraction_bf16": 0.1}]
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


def test_cli_reads_several_sweep_folders_as_one(tmp_path: Path) -> None:
    """Arms run into separate sweep folders are compared in one report: every trial of each folder
    is read, and the difference to the baseline pairs seeds across folders."""
    sgd, adamw = tmp_path / "sgd", tmp_path / "adamw"
    write_trial(sgd / "0", result("sgd", 0.05, 0, 0.5))
    write_trial(sgd / "1", result("sgd", 0.05, 1, 0.7))
    write_trial(adamw / "0", result("adamw", 1e-5, 0, 0.4))
    write_trial(adamw / "1", result("adamw", 1e-5, 1, 0.4))
    proc = _cli(str(sgd), str(adamw))  # where would it go? it says so, and writes nothing
    assert proc.returncode == 2 and "--out" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (sgd / "report.md").exists()
    proc = _cli(str(sgd), str(adamw), "--out", str(tmp_path / "both"))
    assert proc.returncode == 0, proc.stderr
    rows = read_csv(tmp_path / "both" / "report.csv")
    assert rows[("sgd", "0.05")]["n"] == "2" and rows[("adamw", "1e-05")]["n"] == "2"
    sgd_row = next(line for line in proc.stdout.splitlines() if "| sgd |" in line)
    assert "+20.0 [" in sgd_row  # 0.6 - 0.4, the two folders' trials paired by seed
    assert "Sweep report: sgd + adamw" in (tmp_path / "both" / "report.md").read_text()
