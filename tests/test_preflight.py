"""A key that does not exist, or a value of the wrong type, stops the real CLI before any work
with exit status 2 and one stderr line that names the key, the keys that exist there and the
`+key=value` form for adding one: single runs, multiruns (each swept group's choices), saved
sweeps (`+sweeps=NAME`) and arms given on the command line. The keys listed are read from the
composed config, not written here."""

import pytest
from hydra import compose, initialize_config_dir

from harness.config import register
from tests.conftest import ROOT, run_harness

register()


def _keys(node: str, *overrides: str) -> list[str]:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    for part in node.split(".") if node else []:
        cfg = cfg[part]
    return [str(k) for k in cfg.keys()]


def _error_line(tmp_path, *args: str) -> str:
    p = run_harness(*args, f"hydra.run.dir={tmp_path}/run", f"hydra.sweep.dir={tmp_path}/sweep", timeout=120)
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()  # no work was done
    assert "HYDRA_FULL_ERROR" not in lines[0] and "not in struct" not in lines[0]
    return lines[0]


@pytest.mark.parametrize("args, key, node, value", [
    (["optimizer.foo=1"], "optimizer.foo", "optimizer", "1"),
    (["trainer.nosuch=1"], "trainer.nosuch", "trainer", "1"),
    (["model=tiny", "model.tiny.nosuch=7"], "model.tiny.nosuch", "model.tiny", "7"),
    (["-m", "optimizer.foo=1,2"], "optimizer.foo", "optimizer", "1"),  # a swept key that doesn't exist
    (["-m", "+sweeps=quick", "trainer.nosuch=3"], "trainer.nosuch", "trainer", "3"),  # a saved sweep
])
def test_unknown_key_is_one_line_naming_the_keys_that_exist(tmp_path, args, key, node, value):
    line = _error_line(tmp_path, *args)
    keys = _keys(node, *[a for a in args if a.startswith("model=")])
    assert line == f"error: {key}: no such key; keys of {node} are {', '.join(keys)}; to add one: +{key}={value}"


def test_misspelled_group_suggests_the_group(tmp_path):
    line = _error_line(tmp_path, "optimzer=sgd")
    assert line.startswith("error: optimzer: no such key (did you mean optimizer?); top-level keys are ")
    assert line.endswith("; to add one: +optimzer=sgd")
    assert set(_keys("")) - {"hydra"} <= set(line.split("top-level keys are ")[1].split(";")[0].split(", "))


def test_key_missing_in_one_choice_of_a_swept_group_names_those_trials(tmp_path):
    # SGD has momentum, AdamW does not: the sweep would fail half-way
    line = _error_line(tmp_path, "-m", "optimizer=sgd,adamw", "optimizer.momentum=0.9")
    keys = _keys("optimizer", "optimizer=adamw")
    assert "momentum" not in keys
    assert line == (f"error: optimizer.momentum: no such key (in the trials of optimizer=adamw); keys of optimizer "
                    f"are {', '.join(keys)}; to add one: +optimizer.momentum=0.9")


def test_key_missing_in_an_arm_names_the_arm(tmp_path):
    line = _error_line(tmp_path, "-m", "hydra.sweeper.arms=[{optimizer: sgd}, {optimizer: adamw, optimizer.momentum: 0.9}]")
    assert line.startswith("error: optimizer.momentum: no such key (in the trials of hydra.sweeper.arms[1]); keys of optimizer are ")


def test_a_key_under_a_null_node_and_a_deleted_key(tmp_path):
    # model.tiny is null unless model=tiny (Hydra itself fails with an AssertionError traceback)
    assert _error_line(tmp_path, "model.tiny.nosuch=1") == \
        "error: model.tiny.nosuch: no such key; model.tiny is a value or null here, not a config node"
    line = _error_line(tmp_path, "~optimizer.foo")
    assert line == f"error: ~optimizer.foo: no such key optimizer.foo; keys of optimizer are {', '.join(_keys('optimizer'))}"


def test_wrong_type_is_one_line(tmp_path):
    assert _error_line(tmp_path, "trainer.steps=abc") == \
        "error: trainer.steps=abc: Value 'abc' of type 'str' could not be converted to Integer"


def test_good_and_added_keys_pass(tmp_path):
    from harness.preflight import check_keys

    for args in (["model=tiny", "trainer.steps=3"], ["+optimizer.foo=1"]):
        p = run_harness("--cfg", "job", *args, f"hydra.run.dir={tmp_path}/run", timeout=120)
        assert p.returncode == 0, (args, p.stderr[-2000:])
        assert "error:" not in p.stderr and "foo: 1" in p.stdout or "+optimizer.foo=1" not in args
    for args in (["-m", "optimizer=sgd,adamw", "seed=0,1"], ["-m", "+sweeps=sgd_vs_adamw"], ["-m", "+sweeps=search_sgd"],
                 ["-m", "+sweeps=search_sgd", "optimizer.lr=tag(log, interval(1e-4, 1))"]):
        assert check_keys(args) is None, args
