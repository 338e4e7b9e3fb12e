"""FSDP2 worker for tests/test_distributed.py: parity, DCP resume and failure cases on the tiny model.

    .venv/bin/torchrun --nproc-per-node 2 --master-port 29512 tests/dist_scripts/fsdp_worker.py parity OUT CACHE
    .venv/bin/python tests/dist_scripts/fsdp_worker.py reference OUT CACHE        # one process, no FSDP
    .venv/bin/python tests/dist_scripts/fsdp_worker.py single OUT CACHE           # one process, FSDP2

Each variant trains the tiny Llama for 3 steps on fixed batches (each rank its half of the prompts,
groups never split), loss = -sum(logp * w) over local tokens / GLOBAL token count, with the same
forward as the trainer (harness.algo.logprobs.completion_logprobs: decoder, then head). Rank 0
writes the loss, grad norm and full fp32 weights after each step to OUT/<mode>-<variant>.pt.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from harness.algo.logprobs import GroupBatch, completion_logprobs  # noqa: E402
from harness.distributed import checkpoint, failure, fsdp, reduce  # noqa: E402
from harness.distributed.env import init_distributed  # noqa: E402

K, G, STEPS = 4, 2, 3
# Clipping is active at step 1 only (grad norms ~5.4, 2.3, 2.5): steps 2-3 would show gradients
# averaged instead of summed. AdamW at lr 1e-4: Adam's update amplifies the fp32 rounding of
# gradients near eps (1e-8) by lr/eps; at lr 1e-2 one process alone differs from itself by 4e-5
# when the batch is split in two (re-associated sums), at 1e-4 by ~4e-7.
MAX_NORM = 3.0
OPTIMIZERS = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.5),
    "momentum": lambda ps: torch.optim.SGD(ps, lr=0.2, momentum=0.9),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-4, weight_decay=0.1),  # see MAX_NORM
}
# name -> (optimizer, shared_prefix, gradient_checkpointing, distributed overrides, precision)
# precision: fp32; autocast = bf16 autocast as the one-process trainer does, FSDP gathering fp32;
# bf16-params = the same autocast, FSDP gathering bf16 (compute_dtype=bfloat16)
VARIANTS = {
    "sgd": ("sgd", True, False, {}, "fp32"),
    "momentum": ("momentum", True, False, {}, "fp32"),
    "adamw": ("adamw", True, False, {}, "fp32"),
    "adamw-gc": ("adamw", False, True, {}, "fp32"),  # full sequences + activation checkpointing
    "momentum-keep": ("momentum", True, False, {"reshard_after_forward": False}, "fp32"),  # ZeRO-2
    "sgd-offload": ("sgd", True, False, {"cpu_offload": True}, "fp32"),
    "adamw-untied": ("adamw", True, False, {}, "fp32"),  # lm_head with its own weight
    "momentum-micro": ("momentum", True, False, {"micro": 2}, "fp32"),  # 2 backwards per rank per step
    "momentum-autocast": ("momentum", True, False, {}, "autocast"),
    "momentum-bf16": ("momentum", True, False, {}, "bf16-params"),
}


def compose(strategy: str):
    """The model=tiny and distributed=<strategy> nodes, read from their YAML files (defaults once, in conf/)."""
    def node(group: str, name: str):
        cfg = OmegaConf.load(ROOT / "conf" / group / f"{name}.yaml")
        cfg.pop("defaults", None)
        return cfg

    dist_cfg = node("distributed", strategy)
    dist_cfg.timeout_s = 30
    model_cfg = node("model", "tiny")
    for key, value in {"revision": None, "trust_remote_code": False, "gguf_file": None}.items():
        model_cfg.setdefault(key, value)  # the schema's optional fields
    return OmegaConf.create({"model": model_cfg, "distributed": dist_cfg})


def batch_for(step: int, vocab: int) -> tuple[GroupBatch, torch.Tensor]:
    """The full batch of a step (K prompts x G completions) and one loss weight per completion token."""
    g = torch.Generator().manual_seed(1000 + step)
    prompts = [torch.randint(3, vocab, (int(torch.randint(3, 8, (1,), generator=g)),), generator=g).tolist()
               for _ in range(K)]
    comps = [torch.randint(3, vocab, (int(torch.randint(1, 6, (1,), generator=g)),), generator=g).tolist()
             for _ in range(K * G)]
    weights = torch.randn(sum(len(c) for c in comps), generator=g)  # [N]
    return GroupBatch(prompts, comps, G), weights


def shard(batch: GroupBatch, weights: torch.Tensor, rank: int, world: int) -> tuple[GroupBatch, torch.Tensor]:
    """Part `rank` of `world`: its prompts (consecutive) with their whole groups, and their weights."""
    per = len(batch.prompts) // world
    lo, hi = rank * per, (rank + 1) * per
    offsets = [0]
    for c in batch.completions:
        offsets.append(offsets[-1] + len(c))
    sub = GroupBatch(batch.prompts[lo:hi], batch.completions[lo * G:hi * G], G)
    return sub, weights[offsets[lo * G]:offsets[hi * G]]


def full_weights(model) -> dict[str, torch.Tensor]:
    """Every parameter gathered in full (collective), fp32, on CPU."""
    out = {}
    for name, p in model.named_parameters():
        t = p.full_tensor() if hasattr(p, "full_tensor") else p
        out[name] = t.detach().float().cpu().clone()
    return out


def build(cfg, env, cache: str, variant: str):
    from harness.models import load_model, resolve_model_dir

    opt_name, shared_prefix, gc, overrides, precision = VARIANTS[variant]
    overrides = dict(overrides)
    micro = overrides.pop("micro", 1)  # micro-batches per rank (FSDP runs only)
    compute_dtype = torch.bfloat16 if precision == "bf16-params" else torch.float32
    model = load_model(cfg.model, resolve_model_dir(cfg.model, cache))
    model.train()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    if variant.endswith("-untied"):
        model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
        model.config.tie_word_embeddings = False
    tied = model.lm_head.weight is model.model.embed_tokens.weight
    if env.mesh is not None:
        fsdp.apply_fsdp2(model, OmegaConf.merge(cfg.distributed, overrides), env.mesh, compute_dtype, gc)
        assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied, "tie changed"
        assert all(type(p).__name__ == "DTensor" for p in model.parameters()), "not all parameters sharded"
        assert all(p.dtype == torch.float32 for p in model.parameters()), "master weights not fp32"
    elif gc:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.autocast = precision != "fp32"
    model.micro = micro if env.mesh is not None else 1
    return model, OPTIMIZERS[opt_name](list(model.parameters())), shared_prefix


def train_step(model, opt, env, step: int, shared_prefix: bool, pad: int, micro: int = 1, fail_rank: int = -1,
               hang: bool = False):
    """One step on this rank's half of the batch (`micro` > 1: in `micro` consecutive parts, one
    backward each, gradients accumulated). `fail_rank` raises at step 2, or with `hang` stops
    answering (sleeps) there."""
    if env.rank == fail_rank and step == 2:
        if hang:
            time.sleep(600)  # alive but silent: the others' next collective times out
        raise ValueError(f"injected failure on rank {env.rank} at step {step}")
    batch, w = batch_for(step, model.config.vocab_size)
    local, lw = shard(batch, w, env.rank, env.world_size)
    n_global = reduce.global_count(local.num_tokens)
    assert n_global == batch.num_tokens
    amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=model.autocast)
    with torch.no_grad(), amp:  # as the trainer's old/reference log-probs: a forward without backward first
        completion_logprobs(model, local, pad, shared_prefix)
    if env.mesh is not None and step % 2 == 1:  # after no-grad forwards the head group stays gathered
        assert any(type(p).__name__ != "DTensor" for p in model.parameters()), "expected gathered parameters"
        fsdp.reshard(model)
        assert all(type(p).__name__ == "DTensor" for p in model.parameters()), "reshard left gathered parameters"
    opt.zero_grad(set_to_none=True)
    loss_sum = 0.0
    for part in range(micro):
        mb, mw = shard(local, lw, part, micro) if micro > 1 else (local, lw)
        with amp:
            logp = completion_logprobs(model, mb, pad, shared_prefix).float()  # [N_mb]
        loss = -(logp * mw).sum() / n_global
        loss.backward()
        loss_sum += loss.item()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
    norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
    opt.step()
    if env.mesh is not None:
        assert all(type(p).__name__ == "DTensor" for p in model.parameters()), "parameters left gathered"
    (loss_sum,) = reduce.all_reduce_sum([loss_sum])
    return loss_sum, norm.item()


def run(mode: str, out: Path, cache: str) -> None:
    torch.set_num_threads(1)
    strategy = "none" if mode in ("reference", "accum") else "fsdp2"
    cfg = compose(strategy)
    if mode == "hang":
        cfg.distributed.timeout_s = 5
    failure.install_sigterm_handler()
    env = init_distributed(cfg.distributed, "cpu")
    pad = 2
    try:
        if mode in ("failure", "hang"):
            failure.clear_failures(out, env.rank)
            try:
                model, opt, sp = build(cfg, env, cache, "sgd")
                for step in range(1, STEPS + 1):
                    train_step(model, opt, env, step, sp, pad, fail_rank=1, hang=mode == "hang")
            except BaseException as e:
                failure.record_failure(out, env.rank, e)
                if env.rank == 0:
                    reason = failure.failure_reason(e, out, env.rank)
                    (out / "outcome.json").write_text(
                        __import__("json").dumps({"status": "failed", "reason": reason, "time": time.time(),
                                                  "own_error": failure.one_line(e)}))
                raise
            return
        if mode in ("parity", "reference"):  # the root forward (generation's path) on the wrapped model
            model, _, _ = build(cfg, env, cache, "sgd")
            model.eval()
            ids = torch.tensor([[5, 17, 33, 101, 7, 250], [9, 9, 4, 300, 12, 77]])
            with torch.no_grad():
                logits = model(input_ids=ids).logits.float()  # [2, 6, V]
                gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4,
                                     do_sample=False)
            if env.mesh is not None:  # generation with everything gathered once, then back to shards
                with fsdp.gathered(model):
                    assert not any(type(p).__name__ == "DTensor" for p in model.parameters())
                    with torch.no_grad():
                        again = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                               max_new_tokens=4, do_sample=False)
                assert torch.equal(again, gen)
                assert all(type(p).__name__ == "DTensor" for p in model.parameters())
                with torch.no_grad():
                    model(input_ids=ids)
                layers = fsdp.decoder_layers(model)  # resharded after forward again; the head group not
                assert all(type(p).__name__ == "DTensor" for layer in layers for p in layer.parameters())
                assert type(model.lm_head.weight).__name__ != "DTensor"
                fsdp.reshard(model)
            if env.is_main:
                torch.save({"logits": logits, "generated": gen}, out / f"{mode}-forward.pt")
        if mode == "parity":  # the small collectives, on values that differ per rank
            r = env.rank
            sums = reduce.all_reduce_sum([r + 1, 0.5 * (r + 1), True, 2**40 + r])
            result = {"sums": sums, "types": [type(x).__name__ for x in sums],
                      "agree": reduce.agree(f"folder-of-rank-{r}"), "gather": reduce.gather_values({"rank": r}),
                      "count": reduce.global_count(torch.tensor(10 + r)),
                      "env_agree": env.agree(r * 7), "env_gather": env.all_gather_object(r)}
            if env.is_main:
                (out / "reduce.json").write_text(__import__("json").dumps(result))
        # reference: one process, the full batch in one forward (every variant); then "accum": the
        # batch in the ranks' two halves, gradients accumulated (bf16 variants: in bf16, how the batch
        # is split changes the padding and so the rounding; fp32 variants as a measure of the floor)
        runs = [(mode, 2 if mode == "accum" else 1, list(VARIANTS))]
        if mode == "reference":
            runs.append(("accum", 2, [v for v in VARIANTS if VARIANTS[v][4] != "fp32"]))
        if mode == "single":  # FSDP2 in one process: a process group of one, no torchrun
            runs = [(mode, 1, ["sgd", "adamw"])]
        for name, micro, variants in runs:
            for variant in variants:
                model, opt, sp = build(cfg, env, cache, variant)
                record = {"loss": [], "grad_norm": [], "weights": [], "world_size": env.world_size,
                          "initial": full_weights(model)}
                start = 1
                if mode == "resume":
                    meta = checkpoint.load_checkpoint(out / f"ckpt-{variant}", model, opt)
                    start = meta["step"] + 1
                for step in range(start, STEPS + 1):
                    loss, norm = train_step(model, opt, env, step, sp, pad, max(micro, model.micro))
                    record["loss"].append(loss)
                    record["grad_norm"].append(norm)
                    record["weights"].append(full_weights(model))
                    if mode == "parity" and step == 2:
                        checkpoint.save_checkpoint(out / f"ckpt-{variant}", model, opt, {"step": step})
                if env.is_main:
                    torch.save(record, out / f"{name}-{variant}.pt")
                env.barrier()
    finally:
        env.close()


if __name__ == "__main__":
    run(sys.argv[1], Path(sys.argv[2]), sys.argv[3])
