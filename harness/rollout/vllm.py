"""Rollouts with a vLLM engine colocated in the trainer's process (rollout=vllm).

    python -m harness rollout=vllm                     # GPU: pip install 'harness[vllm]'
    python -m harness rollout=vllm model=tiny device=cpu   # CPU: bash .ci/vllm_setup.sh

One engine per trial, built from the model folder the trainer loaded. It runs in this process
(VLLM_ENABLE_V1_MULTIPROCESSING=0, as TRL's colocate mode), so `sync_weights` hands the trainer's
live tensors to the engine's weight loaders: no disk round trip, no copy of the whole model. The
loaders go through vLLM's layerwise reload, which re-runs each layer's post-load processing (the CPU
backend repacks linear weights for oneDNN), and then the prefix cache is reset so no KV block
computed with the old weights is reused.

Sampling matches the transformers backend: temperature, top_p, no top-k, stop at the eos token only
(kept at the end of the completion) and not before `min_new_tokens` (vLLM's min_tokens), greedy when
temperature == 0. Seeded per sample: each of a prompt's n samples is its own request with its own
seed (harness.rollout.base.sample_seeds of the prompt's seed), so a prompt's samples do not depend on
which other prompts share the call.

GPU knobs (conf/rollout/vllm.yaml): gpu_memory_utilization, tensor_parallel_size, max_model_len
(capped at the model's max_position_embeddings), dtype, enforce_eager, and enable_sleep_mode: the
engine sleeps (level 1: weights to CPU, KV cache freed) whenever it is not generating, so the
optimizer step gets the memory back. On CPU, kv_cache_space_gb sets VLLM_CPU_KVCACHE_SPACE and sleep
mode is ignored (vLLM has none there).

Pitfalls handled here: vLLM's in-process engine reseeds the global RNGs and replaces
`torch.set_num_threads` with a no-op on CPU; both are restored after the engine starts. With
tensor_parallel_size > 1 the workers are separate processes (spawned: the entry script needs an
`if __name__ == "__main__":` guard) and weights travel to them as CPU tensors in chunks. On CPU,
keep malloc_retain=true (the default, harness.allocator): with glibc's malloc the trainer's update
faulted in ~2.4 GB of fresh pages every step, and with the engine resident that cost up to 3x
more (20% slower updates, measured on the VM: docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from harness.rollout.base import Generation, Sampling, prompt_seeds, sample_seeds
from harness.rollout.vllm_check import require_vllm

log = logging.getLogger(__name__)

_CHUNK_BYTES = 512 << 20  # tensor_parallel_size > 1: weights sent to the workers per RPC
_RELOAD_LOGGER = "vllm.model_executor.model_loader.reload.layerwise"


class VLLMRollout:
    def __init__(self, cfg: Any, model_dir: str, seed: int, device: str | torch.device,
                 eos_token_id: int | None = None):
        """cfg: the `rollout` config node. eos_token_id: the token that ends a completion (default:
        the tokenizer's eos in model_dir; pass the trainer's so both backends stop at the same one)."""
        require_vllm()
        device = torch.device(device)
        self.cfg, self.model_dir = cfg, str(model_dir)
        self.tp = int(cfg.tensor_parallel_size)
        on_cpu = device.type == "cpu"
        if device.type == "cuda" and (device.index or 0) != 0:
            raise ValueError(f"rollout=vllm runs its engine on cuda:0, the trainer is on {device}: "
                             "select the GPU with CUDA_VISIBLE_DEVICES instead")
        # Read when the engine is configured, not at import: setting them here is enough.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # engine core in this process
        if on_cpu:
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(int(cfg.kv_cache_space_gb))

        from vllm import LLM
        from vllm.platforms import current_platform

        if current_platform.device_type != device.type:
            raise ValueError(f"the installed vLLM runs on {current_platform.device_type or 'nothing'}, "
                             f"the trainer on {device.type}: install the vLLM build for {device.type}")
        self.sleep_mode = bool(cfg.enable_sleep_mode) and not on_cpu
        if cfg.enable_sleep_mode and on_cpu:
            log.info("rollout.enable_sleep_mode is ignored on CPU (vLLM has no sleep mode there)")
        self.max_model_len = _max_model_len(self.model_dir, int(cfg.max_model_len))

        t0 = time.perf_counter()
        with _keep_process_state():
            self.llm = LLM(
                model=self.model_dir, dtype=cfg.dtype, seed=seed, max_model_len=self.max_model_len,
                tensor_parallel_size=self.tp, gpu_memory_utilization=float(cfg.gpu_memory_utilization),
                enforce_eager=bool(cfg.enforce_eager), enable_sleep_mode=self.sleep_mode,
                generation_config="vllm",  # no sampling defaults from the model's generation_config.json
            )
        self.start_s = time.perf_counter() - t0  # engine start, seconds
        self.dtype: torch.dtype = self.llm.llm_engine.model_config.dtype
        self.eos = int(eos_token_id if eos_token_id is not None else self.llm.get_tokenizer().eos_token_id)
        self.last_sync_s = 0.0
        self._asleep: set[str] = set()
        self._sleep()
        log.info("vLLM engine up in %.1f s (%s, dtype %s, max_model_len %d, tp %d, sleep mode %s)",
                 self.start_s, current_platform.device_type, self.dtype, self.max_model_len, self.tp,
                 self.sleep_mode)

    # --- generation -------------------------------------------------------------------------------

    def generate(self, prompts: list[list[int]], sampling: Sampling) -> list[list[Generation]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not prompts:
            return []
        longest = max(len(p) for p in prompts)
        if longest + sampling.max_new_tokens > self.max_model_len:
            raise ValueError(f"prompt ({longest} tokens) + max_new_tokens ({sampling.max_new_tokens}) "
                             f"exceeds rollout.max_model_len={self.max_model_len}")
        greedy = sampling.temperature == 0.0
        # One request per sample, each with its own seed (harness.rollout.base.sample_seeds): the
        # samples of a prompt do not depend on the other requests. Greedy: one request, copied n times.
        n = 1 if greedy else sampling.n
        seeds = [None] * len(prompts) if greedy else [sample_seeds(s, n) for s in prompt_seeds(sampling, len(prompts))]
        requests, params = [], []
        for p, row_seeds in zip(prompts, seeds):
            for j in range(n):
                requests.append(TokensPrompt(prompt_token_ids=[int(t) for t in p]))
                params.append(SamplingParams(
                    n=1, temperature=sampling.temperature, top_p=1.0 if greedy else sampling.top_p, top_k=0,
                    max_tokens=sampling.max_new_tokens, min_tokens=sampling.min_new_tokens,
                    seed=None if greedy else row_seeds[j],
                    ignore_eos=True, stop_token_ids=[self.eos],  # stop at self.eos, and only there
                    detokenize=False))
        self._wake(("weights", "kv_cache"))
        try:
            outs = self.llm.generate(requests, params, use_tqdm=False)  # in request order
        finally:
            self._sleep()
        gens = [self._generation(out.outputs[0]) for out in outs]
        if greedy:
            return [[Generation(list(g.completion_ids), g.finished) for _ in range(sampling.n)] for g in gens]
        return [gens[i * n:(i + 1) * n] for i in range(len(prompts))]

    def _generation(self, completion: Any) -> Generation:
        ids = list(completion.token_ids)
        if completion.finish_reason not in ("stop", "length"):
            raise RuntimeError(f"vLLM request ended with finish_reason={completion.finish_reason!r}")
        finished = completion.finish_reason == "stop"
        if finished and (not ids or ids[-1] != self.eos):
            ids.append(self.eos)  # vLLM keeps a stop token id in token_ids; this guards the contract
        return Generation(ids, finished)

    # --- weight sync ------------------------------------------------------------------------------

    @torch.no_grad()
    def sync_weights(self, model: torch.nn.Module) -> None:
        """Load `model`'s parameters (HF names, any dtype/device) into the engine in place."""
        t0 = time.perf_counter()
        self._wake(("weights",))
        weights = _named_weights(model, self.dtype, to_cpu=self.tp > 1)
        # tp == 1: the worker is in this process, so it reads the live tensors from the generator.
        chunks: Iterable[Any] = [weights] if self.tp == 1 else _chunked(weights, _CHUNK_BYTES)
        expected = self.llm.collective_rpc(_begin_reload)[0]
        loaded: set[str] = set()
        for chunk in chunks:
            loaded.update(self.llm.collective_rpc(_load_weights, args=(chunk,))[0])
        self.llm.collective_rpc(_end_reload)
        missing = sorted(set(expected) - loaded)
        if missing:
            raise RuntimeError(f"sync_weights: the trainer's model has no weights for {missing[:5]} "
                               f"({len(missing)} engine parameters): is it the model in {self.model_dir}?")
        self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights
        self.last_sync_s = time.perf_counter() - t0

    # --- GPU sleep mode ---------------------------------------------------------------------------

    def _sleep(self) -> None:
        if self.sleep_mode and not self._asleep:
            self.llm.sleep(level=1)  # weights to CPU (kept), KV cache freed
            self._asleep = {"weights", "kv_cache"}

    def _wake(self, tags: tuple[str, ...]) -> None:
        todo = [t for t in tags if t in self._asleep]
        if todo:
            torch.cuda.empty_cache()  # hand the trainer's cached blocks to vLLM's allocator
            self.llm.wake_up(tags=todo)
            self._asleep -= set(todo)

    def close(self) -> None:
        llm, self.llm = self.llm, None
        if llm is None:
            return
        llm.llm_engine.engine_core.shutdown()  # frees the engine, tears down vLLM's process group
        del llm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# --- run inside the engine's worker(s) through collective_rpc (module-level: picklable for tp > 1) --

