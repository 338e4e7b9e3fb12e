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


NO_SLURM = {"PATH": os.path.dirname(os.sys.executable)}  # python only: no sbatch, no sinfo


def test_sweep_that_does_not_fit_its_gpus_is_refused(tmp_path):
    """Qwen3-8B on 1 GPU per trial: the preflight plans every trial and refuses before SLURM is asked."""
    p = run_harness("-m", "+sweeps=qwen3_8b_gpu", "hydra.launcher.tasks_per_node=1", "hydra.launcher.gpus_per_node=1",
                    f"hydra.sweep.dir={tmp_path}/s", env=NO_SLURM)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("error: does not fit on 1 x h100-80gb: update: forward/backward needs")
    assert "biggest term: parameters" in lines[0] and lines[0].endswith("plan.check=false submits anyway")


def test_plan_check_false_skips_the_fit_check(tmp_path):
    p = run_harness("-m", "+sweeps=qwen3_8b_gpu", "hydra.launcher.tasks_per_node=1", "hydra.launcher.gpus_per_node=1",
                    "plan.check=false", f"hydra.sweep.dir={tmp_path}/s", env=NO_SLURM)
    assert p.returncode == 2  # the next check: no SLURM here
    assert p.stderr.strip().splitlines()[-1].startswith("error: hydra/launcher=slurm needs SLURM")


def test_more_ranks_than_gpus_is_one_line(tmp_path):
    p = run_harness("-m", "+sweeps=qwen3_gpu", "hydra.launcher.tasks_per_node=8", f"hydra.sweep.dir={tmp_path}/s",
                    env=NO_SLURM)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        "error: hydra.launcher.tasks_per_node=8: more ranks than GPUs (gpus_per_node=4 x nodes=1); "
        "allowed: tasks_per_node <= gpus_per_node"]
