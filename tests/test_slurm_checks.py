"""Launcher checks that need no cluster: bad time limits, SLURM missing."""

import os

from omegaconf import OmegaConf

from harness.slurm.checks import check_launcher
from tests.conftest import run_harness

SLURM = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"


def test_time_limit_too_short_for_a_checkpoint():
    msg = check_launcher(OmegaConf.create({"_target_": SLURM, "timeout_min": 1, "signal_delay_s": 120}))
    assert msg.startswith("hydra.launcher.timeout_min=1: too short to reach a checkpoint")


def test_not_slurm_is_not_checked():
    assert check_launcher(OmegaConf.create({"_target_": "x.LocalLauncher", "timeout_min": 1, "signal_delay_s": 120})) is None


def test_slurm_not_installed_is_one_line(tmp_path):
    env = {"PATH": os.path.dirname(os.sys.executable)}  # python only: no sbatch, no sinfo
    p = run_harness("-m", "model=tiny", "logger=none", "hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path}/s", env=env)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        "error: hydra/launcher=slurm needs SLURM (sbatch, sinfo not found on PATH); "
        "for a local cluster: bash .ci/slurm_setup.sh && python -m harness.local_slurm start"]
