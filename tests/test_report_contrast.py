"""python -m pytest tests/test_report_contrast.py -q

The report's RL-against-SFT section (harness.report.contrast) on a hand-made sweep folder of
result.json files (real files, no mocks): the gap and contrast table against numbers worked out
by hand, the diagnostics and compute-dtype tables, the verdict words, the plot, the section's
absence from a one-objective sweep, the CLI, report.csv's objective column, and the dashboard's
RL-against-SFT panels.

The sweep (4 test problems per trial, seeds 0, 1, 2): in every seed each trial's per-problem
scores differ from its baseline's by one constant (0 or ±100 points), so a seed's gap is that
constant and the two-level bootstrap's resample means are means of drawn seeds' constants. With
3 seeds, drawing the lowest three times has probability 1/27 = 3.7% > 2.5%, so the 95% interval
runs exactly from the lowest to the highest seed's gap. The same holds for the difference of two
independently resampled gaps: from (lowest SFT − highest RL) to (highest SFT − lowest RL).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.dashboard import layout as L
from harness.dashboard.select import best_lrs
from harness.dashboard.spec import dashboard_spec
from harness.report import ReportOptions, build_report, collect
from harness.report.compare import objective_of
from harness.report.contrast import contrast_rows, contrast_section, diagnostic_rows, dtype_rows, gap_rows
from harness.report.stats import difference_of_gaps
from harness.report.tables import aggregate

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SEEDS = (0, 1, 2)
ALL, NONE, HALF = [1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 0, 0]
OPTS = ReportOptions(bootstrap_resamples=4000)


def trial(objective: str | None, optimizer: str, lr: float, seed: int, correct: list[int], val: float,
          momentum: float | None = 0.0, dtype: str = "bfloat16", changed: float = 0.01, cosine: float | None = None,
          v_std: float | None = None) -> dict:
    """A result.json of one trial (the fields the report reads); objective None: an old result."""
    trial = {"name": f"{objective}-{optimizer}-m{momentum}-lr{lr:g}-{dtype}-s{seed}", "optimizer": optimizer, "lr": lr,
             "momentum": None if optimizer == "adamw" else momentum, "model": "tiny", "task": "arithmetic",
             "seed": seed, "slurm_job_id": None,
             "overrides": [f"optimizer={optimizer}", f"optimizer.lr={lr}", f"seed={seed}", f"model.dtype={dtype}"]}
    if objective is not None:
        trial["objective"] = objective
        trial["overrides"].insert(0, f"trainer={objective}")
    return {
        "status": "ok", "error": None, "trial": trial,
        "eval/val_accuracy_initial": 0.25, "eval/val_accuracy_final": val, "eval/val_accuracy_best": val,
        "eval/accuracy_initial": 0.25, "eval/accuracy_final": sum(correct) / len(correct),
        "eval/test_correct_initial": [1, 0, 0, 0], "eval/test_correct_final": correct, "eval/test_size": len(correct),
        "eval/val_curve": [{"step": 0, "accuracy": 0.25}, {"step": 2, "accuracy": val}],
        "train/reward_curve": [0.1, 0.2],
        "sparsity/changed_fraction_bf16": changed,
        "optim/momentum_grad_cosine_mean": cosine,
        "optim/second_moment_std_mean": v_std,
        "mem/peak_bytes": 1_000_000,
    }


def write(root: Path, res: dict) -> None:
    folder = root / res["trial"]["name"]
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps(res))


def rl_trials() -> list[dict]:
    """GRPO, bf16 compute. SGD's lr 0.05 wins on validation; every chosen method equals AdamW."""
    out = []
    for s in SEEDS:
        out += [
            trial("grpo", "adamw", 1e-5, s, HALF, 0.5, changed=0.05, cosine=(-0.01, 0.0, 0.01)[s], v_std=2e-7),
            trial("grpo", "sgd", 0.05, s, HALF, 0.8, changed=0.001 * (1 + s)),
            trial("grpo", "sgd", 0.5, s, NONE, 0.2),
            trial("grpo", "sgd", 0.01, s, HALF, 0.5, momentum=0.9, cosine=0.02),
        ]
    return out


