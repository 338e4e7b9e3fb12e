"""Run one trial with the worked examples of docs/extending.md plugged in (tests/test_docs.py runs it).

    python docs/examples/run.py --out /tmp/largest task=largest model=tiny trainer.steps=2
    python docs/examples/run.py --out /tmp/lion optimizer=lion model=tiny
    python docs/examples/run.py --out /tmp/plain rollout=plain model=tiny
    python docs/examples/run.py --out /tmp/reinforce trainer=reinforce model=tiny

`python -m harness` only knows the groups in conf/, so this script imports the example modules (which
register their entries), composes the config with docs/examples/conf on Hydra's search path and runs
the trial. Once an example's module is in the harness and its YAML in conf/, `python -m harness` runs it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))  # example_task, example_optimizer (its _target_), example_rollout, example_objective

import example_objective  # noqa: E402,F401  registers trainer.objective=reinforce
import example_optimizer  # noqa: E402,F401  (imported by _target_; here so a typo fails early)
import example_rollout  # noqa: E402,F401  registers rollout=plain
import example_task  # noqa: E402,F401  registers task=largest


def config(overrides: list[str]):
    """conf/ + docs/examples/conf, composed with `overrides` (as python -m harness would)."""
    from hydra import compose, initialize_config_dir

    from harness.config import register

    register()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"hydra.searchpath=[file://{HERE / 'conf'}]", *overrides])


def trial(out: str, overrides: list[str]) -> dict:
    """Run the trial of `overrides` into `out`; its result dict. A bad value raises
    harness.errors.ConfigError before any work."""
    from harness.trial import run_trial

    return run_trial(config(overrides), out, progress=False)


def main(argv: list[str]) -> int:
    from harness.errors import ConfigError

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="the trial folder (result.json, metrics.jsonl)")
    args, overrides = ap.parse_known_args(argv)
    try:
        result = trial(args.out, overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{result['status']}: {args.out}/result.json")
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