def _begin_reload(worker: Any) -> list[str]:
    """Put every layer in reload mode; returns the engine's parameter names (all must be loaded)."""
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

    # The per-layer "Failed to load weights" warnings are expected (rotary buffers, a tied lm_head);
    # a real gap raises in sync_weights instead.
    logging.getLogger(_RELOAD_LOGGER).setLevel(logging.ERROR)
    model = worker.model_runner.get_model()
    names = [name for name, _ in model.named_parameters()]
    with set_current_vllm_config(worker.vllm_config):
        initialize_layerwise_reload(model)
    return names


def _load_weights(worker: Any, weights: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    from vllm.config import set_current_vllm_config

    model = worker.model_runner.get_model()
    with set_current_vllm_config(worker.vllm_config):
        loaded = model.load_weights(weights)  # HF checkpoint names; each layer is processed when complete
    return sorted(loaded or ())


def _end_reload(worker: Any) -> None:
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead
    from vllm.model_executor.model_loader.reload import finalize_layerwise_reload
    from vllm.platforms import current_platform

    model = worker.model_runner.get_model()
    with set_current_vllm_config(worker.vllm_config):
        finalize_layerwise_reload(model, worker.model_runner.model_config)
        if current_platform.is_cpu():
            # The CPU backend packs the lm_head's weight for oneDNN; a tied lm_head is not reloaded
            # (embed_tokens is), so its packed copy would keep the old weights: pack it again.
            for module in model.modules():
                if isinstance(module, ParallelLMHead) and hasattr(module, "cpu_linear"):
                    module.quant_method.process_weights_after_loading(module)


# --- helpers -------------------------------------------------------------------------------------

def _named_weights(model: torch.nn.Module, dtype: torch.dtype, to_cpu: bool) -> Iterator[tuple[str, torch.Tensor]]:
    """(HF checkpoint name, tensor in the engine's dtype). named_parameters skips a tied lm_head."""
    for name, p in model.named_parameters():
        name = name.replace("_orig_mod.", "")  # torch.compile wrapper
        name = name[len("module."):] if name.startswith("module.") else name  # DDP wrapper
        t = p.detach()
        if hasattr(t, "full_tensor"):  # FSDP2: gather this one parameter (every rank, in the same order)
            t = t.full_tensor()
        yield name, (t.to("cpu", dtype=dtype) if to_cpu else t.to(dtype))


def _chunked(weights: Iterator[tuple[str, torch.Tensor]], max_bytes: int) -> Iterator[list[tuple[str, torch.Tensor]]]:
    chunk: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, t in weights:
        chunk.append((name, t))
        size += t.numel() * t.element_size()
        if size >= max_bytes:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _max_model_len(model_dir: str, requested: int) -> int:
    path = Path(model_dir) / "config.json"
    if not path.is_file():  # a hub id: vLLM checks the limit itself
        return requested
    config = json.loads(path.read_text())
    limit = config.get("max_position_embeddings") or config.get("text_config", {}).get("max_position_embeddings")
    if limit and requested > limit:
        log.info("rollout.max_model_len=%d > the model's max_position_embeddings=%d: using %d",
                 requested, limit, limit)
        return int(limit)
    return requested


@contextlib.contextmanager
def _keep_process_state() -> Iterator[None]:
    """Undo what an in-process vLLM engine start does to this process: it reseeds python, numpy and
    torch RNGs (the trainer's data order and sampling), and on CPU replaces torch.set_num_threads
    with a no-op (harmless here: no thread binding happens without worker processes)."""
    import numpy as np

    states = (random.getstate(), np.random.get_state(), torch.random.get_rng_state())
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    set_num_threads, threads = torch.set_num_threads, torch.get_num_threads()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        torch.set_num_threads = set_num_threads
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