def sft_trials() -> list[dict]:
    """SFT, bf16 compute. SGD's lr 0.5 wins on validation (0.05 would have matched AdamW on test):
    SGD misses every problem AdamW solves; SGD+m0.9 only in seed 1."""
    out = []
    for s in SEEDS:
        out += [
            trial("sft", "adamw", 1e-5, s, ALL, 0.9, changed=0.10, cosine=(0.99, 1.0, 0.98)[s], v_std=4e-6),
            trial("sft", "sgd", 0.05, s, ALL, 0.1, changed=0.004),
            trial("sft", "sgd", 0.5, s, NONE, 0.6, changed=0.004),
            trial("sft", "sgd", 0.01, s, NONE if s == 1 else ALL, 0.5, momentum=0.9, cosine=0.9),
        ]
    return out


def fp32_trials() -> list[dict]:
    """The compute-dtype arm (model.dtype=float32): RL unchanged; in SFT, SGD solves everything, AdamW nothing."""
    out = []
    for s in SEEDS:
        out += [
            trial("grpo", "adamw", 1e-5, s, HALF, 0.5, dtype="float32", changed=0.05),
            trial("grpo", "sgd", 0.05, s, HALF, 0.8, dtype="float32", changed=0.002 * (1 + s)),
            trial("sft", "adamw", 1e-5, s, NONE, 0.9, dtype="float32", changed=0.10),
            trial("sft", "sgd", 0.5, s, ALL, 0.6, dtype="float32", changed=0.004),
        ]
    return out


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "rl_vs_sft"
    for res in rl_trials() + sft_trials() + fp32_trials():
        write(root, res)
    return root


def _groups(root: Path) -> list[dict]:
    return aggregate(collect(root))


def _gap(rows: list[dict], objective: str, method: str, setting: str = "model.dtype=bfloat16") -> dict:
    from harness.report.contrast import method as label

    (r,) = [r for r in rows if r["objective"] == objective and label(r["group"]) == method
            and r["group"]["setting"] == setting]
    return r


def test_gaps_and_contrast_match_the_hand_computation(sweep: Path) -> None:
    groups = _groups(sweep)
    assert {g["objective"] for g in groups} == {"grpo", "sft"}
    assert {g["setting"] for g in groups} == {"model.dtype=bfloat16", "model.dtype=float32"}  # trainer= is not a setting
    gaps = gap_rows(groups, OPTS)
    rl, sft = _gap(gaps, "grpo", "sgd"), _gap(gaps, "sft", "sgd")
    assert (rl["group"]["lr"], sft["group"]["lr"]) == (0.05, 0.5)  # each objective chooses its own lr on validation
    assert (rl["diff"].estimate, rl["diff"].lo, rl["diff"].hi, rl["verdict"]) == (0.0, 0.0, 0.0, "matches")
    assert (sft["diff"].estimate, sft["diff"].lo, sft["diff"].hi, sft["verdict"]) == (-100.0, -100.0, -100.0, "worse")
    mom = _gap(gaps, "sft", "sgd+m0.9")  # seed gaps 0, -100, 0
    assert mom["diff"].estimate == pytest.approx(-100 / 3)
    assert (mom["diff"].lo, mom["diff"].hi, mom["verdict"]) == (-100.0, 0.0, "inconclusive")
    fp32 = _gap(gaps, "sft", "sgd", "model.dtype=float32")
    assert (fp32["diff"].estimate, fp32["verdict"]) == (100.0, "better")

    contrasts = {(c["sft"]["group"]["setting"], c["sft"]["group"]["momentum"]): c for c in contrast_rows(gaps, OPTS)}
    assert len(contrasts) == 3  # sgd and sgd+m0.9 in bf16, sgd in fp32 (no momentum arm there)
    c = contrasts[("model.dtype=bfloat16", 0.0)]
    assert (c["diff"].estimate, c["diff"].lo, c["diff"].hi, c["verdict"]) == (-100.0, -100.0, -100.0, "more negative in SFT")
    c = contrasts[("model.dtype=bfloat16", 0.9)]
    assert c["diff"].estimate == pytest.approx(-100 / 3)
    assert (c["diff"].lo, c["diff"].hi, c["verdict"]) == (-100.0, 0.0, "inconclusive")
    c = contrasts[("model.dtype=float32", 0.0)]
    assert (c["diff"].estimate, c["verdict"]) == (100.0, "less negative in SFT")


