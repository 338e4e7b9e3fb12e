"""FSDP2 on CPU with gloo and real processes (harness.distributed), against one process.

    .venv/bin/python -m pytest -q tests/test_distributed.py

The multi-process cases run tests/dist_scripts/fsdp_worker.py under torchrun (2 ranks, fresh
processes, a free port from --standalone); see that script for the training loop they share.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness.distributed import checkpoint, failure, reduce
from harness.distributed.env import check_torch_version, init_distributed, read_launch, slurm_first_host
from harness.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "dist_scripts" / "fsdp_worker.py"
TORCHRUN = Path(sys.executable).with_name("torchrun")
FP32 = ("sgd", "momentum", "adamw", "adamw-gc", "momentum-keep", "sgd-offload", "adamw-untied",
        "momentum-micro")
BF16 = ("momentum-autocast", "momentum-bf16")  # bf16 autocast, FSDP gathering fp32 / bf16
VARIANTS = FP32 + BF16


def _run(args: list[str], timeout: float = 400) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_NTASKS", "SLURM_PROCID"):
        env.pop(key, None)  # a test run inside a SLURM job or torchrun must not inherit its launch
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def _torchrun(mode: str, out: Path, cache: str, timeout: float = 400) -> subprocess.CompletedProcess:
    return _run([str(TORCHRUN), "--standalone", "--nproc-per-node", "2", str(WORKER), mode, str(out), cache],
                timeout)


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]


@pytest.fixture(scope="module")
def model_cache(cache_dir) -> str:
    """The tiny model built once (in the test session's cache) before any worker starts."""
    from omegaconf import OmegaConf

    from harness.models import resolve_model_dir

    cfg = OmegaConf.load(ROOT / "conf" / "model" / "tiny.yaml")
    cfg.pop("defaults")
    resolve_model_dir(cfg, cache_dir)
    return cache_dir


@pytest.fixture(scope="module")
def reference(tmp_path_factory, model_cache) -> Path:
    """One process on the full batches: what every run below is compared with."""
    out = tmp_path_factory.mktemp("fsdp")
    _ok(_run([sys.executable, str(WORKER), "reference", str(out), model_cache]))
    return out


@pytest.fixture(scope="module")
def runs(reference, model_cache) -> Path:
    """Then 2 ranks with FSDP2 (which also saves DCP at step 2), in the same folder."""
    _ok(_torchrun("parity", reference, model_cache))
    return reference


def _max_abs(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def _rel(x: float, y: float) -> float:
    return abs(x - y) / max(abs(y), 1e-30)


def _compare(got: dict, ref: dict, weights_tol: float, rel_tol: float) -> None:
    assert len(got["weights"]) == len(ref["weights"]) == 3
    assert _max_abs(got["initial"], ref["initial"]) == 0.0
    for step in range(3):
        assert _max_abs(got["weights"][step], ref["weights"][step]) <= weights_tol, f"weights after step {step + 1}"
        assert _rel(got["loss"][step], ref["loss"][step]) <= rel_tol
        assert _rel(got["grad_norm"][step], ref["grad_norm"][step]) <= rel_tol
    # the steps moved the weights far more than the tolerance (the comparison can fail)
    assert _max_abs(got["weights"][-1], got["initial"]) > 1e-4


@pytest.mark.slow  # torchrun, 2 ranks
@pytest.mark.parametrize("variant", FP32)
def test_two_ranks_match_one_process(runs, variant):
    """fp32: 2 ranks, each on half the batch, against one process on the whole batch in one forward."""
    ref, got = torch.load(runs / f"reference-{variant}.pt"), torch.load(runs / f"parity-{variant}.pt")
    assert ref["world_size"] == 1 and got["world_size"] == 2
    _compare(got, ref, 1e-6, 1e-5)


@pytest.mark.slow  # torchrun, 2 ranks
def test_bf16_autocast_two_ranks_match_one_process_on_the_same_halves(runs):
    """bf16 autocast: the rounding depends on how the batch is split (padding), so the one process runs
    the same two halves with gradients accumulated. FSDP gathering fp32 under the trainer's autocast
    then gives the one-process numbers; gathering bf16 (compute_dtype=bfloat16) stays within bf16 noise."""
    ref = torch.load(runs / "accum-momentum-autocast.pt")
    _compare(torch.load(runs / "parity-momentum-autocast.pt"), ref, 1e-6, 1e-5)
    _compare(torch.load(runs / "parity-momentum-bf16.pt"), torch.load(runs / "accum-momentum-bf16.pt"), 1e-2, 2e-2)


def test_fsdp2_in_one_process_matches_plain(reference, model_cache):  # one process: in the quick tier
    _ok(_run([sys.executable, str(WORKER), "single", str(reference), model_cache]))
    for variant in ("sgd", "adamw"):
        got = torch.load(reference / f"single-{variant}.pt")
        assert got["world_size"] == 1
        _compare(got, torch.load(reference / f"reference-{variant}.pt"), 1e-6, 1e-5)


@pytest.mark.slow  # torchrun, 2 ranks
def test_root_forward_and_generate_match(runs):
    ref, got = torch.load(runs / "reference-forward.pt"), torch.load(runs / "parity-forward.pt")
    assert (got["logits"] - ref["logits"]).abs().max().item() <= 1e-5
    assert torch.equal(got["generated"], ref["generated"])


@pytest.mark.slow  # torchrun, 2 ranks
def test_small_collectives_across_ranks(runs):
    r = json.loads((runs / "reduce.json").read_text())
    assert r["sums"] == [3, 1.5, 2, 2 * 2**40 + 1]  # exact int64 beyond float32's range
    assert r["types"] == ["int", "float", "int", "int"]
    assert r["agree"] == "folder-of-rank-0" and r["env_agree"] == 0
    assert r["gather"] == [{"rank": 0}, {"rank": 1}] and r["env_gather"] == [0, 1]
    assert r["count"] == 21


@pytest.mark.slow  # torchrun, 2 ranks
def test_dcp_resume_in_fresh_processes_equals_uninterrupted(runs, model_cache):
    for variant in VARIANTS:
        assert checkpoint.read_sidecar(runs / f"ckpt-{variant}") == {"step": 2}
        assert sorted(p.name for p in (runs / f"ckpt-{variant}").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    _ok(_torchrun("resume", runs, model_cache))
    for variant in VARIANTS:
        whole, resumed = torch.load(runs / f"parity-{variant}.pt"), torch.load(runs / f"resume-{variant}.pt")
        assert len(resumed["weights"]) == 1  # step 3 only
        assert _max_abs(resumed["weights"][0], whole["weights"][2]) == 0.0, variant
        assert resumed["loss"][0] == whole["loss"][2] and resumed["grad_norm"][0] == whole["grad_norm"][2]


@pytest.mark.slow  # torchrun, 2 ranks
def test_failure_on_rank1_ends_rank0_with_its_reason(tmp_path, model_cache):
    proc = _torchrun("failure", tmp_path, model_cache, timeout=300)
    assert proc.returncode != 0
    outcome = json.loads((tmp_path / "outcome.json").read_text())
    assert outcome["status"] == "failed"
    assert outcome["reason"] == "rank 1: ValueError: injected failure on rank 1 at step 2"
    assert "injected" not in outcome["own_error"]  # rank 0 itself saw only the lost peer
    rank1 = json.loads((tmp_path / ".rank1.error").read_text())
    assert rank1["secondary"] is False
    assert outcome["time"] - rank1["time"] < 60  # bounded: from rank 1's failure to rank 0's verdict


@pytest.mark.slow  # torchrun, 2 ranks
def test_silent_rank_times_out_instead_of_hanging(tmp_path, model_cache):
    proc = _torchrun("hang", tmp_path, model_cache, timeout=300)  # rank 1 sleeps 600 s at step 2
    assert proc.returncode != 0
    outcome = json.loads((tmp_path / "outcome.json").read_text())
    assert outcome["reason"].startswith("rank 0: ") and "timed out" in outcome["reason"].lower()
    rank1 = json.loads((tmp_path / ".rank1.error").read_text())
    assert rank1["reason"] == "Terminated: received SIGTERM"  # torchrun ended it; the handler raised


# ---------------------------------------------------------------- one process, in this process

def test_torch_version_check():
    for bad, why in (("2.8.0", "162338"), ("2.7.1+cu126", "sum"), ("2.6.0", "crashes")):
        with pytest.raises(ConfigError) as e:
            check_torch_version(bad)
        msg = str(e.value)
        assert "\n" not in msg and "torch>=2.9" in msg and bad in msg and why in msg
    for good in ("2.9.1", "2.10.0", "2.13.0+cpu", "3.0.0"):
        check_torch_version(good)


def _dist_cfg(**kw):
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ROOT / "conf" / "distributed" / "none.yaml")
    cfg.pop("defaults")
    return OmegaConf.merge(cfg, kw)


def test_one_process_needs_no_process_group():
    env = init_distributed(_dist_cfg(), "cpu", environ={})
    assert (env.rank, env.world_size, env.is_main, env.mesh) == (0, 1, True, None)
    assert not torch.distributed.is_initialized()
    assert env.all_reduce_sum([1, 2.5]) == [1, 2.5] and env.agree("x") == "x" and env.all_gather_object(3) == [3]
    assert reduce.global_count(torch.tensor(7)) == 7
    env.close()


def test_bad_distributed_config_is_one_line():
    with pytest.raises(ConfigError, match=r"^distributed.strategy='ddp': one of none, fsdp2$"):
        init_distributed(_dist_cfg(strategy="ddp"), "cpu", environ={})
    with pytest.raises(ConfigError, match=r"^distributed.reduce_dtype='int8'"):
        init_distributed(_dist_cfg(reduce_dtype="int8"), "cpu", environ={})
    with pytest.raises(ConfigError, match=r"^distributed.timeout_s=0"):
        init_distributed(_dist_cfg(timeout_s=0), "cpu", environ={})
    with pytest.raises(ConfigError, match="use distributed=fsdp2"):
        init_distributed(_dist_cfg(), "cpu", environ={"RANK": "0", "WORLD_SIZE": "2"})


def test_launch_from_torchrun_and_slurm_variables():
    tr = read_launch({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "h1", "MASTER_PORT": "29400",
                      "SLURM_NTASKS": "8", "SLURM_PROCID": "5"})  # torchrun inside a SLURM job wins
    assert (tr.rank, tr.local_rank, tr.world_size, tr.master_addr, tr.master_port, tr.source) == \
        (3, 1, 4, "h1", 29400, "torchrun")
    slurm = {"SLURM_PROCID": "2", "SLURM_NTASKS": "4", "SLURM_LOCALID": "0", "SLURM_JOB_ID": "12345",
             "SLURM_JOB_NODELIST": "gpu[007-008],cpu1"}
    a, b = read_launch(slurm), read_launch({**slurm, "SLURM_PROCID": "0"})
    assert (a.rank, a.local_rank, a.world_size, a.source) == (2, 0, 4, "slurm")
    assert a.master_addr == b.master_addr == "gpu007" and a.master_port == b.master_port  # all tasks agree
    assert 20000 <= a.master_port < 40000
    assert read_launch({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}).source == "single"  # one task: no group
    assert slurm_first_host("node1") == "node1" and slurm_first_host("n[3,5-6]") == "n3"


def _small_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=2, head_dim=16, intermediate_size=64, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg)


def _step(model, opt, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 50, (2, 9), generator=g)
    opt.zero_grad()
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()


def test_checkpoint_one_process_resumes_exactly_and_is_atomic(tmp_path):
    model = _small_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _step(model, opt, 1)
    path = tmp_path / "checkpoint"
    checkpoint.save_checkpoint(path, model, opt, {"step": 1})
    _step(model, opt, 2)
    checkpoint.save_checkpoint(path, model, opt, {"step": 2})  # replaces the first
    assert checkpoint.read_sidecar(path) == {"step": 2}
    assert not (tmp_path / ".checkpoint.tmp").exists() and not (tmp_path / ".checkpoint.old").exists()
    _step(model, opt, 3)
    want = {k: v.clone() for k, v in model.state_dict().items()}

    fresh = _small_model()
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    assert checkpoint.load_checkpoint(path, fresh, fresh_opt) == {"step": 2}
    assert fresh.lm_head.weight is fresh.model.embed_tokens.weight
    _step(fresh, fresh_opt, 3)
    assert all(torch.equal(fresh.state_dict()[k], want[k]) for k in want)

    # a save killed half-way leaves a .tmp folder: ignored; a swap killed between its renames
    # leaves only .old: found
    (tmp_path / ".checkpoint.tmp").mkdir()
    os.rename(path, tmp_path / ".checkpoint.old")
    assert checkpoint.find_checkpoint(path) == tmp_path / ".checkpoint.old"
    checkpoint.load_checkpoint(path, _small_model(), None)
    (tmp_path / ".checkpoint.old" / checkpoint.SIDECAR).unlink()
    assert checkpoint.find_checkpoint(path) is None
    with pytest.raises(FileNotFoundError):
        checkpoint.load_checkpoint(path, fresh, fresh_opt)


def test_failure_reason_prefers_the_first_primary_failure(tmp_path):
    try:
        raise KeyError("batch")  # a real error on "rank 2"
    except KeyError as e:
        failure.record_failure(tmp_path, 2, e)
    time.sleep(0.01)
    lost_peer = RuntimeError("[gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:1234")
    failure.record_failure(tmp_path, 1, failure.Terminated(15))
    assert failure.is_secondary(lost_peer) and failure.is_secondary(failure.Terminated(15))
    assert not failure.is_secondary(ValueError("bad shape"))
    assert failure.failure_reason(lost_peer, tmp_path, 0, wait_s=0) == "rank 2: KeyError: 'batch'"
    assert failure.failure_reason(ValueError("bad shape"), tmp_path, 0) == "rank 2: KeyError: 'batch'"  # earlier
    failure.clear_failures(tmp_path)
    assert failure.read_failures(tmp_path) == []
    assert failure.failure_reason(lost_peer, tmp_path, 0, wait_s=0.2).startswith("rank 0: RuntimeError: [gloo")


def test_a_sigterm_during_the_result_write_waits_for_it(tmp_path):
    """torchrun's SIGTERM to the survivors of a failed rank must not interrupt rank 0's result write."""
    import signal as _signal

    from harness.distributed.failure import Terminated, install_sigterm_handler, sigterm_held

    previous = _signal.getsignal(_signal.SIGTERM)
    install_sigterm_handler()
    try:
        done = []
        with pytest.raises(Terminated):
            with sigterm_held():
                os.kill(os.getpid(), _signal.SIGTERM)  # arrives "during" the write below
                (tmp_path / "result.json").write_text("{}")
                done.append(True)
        assert done and (tmp_path / "result.json").read_text() == "{}"
    finally:
        _signal.signal(_signal.SIGTERM, previous)
