"""load_tokenizer(model_dir, cfg.model) takes the model config's `revision` and `trust_remote_code`,
as load_model does. Offline and real: a Hugging Face hub cache laid out by hand with two revisions
of a repository (HF_HUB_OFFLINE=1 resolves `refs/<revision>` to its snapshot), and a tokenizer
folder whose class is custom code (`auto_map`)."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from hydra import compose, initialize_config_dir

from harness.config import register
from tests.conftest import ROOT

register()
TOKENIZER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def _tiny_dir(cache_dir) -> Path:
    from harness.models import resolve_model_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["model=tiny"])
    return Path(resolve_model_dir(cfg.model, cache_dir))


def _copy_tokenizer(src: Path, dst: Path, **config) -> None:
    dst.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy(src / name, dst / name)
    tc = json.loads((dst / "tokenizer_config.json").read_text())
    (dst / "tokenizer_config.json").write_text(json.dumps({**tc, **config}))


def _load(hub_cache: Path, cases: list[tuple[str, dict]]) -> list[dict]:
    """load_tokenizer(model_dir, model config) for each case, in one fresh process (the hub cache
    location is read at import): the class, model_max_length, pad token and side, or the error."""
    code = textwrap.dedent(f"""
        import json
        from omegaconf import OmegaConf
        from harness.models import load_tokenizer
        for model_dir, model in {cases!r}:
            try:
                tok = load_tokenizer(model_dir, OmegaConf.create(model))
                out = {{"class": type(tok).__name__, "max_len": tok.model_max_length, "pad": tok.pad_token,
                        "side": tok.padding_side}}
            except Exception as e:
                out = {{"error": f"{{type(e).__name__}}: {{e}}"}}
            print("RESULT " + json.dumps(out), flush=True)
    """)
    env = dict(os.environ, HF_HUB_CACHE=str(hub_cache), HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(hub_cache / "modules"))
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    return [json.loads(line[7:]) for line in p.stdout.splitlines() if line.startswith("RESULT ")]


def test_tokenizer_comes_from_the_configured_revision(cache_dir, tmp_path):
    tiny = _tiny_dir(cache_dir)
    repo = tmp_path / "hub" / "models--someone--tiny"
    for rev, commit, max_len in (("main", "a" * 40, 111), ("v2", "b" * 40, 222)):
        _copy_tokenizer(tiny, repo / "snapshots" / commit, model_max_length=max_len)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / rev).write_text(commit)
    main, v2, v3 = _load(tmp_path / "hub", [("someone/tiny", {"revision": None}), ("someone/tiny", {"revision": "v2"}),
                                          ("someone/tiny", {"revision": "v3"})])
    assert main["max_len"] == 111
    assert v2["max_len"] == 222 and v2["side"] == "left" and v2["pad"]
    assert "error" in v3  # no such revision: an error, not main's files


def test_tokenizer_runs_custom_code_only_when_trusted(cache_dir, tmp_path):
    tiny = _tiny_dir(cache_dir)
    folder = tmp_path / "custom"
    _copy_tokenizer(tiny, folder, auto_map={"AutoTokenizer": [None, "tokenization_mine.MineTokenizer"]})
    (folder / "tokenization_mine.py").write_text(
        "from transformers import PreTrainedTokenizerFast\n\n\nclass MineTokenizer(PreTrainedTokenizerFast):\n    pass\n")
    trusted, untrusted, plain = _load(tmp_path / "hub", [(str(folder), {"trust_remote_code": True}),
                                                         (str(folder), {"trust_remote_code": False}),
                                                         (str(tiny), {})])
    assert trusted.get("class") == "MineTokenizer", trusted
    assert untrusted.get("class") == plain["class"] != "MineTokenizer", untrusted  # the code was not run
