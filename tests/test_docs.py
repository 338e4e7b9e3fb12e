"""The docs: the strict site build, that it fails when it should, the metric keys, the worked examples.

    python -m pytest -q tests/test_docs.py

The build runs `mkdocs build --strict` (mkdocs.yml: `strict: true` and `validation:` make a broken
link, a missing anchor or a page left out of the nav fail). Skipped when mkdocs-material is not
installed, except in CI (CI=true), which installs the `docs` extra (.ci/setup.sh test).
The worked examples of docs/extending.md run as real tiny-model trials in a separate process:
importing them registers `task=largest` and `rollout=plain`, which must not leak into other tests.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from harness.metrics import CURVES, SUMMARY
from tests.conftest import ROOT

DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
HAVE_MKDOCS = importlib.util.find_spec("mkdocs") is not None and importlib.util.find_spec("material") is not None
needs_mkdocs = pytest.mark.skipif(not HAVE_MKDOCS and not os.environ.get("CI"),
                                  reason="mkdocs-material not installed (pip install -e '.[docs]'); CI runs this")


def _build(root: Path, site: Path) -> subprocess.CompletedProcess:
    """`mkdocs build --strict` of root/mkdocs.yml into `site`, run in `root` (snippets resolve from there)."""
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(root / "mkdocs.yml"),
                           "-d", str(site)], cwd=root, capture_output=True, text=True, timeout=300, env=env)


def _nav_pages(nav) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [p for v in nav.values() for p in _nav_pages(v)]
    return [p for item in nav for p in _nav_pages(item)]


# ----------------------------------------------------------------------------- the site


@needs_mkdocs
def test_strict_build_passes_and_carries_the_plots(tmp_path):
    site = tmp_path / "site"
    p = _build(ROOT, site)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "WARNING" not in p.stderr, p.stderr
    results = (site / "results" / "index.html").read_text()
    images = re.findall(r'<img [^>]*src="\.\./(assets/[^"]+\.png)"', results)
    assert len(images) >= 3, images
    for rel in images:  # every plot the results page shows is in the built site, and is a PNG
        assert (site / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", rel
    home = (site / "index.html").read_text()
    assert 'src="assets/rl_vs_sft_5seeds.png"' in home  # the site's home shows the current answer's plot
    # the worked examples are embedded from the files the tests below run, not copied by hand
    extending = re.sub(r"<[^>]+>", "", (site / "extending" / "index.html").read_text())
    assert "class LargestTaskConfig(TaskBase)" in extending and "class Lion(torch.optim.Optimizer)" in extending


def _copy_site(tmp_path: Path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(DOCS, root / "docs")
    shutil.copy(ROOT / "mkdocs.yml", root / "mkdocs.yml")
    return root


@needs_mkdocs
def test_a_copy_of_the_site_builds(tmp_path):
    """The control for the test below: the copy, unbroken, builds."""
    p = _build(_copy_site(tmp_path), tmp_path / "site")
    assert p.returncode == 0, p.stdout + p.stderr


@needs_mkdocs
@pytest.mark.parametrize("breakage, needle", [
    ("link", "no-such-page.md"),                       # a link to a page that does not exist
    ("anchor", "no-such-heading"),                     # a link to a heading that does not exist
    ("orphan", "orphan.md"),                           # a page that the nav does not list
])
def test_a_broken_site_fails_the_build(tmp_path, breakage, needle):
    root = _copy_site(tmp_path)
    trial = root / "docs" / "trial.md"
    text = trial.read_text()
    if breakage == "link":
        assert "(metrics.md)" in text
        trial.write_text(text.replace("(metrics.md)", "(no-such-page.md)", 1))
    elif breakage == "anchor":
        assert "(sweeps.md#eval-size-how-many-test-problems)" in text
        trial.write_text(text.replace("#eval-size-how-many-test-problems", "#no-such-heading", 1))
    else:
        (root / "docs" / "orphan.md").write_text("# Orphan\n\nNo page links here and the nav does not list it.\n")
    p = _build(root, tmp_path / "site")
    assert p.returncode != 0, p.stdout + p.stderr
    assert needle in p.stderr, p.stderr


def test_every_page_is_in_the_nav():
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    listed = _nav_pages(nav)
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(set(listed)) == pages
    assert len(listed) == len(set(listed)), "a page is listed twice"


# ----------------------------------------------------------------------------- the README


def _slug(heading: str) -> str:
    """A heading's anchor as mkdocs' toc extension makes it (ASCII headings)."""
    return re.sub(r"[\s]+", "-", re.sub(r"[^\w\s-]", "", heading).strip().lower())


def test_readme_is_a_front_door_whose_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    first_block = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    assert [line.split("  #")[0].strip() for line in first_block.splitlines()] == [
        "bash .ci/setup.sh && .venv/bin/python -m harness", "bash .ci/setup.sh test && .venv/bin/python -m pytest -q"]
    links = re.findall(r"\]\(((?!https?:)[^)\s]+)\)", readme)
    assert len(links) > 20
    for link in links:
        path, _, anchor = link.partition("#")
        assert (ROOT / path).is_file(), link
        if anchor:
            headings = re.findall(r"^#+ (.+)$", (ROOT / path).read_text(), flags=re.M)
            assert anchor in {_slug(h) for h in headings}, link


def _answer_table(page: str) -> list[str]:
    section = page.split("## The current answer", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("|")]


def test_the_site_home_gives_the_readmes_current_answer():
    """The README and the site's home page state one answer: the same table, row for row."""
    readme = _answer_table((ROOT / "README.md").read_text())
    home = _answer_table((DOCS / "index.md").read_text())
    assert len(readme) >= 3 and readme == home