def test_difference_of_gaps_resamples_the_two_sides_independently() -> None:
    # side 1 (RL): seed gaps 0, 20, 40 points; side 2 (SFT): seed gaps -30, -30, -30
    rl_a = [[20.0 * s] * 5 for s in range(3)]
    rl_b = [[0.0] * 5] * 3
    sft_a, sft_b = [[0.0] * 5] * 3, [[30.0] * 5] * 3
    ci = difference_of_gaps(rl_a, rl_b, sft_a, sft_b, n_resamples=4000, seed=1)
    # estimate -30 - 20 = -50; interval: (-30 - 40, -30 - 0), the RL side's seed extremes
    assert (ci.estimate, ci.lo, ci.hi, ci.n) == (-50.0, -70.0, -30.0, 30)
    again = difference_of_gaps(rl_a, rl_b, sft_a, sft_b, n_resamples=4000, seed=1)
    assert again == ci  # deterministic given the seed
    with pytest.raises(ValueError, match="one shape"):
        difference_of_gaps(rl_a, [[0.0]], sft_a, sft_b)


def test_diagnostics_rl_against_sft(sweep: Path) -> None:
    rows = diagnostic_rows(_groups(sweep), OPTS)
    by = {(r["group"]["setting"], r["group"]["optimizer"], r["group"]["momentum"], r["diag"].key): r for r in rows}
    cos = by[("model.dtype=bfloat16", "adamw", None, "optim/momentum_grad_cosine_mean")]["values"]
    # mean ± t_{0.975, 2} * 0.01 / sqrt(3) = ± 4.303 * 0.005774 = ± 0.024843
    assert cos["grpo"].estimate == pytest.approx(0.0, abs=1e-12)
    assert (cos["grpo"].lo, cos["grpo"].hi) == pytest.approx((-0.024843, 0.024843), abs=1e-6)
    assert cos["sft"].estimate == pytest.approx(0.99) and cos["sft"].lo == pytest.approx(0.99 - 0.024843, abs=1e-6)
    assert cos["sft"].hi == 1.0  # 1.0148, clipped: a cosine is at most 1
    std = by[("model.dtype=bfloat16", "adamw", None, "optim/second_moment_std_mean")]
    r, word = std["ratios"][("grpo", "sft")]
    assert word == "lower" and (r.estimate, r.lo, r.hi) == pytest.approx((0.05, 0.05, 0.05))
    # % changed bf16, SGD: RL 0.1, 0.2, 0.3 % (mean 0.2) against SFT 0.4 % on every seed; RL's seeds
    # resampled on their own: the ratio runs from 0.1/0.4 to 0.3/0.4
    changed = by[("model.dtype=bfloat16", "sgd", 0.0, "sparsity/changed_fraction_bf16")]
    r, word = changed["ratios"][("grpo", "sft")]
    assert (r.estimate, r.lo, r.hi, word) == (pytest.approx(0.5), pytest.approx(0.25), pytest.approx(0.75), "lower")
    assert ("model.dtype=bfloat16", "sgd", 0.0, "optim/momentum_grad_cosine_mean") not in by  # plain SGD: no momentum
    assert ("model.dtype=bfloat16", "sgd", 0.9, "optim/momentum_grad_cosine_mean") in by


def test_compute_dtype_arm(sweep: Path) -> None:
    rows = {(r["other"]["objective"], r["other"]["optimizer"]): r for r in dtype_rows(_groups(sweep), OPTS)}
    assert set(rows) == {("grpo", "adamw"), ("grpo", "sgd"), ("sft", "adamw"), ("sft", "sgd")}  # no fp32 momentum arm
    assert all((r["ref_dtype"], r["dtype"]) == ("bfloat16", "float32") for r in rows.values())
    sft_adam, sft_sgd, rl_sgd = rows[("sft", "adamw")], rows[("sft", "sgd")], rows[("grpo", "sgd")]
    assert (sft_adam["acc_diff"].estimate, sft_adam["acc_verdict"]) == (-100.0, "worse")
    assert (sft_sgd["acc_diff"].estimate, sft_sgd["acc_verdict"]) == (100.0, "better")
    assert (rl_sgd["acc_diff"].estimate, rl_sgd["acc_verdict"]) == (0.0, "matches")
    r = rl_sgd["changed_ratio"]  # fp32 compute changed twice as many weights on every seed (paired)
    assert (r.estimate, r.lo, r.hi) == pytest.approx((2.0, 2.0, 2.0)) and rl_sgd["changed_verdict"] == "higher"


