"""A tiny Llama model with its own tokenizer, built offline in seconds (tests and smoke runs).

    python -m harness model=tiny

`build(arch, out_dir)` trains a byte-level BPE tokenizer (ChatML special tokens, SmolLM2's chat
format), builds a LlamaForCausalLM from `model.tiny`, then pretrains it for a few seconds (AdamW, on
CPU, seeded) on chat-formatted sums from the arithmetic task, with the loss on the answer tokens and
the closing <|im_end|>. It learns the format and some of the sums, not all: greedy accuracy on
held-out sums is well above zero and well below one, and sampled answers vary, so GRPO groups get
reward variance. Half of the 400 sums in [1, 20] are held out of pretraining (`held_out_problems`).
The folder is a standard Hugging Face one (config.json of LlamaForCausalLM, model.safetensors,
tokenizer, generation_config.json) that transformers and vLLM load.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path
from typing import Any

import torch

from harness.tasks.arithmetic import make_problems
from harness.tasks.base import Problem

# Bump when the build changes in a way the config does not show (the cache key includes it).
FORMAT_VERSION = 1

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # ids 0, 1, 2 as in SmolLM2
EOS = "<|im_end|>"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# The pretraining corpus: the arithmetic task's defaults (conf/task/arithmetic.yaml; a test checks
# they agree) and which sums are seen. Part of the cache key.
CORPUS = {
    "prompt_template": "What is {question}? Answer with just the number.",
    "min_value": 1,
    "max_value": 20,
    "ops": ["+"],
    "num_problems": 200,  # of the 400 sums in [1, 20]; the rest are held out
    "seed": 1234,
}
BATCH_SIZE = 32

# Plain text for the tokenizer besides the corpus, so that common words (and the math task's
# prompt) become single tokens and the merges fill the vocabulary.
_TEXT = (
    "What is the answer? Answer with just the number. Let's think step by step and output the final "
    "answer within \\boxed{}. You are a helpful assistant. Solve the following math problem and put "
    "your final answer in a box. The sum of two numbers is their total: add them, then check the "
    "result. If a number is even, it can be divided by two; an odd number cannot. How many apples are "
    "left when you take some away? First compute the value, then simplify the expression and find "
    "the largest and smallest values of x and y. A triangle has three sides and three angles; a "
    "square has four equal sides. Multiply, divide, plus, minus, times, equals, fraction, percent, "
    "integer, prime, factor, remainder, square root, probability, function, equation, solution, "
    "positive, negative, greater, less, than, because, therefore, so, we, have, get, need, each, "
    "every, there, are, was, were, will, would, should, could, this, that, these, those, which, "
    "when, where, why, how, who, what, not, no, yes, true, false, only, also, just, more, most, many."
)


def cache_key(arch: dict[str, Any]) -> str:
    """Hash of the tiny arch (incl. pretraining settings), the corpus settings and FORMAT_VERSION."""
    blob = json.dumps({"arch": arch, "corpus": CORPUS, "version": FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def corpus_problems() -> list[Problem]:
    """The sums the tiny model is pretrained on."""
    c = CORPUS
    return make_problems(c["num_problems"], c["seed"], c["min_value"], c["max_value"], c["ops"])


def held_out_problems() -> list[Problem]:
    """Every sum of the corpus's range the model never saw in pretraining (sorted, deterministic)."""
    c = CORPUS
    seen = frozenset(p.question for p in corpus_problems())
    space = (c["max_value"] - c["min_value"] + 1) ** 2 * len(c["ops"])
    rest = make_problems(space - len(seen), 0, c["min_value"], c["max_value"], c["ops"], exclude=seen)
    return sorted(rest, key=lambda p: p.question)


def prompt_messages(problem: Problem) -> list[dict[str, str]]:
    return [{"role": "user", "content": CORPUS["prompt_template"].replace("{question}", problem.question)}]


def build_tokenizer(vocab_size: int):
    """Byte-level BPE trained on the corpus's chat turns plus plain text; ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = []
    for p in make_problems(400, 0, CORPUS["min_value"], CORPUS["max_value"], CORPUS["ops"]):
        user = CORPUS["prompt_template"].replace("{question}", p.question)
        texts.append(f"user\n{user}\nassistant\n{p.answer}\n")  # the trainer would merge "<|" etc.
    texts += [_TEXT] * 4 + _TEXT.split()

    tok = Tokenizer(models.BPE())
    # One token per digit (SmolLM2's vocabulary has no multi-digit tokens either): the model then
    # learns something of addition in a few hundred steps; with numbers as tokens it only memorises.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=EOS, unk_token=None, bos_token=None,
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t != EOS],
        padding_side="left", model_max_length=1 << 30,
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf


def _examples(tokenizer, problems: list[Problem]) -> list[tuple[list[int], int]]:
    """(token ids of prompt + answer + <|im_end|>, prompt length) per problem, as generation sees them."""
    eos = tokenizer.convert_tokens_to_ids(EOS)
    out = []
    for p in problems:
        prompt = tokenizer.apply_chat_template(prompt_messages(p), add_generation_prompt=True, tokenize=False)
        ids = tokenizer(prompt, add_special_tokens=False).input_ids
        out.append((ids + tokenizer(p.answer, add_special_tokens=False).input_ids + [eos], len(ids)))
    return out


def pretrain(model, tokenizer, steps: int, lr: float, seed: int) -> float:
    """AdamW on random batches of the corpus, loss on answer tokens and <|im_end|>. Returns the last loss."""
    examples = _examples(tokenizer, corpus_problems())
    pad = tokenizer.pad_token_id
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20) * (1 - s / max(steps, 1)))
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        batch = [examples[rng.randrange(len(examples))] for _ in range(BATCH_SIZE)]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), pad)  # [B, L] right-padded
        labels = torch.full((len(batch), width), -100)  # [B, L] -100: no loss
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (ids, n_prompt) in enumerate(batch):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            labels[i, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
            mask[i, : len(ids)] = 1
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    model.eval()
    return loss.item()


def build(arch: dict[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """Tokenizer + LlamaForCausalLM from `arch` (the model.tiny dict), pretrained, saved to out_dir."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    t0 = time.perf_counter()
    tokenizer = build_tokenizer(arch["vocab_size"])
    eos = tokenizer.convert_tokens_to_ids(EOS)
    config = LlamaConfig(
        # the merges may run out before vocab_size on this small corpus: pad the embedding then
        vocab_size=max(arch["vocab_size"], len(tokenizer)), hidden_size=arch["hidden_size"],
        num_hidden_layers=arch["num_layers"],
        num_attention_heads=arch["num_heads"], num_key_value_heads=arch["num_heads"],
        head_dim=arch["head_dim"], intermediate_size=arch["intermediate_size"],
        max_position_embeddings=arch["max_position_embeddings"], tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=eos, pad_token_id=eos, dtype="float32",
    )
    threads = torch.get_num_threads()
    # One thread: faster for matrices this small (and no slowdown when trials share the cores), and
    # the same float results on any machine. fork_rng leaves the caller's RNG as it was.
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(arch["seed"])
            model = LlamaForCausalLM(config)
            loss = pretrain(model, tokenizer, arch["pretrain_steps"], arch["pretrain_lr"], arch["seed"])
    finally:
        torch.set_num_threads(threads)
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=eos)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {"final_loss": round(loss, 4), "params": sum(p.numel() for p in model.parameters()),
            "vocab_size": len(tokenizer), "build_s": round(time.perf_counter() - t0, 2)}