# ----------------------------------------------------------------------------- the metrics page


def _table_keys(section: str) -> list[str]:
    """The first cells of the table rows of a page section that hold one `key`."""
    return re.findall(r"^\| `([^`]+)` \|", section, flags=re.M)


def test_metrics_page_lists_exactly_the_keys_of_harness_metrics():
    page = (DOCS / "metrics.md").read_text()
    head, sep, per_step = page.partition("\n## Per-step keys")
    assert sep, "docs/metrics.md has no '## Per-step keys' section"
    result_part = head.partition("\n## Result keys")[2]
    for kind, part, metrics in (("result", result_part, SUMMARY), ("per-step", per_step, CURVES)):
        on_page = _table_keys(part)
        missing = [m for k, m in metrics.items() if k not in on_page]
        rows = "\n".join(f"| `{m.key}` | {m.unit} | " + ("" if kind == "result" else f"{m.when} | ") + f"{m.meaning} |"
                         for m in missing)
        assert not missing, f"docs/metrics.md lacks {kind} keys of harness/metrics.py; rows to add:\n{rows}"
        extra = [k for k in on_page if k not in metrics]
        assert not extra, f"docs/metrics.md lists {kind} keys that harness/metrics.py does not: {extra}"
        assert len(on_page) == len(set(on_page)), f"a {kind} key is listed twice"


# ----------------------------------------------------------------------------- the worked examples

_RUN_EXAMPLES = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import run
from harness.errors import ConfigError
from harness.tasks import TASKS
from omegaconf import OmegaConf

out, common, summary = sys.argv[2], sys.argv[3:], {}
for name, extra in [("largest", ["task=largest"]), ("lion", ["optimizer=lion"]), ("hf", ["rollout=hf"]),
                    ("plain", ["rollout=plain"]), ("plain_nocache", ["rollout=plain", "rollout.use_cache=false"]),
                    ("reinforce", ["trainer=reinforce"]), ("grpo_nostd", ["trainer.norm_adv_by_std=false", "trainer.kl_coef=0"])]:
    run.trial(f"{out}/{name}", common + extra)
try:
    run.trial(f"{out}/bad", common + ["task=largest", "task.max_value=2"])
    summary["bad"] = None
except ConfigError as e:
    summary["bad"] = str(e)
from harness.plan.gpus import resolve
from harness.plan.trial import plan_trial
summary["plans"] = {}
for name, extra in [("hf", ["rollout=hf"]), ("plain", ["rollout=plain"]),
                    ("plain_nocache", ["rollout=plain", "rollout.use_cache=false"])]:
    cfg = run.config(["model=tiny", "plan.gpu=cpu", *extra])
    plan = plan_trial(cfg, 1, resolve(cfg.plan))
    summary["plans"][name] = {"rollout": plan.phases[0].terms, "flops": plan.flops.rollout, "fits": plan.fits,
                              "prompts": plan.inputs.prompts_per_step}
node = OmegaConf.load(f"{sys.argv[1]}/conf/task/largest.yaml")
task = TASKS.build("largest", node, 0)
summary["splits"] = [[p.question for p in s] for s in (task.train, task.val, task.eval)]
summary["answers_ok"] = all(int(p.answer) == max(map(int, p.question.split("of ")[1].split(", ")))
                            for p in task.train + task.val + task.eval)
json.dump(summary, open(f"{out}/summary.json", "w"))
"""


@pytest.fixture(scope="module")
def examples(cache_dir, tmp_path_factory) -> Path:
    """The examples' trials (tiny model, 2 steps), run once in one fresh process: trial folders + summary.json."""
    out = tmp_path_factory.mktemp("examples")
    common = ["model=tiny", "logger=none", "trainer.steps=2", "trainer.eval_every=0", "task.num_eval=8",
              "task.num_val=4", "threads=1"]
    p = subprocess.run([sys.executable, "-c", _RUN_EXAMPLES, str(EXAMPLES), str(out), *common], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-4000:]
    return out


def _result(out: Path, name: str) -> dict:
    r = json.loads((out / name / "result.json").read_text())
    assert r["status"] == "ok", r.get("error")
    return r


