"""harness.plan: the planner's verdicts on the issue's cases, its sweep counts, and its parts
against the real thing (optimizer state of a real optimizer step, the grid sweeper's expansion)."""

import ast
import dataclasses
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from harness.plan import estimate
from harness.plan.__main__ import main
from harness.plan.gpus import GIB, Device
from harness.rollout import ROLLOUTS
from harness.rollout.plan import HFPlan, RolloutPlan, VLLMPlan, kv_bytes_per_token

QWEN3_8B_ADAMW = ["model=qwen3-8b", "optimizer=adamw", "distributed=fsdp2"]


def plan(capsys, *argv):
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_qwen3_8b_adamw_does_not_fit_one_h200(capsys):
    rc, out, err = plan(capsys, *QWEN3_8B_ADAMW, "plan.world_size=1", "plan.gpu=h200")
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: does not fit on 1 x h200")
    assert "biggest term: optimizer state" in lines[0]  # AdamW's two fp32 moments: 8 B x 8.19e9 = 61 GiB
    assert "8.191 B params" in out


def test_qwen3_8b_adamw_fits_eight_h100(capsys):
    rc, out, err = plan(capsys, *QWEN3_8B_ADAMW, "plan.world_size=8", "plan.gpu=h100-80gb")
    assert rc == 0, err
    assert "-> fits" in out and err == ""


def test_qwen3_1p7b_sgd_fits_one_h100(capsys):
    rc, out, err = plan(capsys, "model=qwen3-1.7b", "optimizer=sgd", "plan.gpu=h100-80gb")
    assert rc == 0, err
    assert "1.721 B params" in out and "1 x h100-80gb" in out


@pytest.mark.parametrize("sweep,trials", [pytest.param("qwen3_gpu", 36, marks=pytest.mark.slow),  # composes 36 trials
                                          ("qwen3_8b_gpu", 9)])
def test_paper_sweeps_fit_the_gpus_they_name(capsys, sweep, trials):
    rc, out, err = plan(capsys, "-m", f"+sweeps={sweep}")
    assert rc == 0, err
    assert f"sweep: {trials} trials" in out
    assert "DOES NOT FIT" not in out
    world = {"qwen3_gpu": 4, "qwen3_8b_gpu": 8}[sweep]
    assert f"on {world} x h100-80gb" in out  # the world size comes from the launcher's tasks_per_node


def test_grid_count_matches_the_sweeper(capsys):
    from harness.sweepers.grid import expand

    rc, out, _ = plan(capsys, "-m", "model=tiny", "optimizer=sgd,adamw", "seed=0,1,2", "plan.gpu=cpu")
    assert rc == 0
    assert f"sweep: {len(expand([], [], ['optimizer=sgd,adamw', 'seed=0,1,2']))} trials" in out


def test_bad_gpu_is_one_line(capsys):
    rc, _, err = plan(capsys, "model=tiny", "plan.gpu=h999")
    assert rc == 2
    assert err.strip().splitlines() == [err.strip()] and err.startswith("error: plan.gpu='h999': allowed values are auto, cpu, h100-80gb")


def test_world_size_needs_fsdp2(capsys):
    rc, _, err = plan(capsys, "model=tiny", "plan.world_size=2", "plan.gpu=cpu")
    assert rc == 2 and "plan.world_size=2: must be 1 with distributed=none" in err


