"""The shared-prefix forward gives the same log-probs and gradients as the plain one."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from harness.algo.logprobs import GroupBatch, completion_logprobs


def _model():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, head_dim=16, intermediate_size=64, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).float()


BATCH = GroupBatch(prompts=[[1, 2, 3, 4, 5], [6, 7]], completions=[[8, 9, 10], [11], [12, 13], [14, 15, 16, 17]],
                   group_size=2)


def test_matches_naive_log_softmax():
    m = _model()
    lp = completion_logprobs(m, BATCH, pad_id=0, shared_prefix=True)
    assert lp.shape == (10,)
    for seq_i, start in ((0, 0), (3, 6)):  # sequences 0 and 3, offsets of their tokens in lp
        prompt = BATCH.prompts[seq_i // 2]
        comp = BATCH.completions[seq_i]
        seq = torch.tensor([prompt + comp])
        ref = torch.log_softmax(m(seq).logits[0].float(), -1)
        want = [ref[len(prompt) + j - 1, t].item() for j, t in enumerate(comp)]
        assert torch.allclose(lp[start:start + len(comp)], torch.tensor(want), atol=1e-5)


def test_shared_prefix_equals_full_sequences_with_grads():
    m = _model()
    a = completion_logprobs(m, BATCH, 0, shared_prefix=True)
    a.sum().backward()
    ga = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    b = completion_logprobs(m, BATCH, 0, shared_prefix=False)
    b.sum().backward()
    assert torch.allclose(a, b, atol=1e-5)
    for x, y in zip(ga, (p.grad for p in m.parameters())):
        assert torch.allclose(x, y, atol=1e-5)
