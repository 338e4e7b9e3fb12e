"""The initial weights left in the checkpoint: exact reads, the fallback to memory, the same trial.

    python -m pytest -q tests/test_reference.py
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from harness.models.safetensors_files import SafetensorsFiles
from harness.reference import InitialWeights
from harness.trial import run_trial
from tests.test_trial import _cfg


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(11, 6)
        self.proj = torch.nn.Linear(6, 6)
        self.norm = torch.nn.LayerNorm(6)

    def forward(self, ids):
        return self.norm(self.proj(self.emb(ids)))


def _save(model: torch.nn.Module, folder: Path, shards: int = 1) -> Path:
    sd = {n: p.detach().clone() for n, p in model.state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    if shards == 1:
        save_file(sd, str(folder / "model.safetensors"))
        return folder
    names = sorted(sd)
    weight_map = {}
    for k in range(shards):
        part = {n: sd[n] for n in names[k::shards]}
        fname = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        save_file(part, str(folder / fname))
        weight_map.update({n: fname for n in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return folder


@pytest.mark.parametrize("shards", [1, 2])
def test_reads_equal_safetensors_own_loader(tmp_path, shards):
    tensors = {"a": torch.randn(5, 7), "b": torch.randn(3).to(torch.bfloat16), "c": torch.arange(10),
               "d": torch.randn(2, 2).half()}
    if shards == 1:
        save_file(tensors, str(tmp_path / "model.safetensors"))
    else:
        save_file({"a": tensors["a"], "c": tensors["c"]}, str(tmp_path / "s1.safetensors"))
        save_file({"b": tensors["b"], "d": tensors["d"]}, str(tmp_path / "s2.safetensors"))
        (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
            {"weight_map": {"a": "s1.safetensors", "c": "s1.safetensors", "b": "s2.safetensors", "d": "s2.safetensors"}}))
    files = SafetensorsFiles.find(tmp_path)
    assert sorted(files) == sorted(tensors)
    for n, t in tensors.items():
        got = files.read(n)
        assert got.dtype == t.dtype and torch.equal(got, t), n
    buf = torch.empty(9)
    files.read_into("a", buf, start=20)  # a flat range that crosses rows
    assert torch.equal(buf, tensors["a"].reshape(-1)[20:29])
    with pytest.raises(ValueError, match="outside"):
        files.read_into("a", torch.empty(10), start=30)
    with pytest.raises(ValueError, match="contiguous CPU torch.float32"):
        files.read_into("a", torch.empty(3, dtype=torch.float64))
    assert SafetensorsFiles.find(tmp_path / "nothing") is None
    files.close()
    with pytest.raises(ValueError, match="closed"):
        files.read("a")


def test_reading_does_not_map_the_file(tmp_path):
    """The reads go into the tensor's own memory: the file's pages never join the resident set."""
    save_file({"w": torch.randn(16 << 20)}, str(tmp_path / "model.safetensors"))  # 64 MiB
    files = SafetensorsFiles.find(tmp_path)
    buf = torch.empty(16 << 20)

    def rss_file_kb() -> int:
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("RssFile:"))
        return int(line.split()[1])

    before = rss_file_kb()
    for _ in range(3):
        files.read_into("w", buf)
    assert rss_file_kb() - before < 8 << 10  # < 8 MiB; a mapped read would add 64 MiB
    assert torch.equal(buf, load_file(str(tmp_path / "model.safetensors"))["w"])


def test_initial_weights_on_file_are_exact_and_take_no_memory(tmp_path):
    model = _Net()
    files = SafetensorsFiles.find(_save(model, tmp_path))
    init = InitialWeights(model, torch.bfloat16, files=files)
    assert sorted(init.on_file) == sorted(n for n, _ in model.named_parameters())
    assert init.nbytes == 0 and len(init) == len(list(model.parameters()))
    for n, p in model.named_parameters():
        assert torch.equal(init[n], p.detach()), n
    fwd = init.for_forward()
    assert fwd["proj.weight"].dtype == torch.bfloat16  # cast once: the values autocast gives it at every call
    assert torch.equal(fwd["proj.weight"], model.proj.weight.detach().to(torch.bfloat16))
    assert fwd["emb.weight"].dtype == torch.float32 and fwd["norm.weight"].dtype == torch.float32
    # the same numbers through the model as the fp32 weights under autocast
    ids = torch.tensor([[1, 2, 3, 10]])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        want = model(ids)
        got = torch.func.functional_call(model, fwd, (ids,))
    assert torch.equal(got, want)


def test_tensors_the_file_does_not_hold_exactly_stay_in_memory(tmp_path):
    model = _Net()
    _save(model, tmp_path)
    with torch.no_grad():
        model.proj.weight[0, 0] += 1e-3  # the model now differs from its checkpoint in one entry
    init = InitialWeights(model, torch.float32, files=SafetensorsFiles.find(tmp_path))
    assert "proj.weight" not in init.on_file and "proj.weight" in init.tensors
    assert "emb.weight" in init.on_file
    assert torch.equal(init["proj.weight"], model.proj.weight.detach())
    assert init.nbytes == model.proj.weight.numel() * 4


def test_trial_reads_the_initial_weights_back_with_the_same_results(cache_dir, tmp_path):
    common = ("optimizer=adamw", "trainer.steps=3", "trainer.eval_every=0", "task.num_eval=8", "task.num_val=8")
    a = run_trial(_cfg(*common), tmp_path / "checkpoint", progress=False)
    b = run_trial(_cfg(*common, "trainer.initial_weights=memory"), tmp_path / "memory", progress=False)
    assert a["status"] == b["status"] == "ok"
    assert a["mem/reference_bytes"] == 0 < b["mem/reference_bytes"]
    for key in ("train/reward_curve", "eval/test_correct_final", "eval/val_correct_final", "sparsity/changed_fraction_bf16",
                "sparsity/changed_fraction_fp32", "sparsity/update_rank_mean", "optim/update_norm_mean"):
        assert a[key] == b[key], key
    def per_step(run: str, key: str) -> list:
        rows = [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [r[key] for r in rows if key in r]

    for key in ("train/kl", "train/loss", "optim/update_norm"):
        assert per_step("checkpoint", key) == per_step("memory", key), key
    assert any(per_step("checkpoint", "train/kl")[1:])  # the reference forward ran (KL > 0 after the first update)