def _steps(out: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow  # the examples' trials (tiny model), run once per module
def test_example_task_runs_a_trial(examples):
    r = _result(examples, "largest")
    assert r["trial"]["task"] == "largest" and r["train/steps_done"] == 2 and r["eval/test_size"] == 8
    summary = json.loads((examples / "summary.json").read_text())
    train, val, test = (set(s) for s in summary["splits"])
    assert (len(train), len(val), len(test)) == (64, 16, 32)  # conf/task/largest.yaml's sizes, all distinct
    assert not (train & val) and not (train & test) and not (val & test)
    assert summary["answers_ok"]


@pytest.mark.slow  # the examples' trials (tiny model), run once per module
def test_example_task_refuses_impossible_splits_in_one_line(examples):
    msg = json.loads((examples / "summary.json").read_text())["bad"]
    assert msg is not None and msg.startswith("task.max_value=2:") and "\n" not in msg


def test_example_optimizer_steps_as_worked_out_by_hand():
    spec = importlib.util.spec_from_file_location("example_optimizer", EXAMPLES / "example_optimizer.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    opt = mod.Lion([p], lr=0.1, betas=(0.9, 0.99), weight_decay=0.5)
    for g in ([0.5, -1.0, 0.0], [-2.0, 0.1, 0.0]):
        p.grad = torch.tensor(g)
        opt.step()
    # step 1: m = 0, c = 0.1 g -> sign (+, -, 0); p = p (1 - 0.05) - 0.1 sign: 0.85, -1.8, 0.475
    #         m = 0.01 g = (0.005, -0.01, 0)
    # step 2: c = 0.9 m + 0.1 g = (0.0045 - 0.2, -0.009 + 0.01, 0) -> sign (-, +, 0)
    #         p = p (0.95) - 0.1 sign: 0.8075 + 0.1, -1.71 - 0.1, 0.45125
    assert torch.allclose(p.detach(), torch.tensor([0.9075, -1.81, 0.45125]), atol=1e-6)
    assert torch.allclose(opt.state[p]["exp_avg"], torch.tensor([0.99 * 0.005 - 0.02, -0.0099 + 0.001, 0.0]))


@pytest.mark.slow  # the examples' trials (tiny model), run once per module
def test_example_optimizer_runs_a_trial_with_exact_state_bytes(examples):
    r = _result(examples, "lion")
    assert r["trial"]["optimizer"] == "lion"
    assert r["mem/optimizer_state_bytes"] == 4 * r["params/trainable"]  # one fp32 buffer: 4 x 147,776


@pytest.mark.slow  # the examples' trials (tiny model), run once per module
def test_example_rollout_samples_what_hf_samples(examples):
    keys = ("train/reward_mean", "train/response_len_mean", "train/finished_frac",  # sampled, 2 steps
            "eval/val_accuracy", "eval/test_accuracy")  # greedy, before and after training
    hf, plain, nocache = ([{k: s[k] for k in keys if k in s} for s in _steps(examples, n)]
                          for n in ("hf", "plain", "plain_nocache"))
    assert sum("train/reward_mean" in s for s in hf) == 2 and sum("eval/test_accuracy" in s for s in hf) == 2
    assert plain == hf and nocache == hf
    for name in ("hf", "plain", "plain_nocache"):
        _result(examples, name)


@pytest.mark.slow  # the examples' trials (tiny model), run once per module
def test_example_objective_runs_a_trial_with_its_own_loss(examples):
    """trainer=reinforce: the same rollouts as GRPO at the first step (sampled before any update), no KL,
    and at the first step (ratio 1, no clip can bind) the same gradient as GRPO without std or KL: -A log pi."""
    r, g = _result(examples, "reinforce"), _result(examples, "grpo_nostd")
    assert r["trial"]["objective"] == "reinforce" and r["trial"]["name"].startswith("reinforce-")
    first = [_steps(examples, n)[1] for n in ("reinforce", "grpo_nostd")]  # line 0: the evaluation before training
    assert first[0]["train/reward_mean"] == first[1]["train/reward_mean"]
    assert "train/kl" not in first[0] and "train/pg_loss" in first[0]
    assert first[0]["train/grad_norm"] == pytest.approx(first[1]["train/grad_norm"], rel=1e-5)
    from harness.objectives import kind

    assert kind("reinforce") is None  # registered in the example's own process only, not in this one


@pytest.mark.slow  # the examples' trials (tiny model), run once per module
def test_example_rollout_brings_its_plan(examples):
    """The planner counts the backend's own terms (its registry entry's plan): one prompt's KV cache
    at a time, where hf holds every prompt's; none without the cache, which costs more FLOPs."""
    plans = json.loads((examples / "summary.json").read_text())["plans"]
    hf, plain, nocache = plans["hf"], plans["plain"], plans["plain_nocache"]
    assert hf["fits"] and plain["fits"] and nocache["fits"]
    kv = "plain: KV cache (one prompt's samples)"
    assert plain["rollout"][kv] > 0 and nocache["rollout"][kv] == 0
    assert plain["rollout"][kv] * hf["prompts"] == pytest.approx(hf["rollout"]["generate KV cache"])
    assert nocache["flops"] > plain["flops"] > 0