@pytest.mark.parametrize("name", ["sgd", "sgd_momentum", "adamw", "rmsprop", "signsgd"])
def test_optimizer_state_matches_a_real_step(name):
    """The planner's state (optimizer stepped on the meta model) equals a real step's on the tiny model."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from harness.measure.memory import optimizer_state_bytes
    from harness.optim import build_optimizer
    from harness.plan.archs import model_config
    from harness.plan.shapes import optimizer_state

    cfg_opt = OmegaConf.load(f"conf/optimizer/{name.split('_')[0]}.yaml")
    if name == "sgd_momentum":
        cfg_opt.momentum = 0.9
    tiny = OmegaConf.load("conf/model/tiny.yaml")
    conf, _ = model_config(tiny, "/nonexistent")
    planned, _, _ = optimizer_state(cfg_opt, conf, "float32")
    d = {k: v for k, v in conf.items() if k not in ("dtype", "model_type")}
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model("llama", **d))
    opt = build_optimizer(cfg_opt, model)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    assert planned == optimizer_state_bytes(opt)
    n = sum(p.numel() for p in model.parameters())
    assert planned >= {"sgd": 0, "sgd_momentum": 4 * n, "adamw": 8 * n, "rmsprop": 4 * n, "signsgd": 0}[name]


def _inputs(**kw):
    base = dict(params=1000, layer_params=100, root_params=200, matmul_params=900, largest_tensor=200, vocab=50,
                hidden=8, intermediate=24, layers=8, kv_dim=4, qk_norm=False, param_bytes=4, compute_bytes=2,
                reference_bytes=2, optimizer_bytes=8000, optimizer_foreach=True, world=1, fsdp=True,
                checkpointing=True, autocast=False, device_kind="cuda", prompts_per_step=8, group_size=4,
                prompt_tokens=10, new_tokens=5, micro_batch=8, kl=True, diag_chunk=0, rollout=HFPlan(),
                memory_bytes=GIB, peak_flops=1e12, mfu=0.5)
    base.update(kw)
    return estimate.Inputs(**base)


def test_sharding_divides_the_persistent_terms():
    one, four = estimate.persistent(_inputs(world=1)), estimate.persistent(_inputs(world=4))
    assert one == {"parameters": 4000, "optimizer state": 8000, "reference weights": 2000}
    assert four == {k: v / 4 for k, v in one.items()}
    assert estimate.persistent(_inputs(world=4, fsdp=False)) == one


def test_flops_and_time():
    x = _inputs(checkpointing=False)
    f = estimate.step_flops(x)
    # shared prefix: 8 prompts x 10 once + 8 x 4 x 5 completion tokens = 240 through the update
    assert f.train_tokens == 8 * 10 + 8 * 4 * 5
    assert f.update == 6 * 1000 * 240 and f.reference == 2 * 1000 * 240
    assert f.rollout == 2 * 1000 * (8 * 10 + 8 * 4 * 5)
    ck = estimate.step_flops(dataclasses.replace(x, checkpointing=True))
    assert ck.train_tokens == 8 * 4 * 15 and ck.update == pytest.approx(8 * 1000 * ck.train_tokens)
    assert estimate.step_seconds(x, f) == pytest.approx(f.total / (1e12 * 0.5))


def _vllm(**kw):
    base = dict(share_bytes=10 * 2 ** 20, tp=2, sleep=False, overhead_bytes=0, max_model_len=100, gpu=True)
    return VLLMPlan(**{**base, **kw})


def test_kv_cache_tokens():
    x = _inputs(rollout=_vllm())
    per_token = 2 * 8 * 4 * 2  # K and V x layers x kv_dim x bf16
    assert kv_bytes_per_token(x) == per_token
    kv, tokens = x.rollout.kv(x)
    assert kv == 10 * 2 ** 20 - 1000 * 2 / 2 and tokens == int(kv // (per_token / 2))


def test_rollout_terms_come_from_the_backends_plan():
    hf = _inputs()
    per_rank = 8 * 4  # prompts x group size, one rank
    assert estimate.engine(hf) == {"generate KV cache": per_rank * 15 * 2 * 4 * 8 * 2, "generate logits": per_rank * 50 * 4}
    share = "vLLM (weights + KV cache, gpu_memory_utilization)"
    awake, asleep = _inputs(rollout=_vllm()), _inputs(rollout=_vllm(sleep=True))
    for x in (awake, asleep):
        rollout, fb, step = estimate.phases(x)
        assert rollout.terms[share] == 10 * 2 ** 20
        assert (share in fb.terms) == (share in step.terms) == (x is awake)  # held during the update unless asleep
    cpu = _inputs(device_kind="cpu", rollout=_vllm(gpu=False))
    assert estimate.engine(cpu) == {"vLLM weights": 1000 * 2, "vLLM KV cache (kv_cache_space_gb)": 10 * 2 ** 20}
    assert cpu.rollout.problem(cpu) is None and cpu.rollout.notes(cpu) == []
    # the KV cache holds fewer tokens than max_model_len: the peaks fit, the trial does not
    small = _inputs(memory_bytes=1e9, rollout=_vllm(share_bytes=2000.0, max_model_len=100))
    ok, worst, _ = estimate.fit(small)
    assert worst.total <= small.memory_bytes and not ok
    assert small.rollout.problem(small).startswith("vLLM's KV cache holds")
    assert estimate.step_flops(small).rollout == estimate.step_flops(hf).rollout == 2 * 1000 * (8 * 10 + 8 * 4 * 5)


def test_every_rollout_backend_brings_a_plan():
    for name in ROLLOUTS.names():
        assert isinstance(ROLLOUTS.entry(name).extra["plan"](OmegaConf.create({"gpu_memory_utilization": 0.5,
                                                                                 "kv_cache_space_gb": 1}),
                                                             OmegaConf.create({"vllm_overhead_gb": 1.0}),
                                                             Device("h100-80gb", 80 * GIB, 1e15, "cuda"), 4096),
                          RolloutPlan), name


def test_the_planner_never_names_a_rollout_backend():
    # the planner asks the backend's plan (its registry entry), never `x.rollout == "vllm"`
    names = set(ROLLOUTS.names())
    found = []
    for path in sorted((Path(__file__).resolve().parents[1] / "harness" / "plan").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.strip().lower() in names:
                found.append(f"{path.name}:{node.lineno}: {node.value!r}")
    assert not found, found


@dataclasses.dataclass(frozen=True)
class _SidecarPlan(RolloutPlan):
    """A made-up backend: an engine of fixed size, held during the update, that cannot run beside FSDP2."""

    size: float

    def engine(self, x):
        return {"sidecar engine": self.size}

    def held_in_update(self, x):
        return self.engine(x)

    def problem(self, x):
        return "the sidecar cannot run beside FSDP2" if x.fsdp else None


def test_a_new_rollout_backend_is_planned_from_its_own_entry(capsys):
    from hydra import compose, initialize_config_dir

    from harness.plan.trial import plan_trial

    @ROLLOUTS.register("sidecar", plan=lambda cfg, plan_cfg, device, max_positions: _SidecarPlan(3 * GIB))
    def _build(cfg, **kw):
        raise NotImplementedError

    try:
        conf = str(Path(__file__).resolve().parents[1] / "conf")
        with initialize_config_dir(config_dir=conf, version_base=None):
            cfg = compose(config_name="config", overrides=["model=qwen3-1.7b", "plan.gpu=h100-80gb"])
        cfg.rollout.backend = "sidecar"
        device = Device("h100-80gb", 80 * GIB, 989e12, "cuda")
        tp = plan_trial(cfg, 1, device)
        assert all(p.terms["sidecar engine"] == 3 * GIB for p in tp.phases) and tp.fits
        cfg.distributed.strategy = "fsdp2"
        tp = plan_trial(cfg, 2, device)
        assert not tp.fits and tp.problem() == "does not fit on 2 x h100-80gb: the sidecar cannot run beside FSDP2"
    finally:
        del ROLLOUTS._entries["sidecar"]


def test_biggest_term_names_the_overflowing_phase():
    x = _inputs(memory_bytes=1000.0, optimizer_bytes=10 ** 6)
    ok, worst, _ = estimate.fit(x)
    assert not ok and worst.biggest()[0] == "optimizer state"


def test_the_reference_left_in_the_checkpoint_costs_nothing_on_a_cpu_but_device_memory_on_a_gpu():
    """harness.reference reads the initial weights back from the checkpoint only into CPU memory: on a
    GPU it keeps them on the device (bf16 where exact: Qwen3 is published in bf16), and the plan says so."""
    from hydra import compose, initialize_config_dir

    from harness.config import register
    from harness.plan.trial import plan_trial

    register()
    conf = str(Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(config_dir=conf, version_base=None):
        cfg = compose(config_name="config", overrides=["model=qwen3-1.7b", "trainer.initial_weights=checkpoint"])
    gpu = plan_trial(cfg, 1, Device("h100-80gb", 80 * GIB, 989e12, "cuda"))
    cpu = plan_trial(cfg, 1, Device("cpu", 24 * GIB, None, "cpu"))
    params = gpu.inputs.params
    assert gpu.phases[0].terms["reference weights"] == 2 * params  # bf16 numbers, compute in bf16
    assert cpu.phases[0].terms["reference weights"] == 0
