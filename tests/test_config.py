"""Every config file composes against its schema and passes validation; bad values give one line."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from harness.config import register
from harness.preflight import check_overrides
from harness.validate import ConfigError, validate

CONF = Path(__file__).resolve().parent.parent / "conf"
register()


def _compose(overrides=()):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


GROUP_FILES = [(g.name, f.stem) for g in sorted(CONF.iterdir()) if g.is_dir() and g.name not in ("hydra", "local", "base")
               for f in sorted(g.glob("*.yaml"))]


@pytest.mark.parametrize("group,name", GROUP_FILES)
def test_every_config_file_composes_and_validates(group, name):
    overrides = [f"{group}={name}"]
    if (group, name) == ("task", "math"):
        overrides.append("task.path=data.jsonl")
    if (group, name) == ("rollout", "vllm"):
        pytest.importorskip("vllm")
    cfg = _compose(overrides)
    validate(cfg)


def test_first_line_of_every_config_file_is_a_command():
    for f in CONF.rglob("*.yaml"):
        assert f.read_text().startswith("# "), f"{f} must start with a comment giving the command that uses it"
        assert "python -m harness" in f.read_text().splitlines()[0] or "harness" in f.read_text()[:300], f


@pytest.mark.parametrize("override,needle", [
    ("optimizer.lr=-1.0", "optimizer.lr=-1.0: must be a number > 0"),
    ("optimizer.lr=0", "optimizer.lr=0: must be a number > 0"),
    ("trainer.group_size=1", "trainer.group_size=1: must be >= 2"),
    ("trainer.kl_estimator=k9", "trainer.kl_estimator='k9': allowed values are k1, k2, k3"),
    ("trainer.loss_agg=mean", "trainer.loss_agg='mean': allowed values are seq-mean-token-mean, seq-mean-token-sum, token-mean"),
    ("trainer.diagnostics=[update_norm,nosuch]", "trainer.diagnostics='nosuch': allowed values are momentum_grad_cosine"),
    ("rollout.backend=sglang", "rollout.backend='sglang': allowed values are hf, vllm"),
    ("rollout.generation_dtype=int8", "rollout.generation_dtype='int8': allowed values are null, bfloat16, float16, float32"),
    ("distributed.strategy=ddp", "distributed.strategy='ddp': allowed values are"),
    ("+optimizer.foo=1", "optimizer.foo=1: is not an argument of SGD"),
    ("optimizer._target_=torch.optim.Nope", "optimizer._target_='torch.optim.Nope': cannot import it"),
    ("optimizer._target_=torch.nn.Linear", "must be a torch.optim.Optimizer subclass"),
    ("optimizer.nesterov=true", "optimizer (SGD): Nesterov momentum requires a momentum"),
    ("device=tpu", "device='tpu'"),
    ("threads=-2", "threads=-2: must be >= 0"),
    ("malloc_retain=sometimes", "malloc_retain='sometimes': allowed values are true, false"),
    ("logger.wandb.mode=sometimes", "logger.wandb.mode='sometimes': allowed values are offline, online, disabled"),
])
def test_bad_values_name_the_key(override, needle):
    with pytest.raises(ConfigError) as e:
        validate(_compose([override]))
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_any_torch_optim_class_works_from_config():
    cfg = _compose(["optimizer._target_=torch.optim.Adagrad", "~optimizer.momentum", "~optimizer.nesterov",
                    "optimizer.name=adagrad"])
    validate(cfg)


def test_preflight_names_allowed_group_values():
    assert check_overrides(["optimizer=sgd", "model=tiny"]) is None
    msg = check_overrides(["optimizer=foo"])
    assert msg == "optimizer=foo: no such config; allowed values are adamw, muon, rmsprop, sgd, signsgd"
    assert "model=gpt5: no such config; allowed values are" in check_overrides(["-m", "model=tiny,gpt5"])
    assert check_overrides(["trainer.steps=3", "hydra.run.dir=x", "-m"]) is None


def _schemas():
    from hydra.core.config_store import ConfigStore

    repo = ConfigStore.instance().repo["schema"]
    return {name.removesuffix(".yaml"): node.node._metadata.object_type for name, node in repo.items()}


def test_schemas_carry_types_only_every_default_is_in_yaml():
    """No field default is written twice: every schema field is MISSING, so its value comes from YAML."""
    import dataclasses

    schemas = _schemas()
    assert {"model", "trainer", "rollout_hf", "rollout_vllm", "logger", "distributed", "task_arithmetic"} <= set(schemas)
    seen = set()

    def walk(cls):
        if cls in seen:
            return
        seen.add(cls)
        for f in dataclasses.fields(cls):
            assert f.default is dataclasses.MISSING or f.default == "???", f"{cls.__name__}.{f.name} has a default: {f.default!r}"
            assert f.default_factory is dataclasses.MISSING, f"{cls.__name__}.{f.name} has a default factory"
            t = f.type if isinstance(f.type, type) else None
            if t is not None and dataclasses.is_dataclass(t):
                walk(t)

    for cls in schemas.values():
        walk(cls)
    from harness.config import TinyArch, WandbConfig

    walk(TinyArch), walk(WandbConfig)
