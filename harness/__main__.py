"""Run one trial, or a grid of them with Hydra's multirun.

    python -m harness                                   # the default trial (SmolLM2-135M, arithmetic, SGD)
    python -m harness model=tiny optimizer=adamw trainer.steps=2
    python -m harness -m optimizer=sgd,adamw seed=0,1,2  # a grid
    torchrun --nproc-per-node 2 -m harness model=tiny distributed=fsdp2   # one trial over 2 ranks

Returns the trial's objective (cfg.objective, e.g. eval/val_accuracy_final) so sweepers can use it.
A bad config value exits with status 2 and one line; a trial that fails at run time is recorded
in its result.json (status "failed") and exits 1 in a single run, while a sweep goes on.
"""

from __future__ import annotations

import os
import sys
import tempfile

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from harness.config import register
from harness.help import register as register_help
from harness.preflight import REPO, check_keys, check_overrides

register()
register_help()  # --help lists the groups a user picks from (conf/hydra/help/harness.yaml)


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from harness.results import read_result
    from harness.summary import summary_lines
    from harness.trial import run_trial
    from harness.validate import ConfigError

    hc = HydraConfig.get()
    out_dir = hc.runtime.output_dir
    multirun = hc.mode == RunMode.MULTIRUN
    done = read_result(f"{out_dir}/result.json")
    if multirun and done and done.get("status") in ("ok", "pruned"):  # a re-run sweep skips finished trials
        print(f"[harness] {out_dir}: already finished, skipped", file=sys.stderr)
        return done.get(cfg.objective) if done["status"] == "ok" else None
    group = hc.sweep.dir.rstrip("/").split("/")[-1] if multirun else None
    try:
        result = run_trial(cfg, out_dir, choices=dict(hc.runtime.choices),
                           overrides=list(hc.overrides.task), group=group)
    except ConfigError as e:
        if multirun:
            from harness.results import atomic_write_json

            atomic_write_json(f"{out_dir}/result.json", {"status": "failed", "error": f"config: {e}"})
            print(f"[harness] {out_dir}: error: {e}", file=sys.stderr)
            return None
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if _rank() == 0:  # in a distributed trial rank 0 speaks for all
        for line in summary_lines(result):
            print(line)
        print(f"results: {out_dir}/result.json")
    if result["status"] == "failed" and not multirun:
        sys.exit(1)
    return result.get(cfg.objective) if result["status"] == "ok" else None


def _rank() -> int:
    """This process's rank under torchrun (0 otherwise)."""
    return int(os.environ.get("RANK", "0") or 0)


def cli() -> None:
    problem = check_overrides(sys.argv[1:]) or check_keys(sys.argv[1:])  # before any work: one line, exit 2
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    if _rank() > 0:  # torchrun's other ranks: rank 0 picks the trial folder (run_trial agrees on it)
        sys.argv += ["hydra.output_subdir=null", f"hydra.run.dir={tempfile.mkdtemp(prefix='harness-rank')}"]
    if not any(a.startswith("hydra.searchpath") for a in sys.argv[1:]):  # saved sweeps: +sweeps=NAME
        # next to the other overrides: argparse takes them as one run of arguments between flags
        at = next((i for i, a in enumerate(sys.argv) if i and not a.startswith("-") and ("=" in a or a.startswith("~"))),
                  len(sys.argv))
        sys.argv.insert(at, f"hydra.searchpath=[file://{REPO}]")
    main()


if __name__ == "__main__":
    cli()