def test_report_section_plot_csv_and_cli(sweep: Path) -> None:
    md = build_report(collect(sweep), sweep, options=OPTS).read_text()
    section = md[md.index("## RL against SFT"):md.index("## All groups")]
    assert "| **sft − grpo** | sgd |" in section.replace("model.dtype=bfloat16 | ", "")
    line = next(x for x in section.splitlines() if x.startswith("| model.dtype=bfloat16 | **sft − grpo** | sgd |"))
    assert "gap(SFT) − gap(RL): -100.0 [-100.0, -100.0]" in line and line.endswith("| **more negative in SFT** |")
    line = next(x for x in section.splitlines() if x.startswith("| model.dtype=bfloat16 | sft (SFT) | sgd |"))
    assert "| 0.5 | 0.000 [0.000, 0.000] | 1e-05 | 1.000 [1.000, 1.000] | -100.0 [-100.0, -100.0] | worse |" in line
    assert "-0.007 / +0.997" in section and "2.29e-07 / 5.11e-06 (×0.0448)" in section  # the paper's figures
    assert "### Compute dtype" in section and "| float32 (0.5) | 1.000 [1.000, 1.000] |" in section
    assert "](rl_vs_sft.png)" in section
    png = sweep / "rl_vs_sft.png"
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000
    with (sweep / "report.csv").open() as f:
        table = list(csv.DictReader(f))
    assert {r["objective"] for r in table} == {"grpo", "sft"} and all("trainer" not in r["setting"] for r in table)

    proc = subprocess.run([sys.executable, "-m", "harness.report", str(sweep), "--bootstrap-resamples", "2000"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "## RL against SFT" in proc.stdout and "**more negative in SFT**" in proc.stdout
    assert "| objective | method |" in proc.stdout  # the chosen-lr table names the objective too


def test_no_section_for_one_objective(tmp_path: Path) -> None:
    root = tmp_path / "rl_only"
    for res in rl_trials():
        write(root, res)
    old = trial(None, "adamw", 3e-5, 0, HALF, 0.1)  # a result from before trainer.objective: grpo
    write(root, old)
    groups = _groups(root)
    assert {g["objective"] for g in groups} == {"grpo"}
    assert objective_of({"overrides": ["trainer=sft", "seed=0"]}) == "sft"  # no trial.objective: from the overrides
    assert objective_of({"objective": "rloo", "overrides": ["trainer=sft"]}) == "rloo"
    assert objective_of({"overrides": ["trainer=sft", "trainer.objective=rloo"]}) == "rloo"
    assert contrast_section(groups, OPTS, root) == ""
    md = build_report(collect(root), root, options=OPTS).read_text()
    assert "RL against SFT" not in md and not (root / "rl_vs_sft.png").exists()
    assert "| objective |" not in md


def test_dashboard_groups_by_objective_and_has_the_2x2_panels(sweep: Path) -> None:
    (section,) = [s for s in L.SECTIONS if s.name.startswith("RL against SFT")]
    keys = {k for p in section.panels for k in p.keys}
    assert {"optim/momentum_grad_cosine_mean", "optim/second_moment_std_mean", "sparsity/changed_fraction_bf16",
            "eval/accuracy_final", "optim/momentum_grad_cosine", "optim/second_moment_std"} <= keys
    assert section.runs == "best" and L.OBJECTIVE in L.VARIANT_GROUPBY and L.OBJECTIVE in L.ALL_GROUPBY
    rows = collect(sweep)
    best = {(b.objective, b.label(), b.lr) for b in best_lrs(r for r in rows if "float32" not in r["name"])}
    assert ("grpo", "sgd", 0.05) in best and ("sft", "sft sgd", 0.5) in best  # chosen per objective
    spec = dashboard_spec("me", "proj", "rl_vs_sft", rows)
    best_view = spec["workspaces"][0]
    groupby = json.dumps(best_view["spec"]["section"]["runSets"][0].get("grouping", []))
    assert '"jobType"' in groupby and "trainer.value.objective" in groupby and "optimizer.value.momentum" in groupby
    names = [s["name"] for s in best_view["spec"]["section"]["panelBankConfig"]["sections"]]
    assert section.name in names
    grids = [b for b in spec["report"]["spec"]["blocks"] if b.get("type") == "panel-grid"]
    (grid,) = [g for g, b in zip(grids, L.SECTIONS) if b is section]
    assert "trainer.value.objective" in json.dumps(grid["metadata"]["runSets"][0]["grouping"])
