"""Update sparsity and update rank on hand-made weights: python -m pytest tests/test_sparsity.py"""

import pytest
import torch

from harness.measure.sparsity import (
    layer_index,
    module_kind,
    snapshot,
    tol_key,
    update_rank,
    update_sparsity,
)

BF16 = "sparsity/changed_fraction_bf16"
FP32 = "sparsity/changed_fraction_fp32"
TOL = "sparsity/changed_fraction_tol1e-5"


def test_update_below_bf16_resolution_is_invisible_in_bf16_only():
    # bf16 spacing at 1.0 is 2**-7 = 0.0078125: +1e-4 rounds back to 1.0 in bf16.
    init = {"w": torch.ones(4)}
    final = {"w": torch.tensor([1.0 + 1e-4, 1.0 + 1e-6, 1.0 + 2**-7, 1.0])}
    out = update_sparsity(init, final, compute_rank=False)
    assert out[BF16] == 1 / 4  # only the 2**-7 step survives the cast
    assert out[FP32] == 3 / 4  # 1e-6 is above fp32 spacing (1.19e-7) at 1.0
    assert out[TOL] == 2 / 4  # 1e-6 is below tol=1e-5
    assert out["sparsity/numel"] == 4


def tiny_state() -> tuple[dict, dict]:
    names_shapes = {
        "model.embed_tokens.weight": (4, 2),
        "model.layers.0.self_attn.q_proj.weight": (2, 2),
        "model.layers.0.self_attn.q_norm.weight": (2,),
        "model.layers.1.mlp.up_proj.weight": (3, 2),
        "model.norm.weight": (2,),
        "lm_head.weight": (4, 2),
    }
    init = {n: torch.ones(s) for n, s in names_shapes.items()}
    final = {n: t.clone() for n, t in init.items()}
    final["model.embed_tokens.weight"][0, 0] += 1.0  # changed everywhere
    final["model.embed_tokens.weight"][1, 1] += 1e-4  # fp32 and tol only
    final["model.layers.0.self_attn.q_proj.weight"][0, 0] += 0.5  # everywhere
    final["model.layers.0.self_attn.q_proj.weight"][1, 1] += 1e-6  # fp32 only
    final["model.layers.1.mlp.up_proj.weight"] += torch.tensor(
        [[0.25, 0.5], [0.5, 0.25], [0.25, 0.25]])  # all 6 everywhere, rank 2
    final["lm_head.weight"][2, 1] += 1e-4  # fp32 and tol only
    return init, final


def test_overall_by_kind_and_by_layer_fractions():
    init, final = tiny_state()
    out = update_sparsity(init, final)
    # numel 8+4+2+6+2+8 = 30; bf16: 1+1+6 = 8; fp32: 2+2+6+1 = 11; tol: 2+1+6+1 = 10
    assert out["sparsity/numel"] == 30
    assert out[BF16] == pytest.approx(8 / 30)
    assert out[FP32] == pytest.approx(11 / 30)
    assert out[TOL] == pytest.approx(10 / 30)

    k = out["sparsity/by_kind"]
    assert set(k) == {"embed", "attention", "mlp", "norm", "head"}
    assert k["embed"] == {"changed_fraction_bf16": 1 / 8, "changed_fraction_fp32": 2 / 8,
                          "changed_fraction_tol1e-5": 2 / 8, "numel": 8}
    assert k["attention"] == {"changed_fraction_bf16": 1 / 4, "changed_fraction_fp32": 2 / 4,
                              "changed_fraction_tol1e-5": 1 / 4, "numel": 4}
    assert k["norm"] == {"changed_fraction_bf16": 0.0, "changed_fraction_fp32": 0.0,
                         "changed_fraction_tol1e-5": 0.0, "numel": 4}  # q_norm + final norm
    assert k["mlp"]["changed_fraction_bf16"] == 1.0 and k["mlp"]["numel"] == 6
    assert k["head"] == {"changed_fraction_bf16": 0.0, "changed_fraction_fp32": 1 / 8,
                         "changed_fraction_tol1e-5": 1 / 8, "numel": 8}

    layers = out["sparsity/by_layer"]
    assert list(layers) == ["0", "1"]
    # layer 0 = q_proj (4) + q_norm (2)
    assert layers["0"] == {"changed_fraction_bf16": 1 / 6, "changed_fraction_fp32": 2 / 6,
                           "changed_fraction_tol1e-5": 1 / 6, "numel": 6}
    assert layers["1"]["changed_fraction_fp32"] == 1.0 and layers["1"]["numel"] == 6
    mean = out["sparsity/layer_mean"]
    assert mean["changed_fraction_bf16"] == pytest.approx((1 / 6 + 1) / 2)
    assert mean["changed_fraction_fp32"] == pytest.approx((2 / 6 + 1) / 2)
    assert mean["changed_fraction_tol1e-5"] == pytest.approx((1 / 6 + 1) / 2)


def test_rank_summary_on_tiny_state():
    init, final = tiny_state()
    out = update_sparsity(init, final)
    ranks = out["sparsity/update_rank_by_matrix"]
    # only 2-D tensors; norms (1-D) are left out
    assert set(ranks) == {"model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                          "model.layers.1.mlp.up_proj.weight", "lm_head.weight"}
    # up_proj delta D: D^T D = [[.375,.3125],[.3125,.375]], eigenvalues .6875, .0625:
    # top-1 holds .6875/.75 = 91.7% < 99% -> rank 2
    assert ranks["model.layers.1.mlp.up_proj.weight"] == {"rank": 2, "full": 2, "fraction": 1.0}
    # embed delta has singular values 1 and 1e-4: top-1 holds 1/(1+1e-8) -> rank 1
    assert ranks["model.embed_tokens.weight"] == {"rank": 1, "full": 2, "fraction": 0.5}
    assert out["sparsity/update_rank_mean"] == pytest.approx(1.25)
    assert out["sparsity/update_rank_median"] == 1.0
    assert out["sparsity/update_rank_fraction_mean"] == pytest.approx(0.625)
    # lowering the energy threshold below 91.7% makes up_proj rank 1
    low = update_sparsity(init, final, rank_energy=0.9)
    assert low["sparsity/update_rank_by_matrix"]["model.layers.1.mlp.up_proj.weight"]["rank"] == 1


def test_no_rank_keys_without_compute_rank():
    init, final = tiny_state()
    out = update_sparsity(init, final, compute_rank=False)
    assert not any("rank" in k for k in out)


def test_rank_none_without_matrices():
    out = update_sparsity({"b": torch.zeros(3)}, {"b": torch.ones(3)})
    assert out["sparsity/update_rank_by_matrix"] == {}
    assert out["sparsity/update_rank_mean"] is None
    assert out["sparsity/update_rank_median"] is None
    assert out["sparsity/layer_mean"]["changed_fraction_bf16"] is None  # no transformer layers


@pytest.mark.parametrize("method", ["svd", "gram"])
def test_update_rank_by_hand(method):
    u, v = torch.tensor([1.0, -2.0, 3.0]), torch.tensor([0.5, 1.0, 0.0, 2.0])
    assert update_rank(torch.outer(u, v), method=method) == 1  # [3, 4] outer product
    assert update_rank(torch.outer(v, u), method=method) == 1  # [4, 3]: the other Gram side
    d = torch.diag(torch.tensor([3.0, 4.0, 0.0]))  # energy 9 + 16 = 25
    assert update_rank(d, rank_energy=0.6, method=method) == 1  # 16/25 = 0.64 >= 0.6
    assert update_rank(d, rank_energy=0.99, method=method) == 2
    assert update_rank(d, rank_energy=1.0, method=method) == 2  # the zero sigma adds nothing
    assert update_rank(torch.zeros(5, 3), method=method) == 0
    assert update_rank(torch.eye(4), method=method) == 4  # flat spectrum: needs all of them


def test_update_rank_methods_agree():
    torch.manual_seed(0)
    for m, n in [(300, 40), (40, 300)]:
        # spectrum decaying as 0.9**i: the 99% rank is well inside the matrix
        q1, _ = torch.linalg.qr(torch.randn(m, min(m, n)))
        q2, _ = torch.linalg.qr(torch.randn(n, min(m, n)))
        d = 1e-4 * (q1 * 0.9 ** torch.arange(min(m, n))) @ q2.T  # [m, n]
        for energy in (0.5, 0.9, 0.99):
            assert update_rank(d, energy, "svd") == update_rank(d, energy, "gram")
        # sum of 0.81**i over i < k reaches 99% of the total at k = 22
        assert update_rank(d, 0.99, "svd") == 22
    with pytest.raises(ValueError, match="rank method"):
        update_rank(torch.eye(2), method="qr")


def test_tol_key_and_other_tolerance():
    assert tol_key(1e-5) == "tol1e-5"
    assert tol_key(1e-3) == "tol1e-3"
    assert tol_key(1e-10) == "tol1e-10"
    assert tol_key(2.5e-4) == "tol2.5e-4"
    init = {"w": torch.zeros(4)}
    final = {"w": torch.tensor([0.0, 5e-4, 2e-3, 1e-3])}
    out = update_sparsity(init, final, tol=1e-3, compute_rank=False)
    assert out["sparsity/changed_fraction_tol1e-3"] == 1 / 4  # strictly greater than tol
    assert "sparsity/changed_fraction_tol1e-5" not in out


@pytest.mark.parametrize("final_names, shapes, bad", [
    (["a"], [(2,)], "b"),  # b missing from final
    (["a", "b", "c"], [(2,), (2,), (2,)], "c"),  # c only in final
    (["a", "b"], [(2,), (3,)], "b"),  # shape mismatch
])
def test_mismatch_raises_naming_the_key(final_names, shapes, bad):
    init = {"a": torch.zeros(2), "b": torch.zeros(2)}
    final = {n: torch.zeros(s) for n, s in zip(final_names, shapes)}
    with pytest.raises(ValueError, match=f"'{bad}'"):
        update_sparsity(init, final)


def test_module_kind():
    cases = {
        "model.embed_tokens.weight": "embed",
        "transformer.wte.weight": "embed",
        "transformer.wpe.weight": "embed",
        "model.decoder.embed_positions.weight": "embed",
        "bert.embeddings.word_embeddings.weight": "embed",
        "model.layers.0.self_attn.q_proj.weight": "attention",
        "model.layers.0.self_attn.o_proj.bias": "attention",
        "transformer.h.3.attn.c_attn.weight": "attention",
        "transformer.h.3.attn.c_proj.weight": "attention",
        "model.layers.0.self_attn.q_norm.weight": "norm",  # norm inside attention
        "model.layers.0.post_attention_layernorm.weight": "norm",
        "model.layers.0.input_layernorm.weight": "norm",
        "transformer.h.3.ln_1.weight": "norm",
        "transformer.ln_f.bias": "norm",
        "model.norm.weight": "norm",
        "model.layers.0.mlp.gate_proj.weight": "mlp",
        "model.layers.0.mlp.down_proj.weight": "mlp",
        "transformer.h.3.mlp.c_fc.weight": "mlp",
        "transformer.h.3.mlp.c_proj.weight": "mlp",
        "model.decoder.layers.1.fc1.weight": "mlp",
        "lm_head.weight": "head",
        "gpt_neox.embed_out.weight": "head",
        "score.weight": "other",
        "model.rotary_emb.inv_freq": "other",
    }
    assert {n: module_kind(n) for n in cases} == cases


def test_layer_index():
    assert layer_index("model.layers.12.mlp.up_proj.weight") == 12
    assert layer_index("transformer.h.3.attn.c_attn.weight") == 3
    assert layer_index("vision.blocks.7.attn.qkv.weight") == 7
    assert layer_index("layers.2.attention.wq.weight") == 2
    assert layer_index("model.embed_tokens.weight") is None
    assert layer_index("model.norm.weight") is None


def test_snapshot_is_a_detached_fp32_copy():
    model = torch.nn.Linear(3, 2).to(torch.bfloat16)
    snap = snapshot(model)
    assert set(snap) == {"weight", "bias"}
    assert snap["weight"].dtype == torch.float32 and not snap["weight"].requires_grad
    before = snap["weight"].clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    assert torch.equal(snap["weight"], before)
    # and it plugs into update_sparsity: every weight moved by 1.0, no bias moved
    out = update_sparsity(snap, dict(model.named_parameters()), compute_rank=False)
    assert out[BF16] == pytest.approx(6 / 8)
    fp32_model = torch.nn.Linear(3, 2)
    s32 = snapshot(fp32_model)
    assert s32["weight"].data_ptr() != fp32_model.weight.data_ptr()  # a copy even when fp32


def test_gram_rank_keeps_full_fp32_matmul_precision():
    torch.set_float32_matmul_precision("medium")  # what a trainer might set for TF32 speed
    try:
        d = torch.diag(torch.tensor([3.0, 4.0, 0.0]))
        assert update_rank(d, 0.99, "gram") == 2
        assert torch.get_float32_matmul_precision() == "medium"  # restored afterwards
    finally:
        torch.set_float32_matmul_precision("highest")


def test_rank_survives_huge_and_nonfinite_updates():
    big = torch.outer(torch.tensor([1e30, 2e30, 0.0]), torch.tensor([1.0, -1.0]))  # rank 1, D^T D overflows fp32
    assert update_rank(big) == 1
    assert update_rank(torch.full((3, 2), float("inf"))) is None
    tiny_delta = torch.outer(torch.tensor([1e-30, 3e-30]), torch.tensor([1.0, 2.0]))  # would underflow
    assert update_rank(tiny_delta) == 1


# ---------------------------------------------------------------- why bf16 looks sparse

from harness.measure.sparsity import abs_histogram, bf16_half_step, histogram_median  # noqa: E402

RA = "sparsity/rounded_away_fraction"


def test_bf16_half_step_by_hand():
    w = torch.tensor([1.0, 1.5, -2.0, 0.75, 3e-3, 0.0])
    # bf16 spacing just above |w|: 2**-7 in [1, 2), 2**-6 in [2, 4), 2**-8 in [0.5, 1); 3e-3 in [2**-9, 2**-8)
    expected = torch.tensor([2**-8, 2**-8, 2**-7, 2**-9, 2**-17, 0.0])
    assert torch.equal(bf16_half_step(torch.tensor([1e-39, 1e-45])), torch.zeros(2))  # subnormal weights
    assert torch.equal(bf16_half_step(w), expected)
    # the definition: w moved away from 0 by just under half a step rounds back to w in bf16, by a
    # full step it does not (towards 0 from a power of 2 the spacing halves: the step "above" |w|)
    on_grid = torch.tensor([1.0, 1.5, -2.0, 0.75])
    away = on_grid.sign() * bf16_half_step(on_grid)
    assert torch.equal((on_grid + 0.99 * away).bfloat16(), on_grid.bfloat16())
    assert (on_grid + 2 * away).bfloat16().ne(on_grid.bfloat16()).all()


def test_sub_resolution_update_counts_zero_in_bf16_all_in_fp32_and_as_rounded_away():
    # weights exactly representable in bf16 (as the lead's bf16 `initial` may be), each moved by
    # 1e-4 of its size: 25x below half a bf16 step (2**-9 = 0.00195 relative), far above fp32's.
    init = {"model.layers.0.mlp.up_proj.weight": torch.tensor([[1.0, -0.5], [0.25, 3.0]]).bfloat16(),
            "model.layers.0.self_attn.q_proj.weight": torch.tensor([[2.0, -4.0], [0.125, 1.5]])}
    final = {n: t.float() * (1 + 1e-4) for n, t in init.items()}
    out = update_sparsity(init, final, compute_rank=False)
    assert out[BF16] == 0.0 and out[FP32] == 1.0 and out[RA] == 1.0
    assert out["sparsity/moved_bf16_equal_fraction"] == 1.0
    by_kind = out["sparsity/rounded_away_by_kind"]
    assert set(by_kind) == {"attention", "mlp"}
    for kind in by_kind.values():
        assert kind["changed_fraction_bf16"] == 0.0 and kind["changed_fraction_fp32"] == 1.0
        assert kind["rounded_away_fraction"] == 1.0


def test_decomposition_on_a_mixed_update():
    w = torch.ones(8)  # half bf16 step at 1.0: 2**-8 = 0.0039
    delta = torch.tensor([0.0, 0.0, 1e-3, -1e-3, 2e-3, 0.01, -0.02, 0.5])
    out = update_sparsity({"lm_head.weight": w}, {"lm_head.weight": w + delta}, compute_rank=False)
    assert out[FP32] == 6 / 8
    assert out[RA] == 3 / 8  # 1e-3, -1e-3, 2e-3 are below 0.0039; 0.01 and up are not
    assert out[BF16] == 3 / 8  # and those three do round back to 1.0 in bf16
    assert out[FP32] == pytest.approx(out[BF16] + out["sparsity/moved_bf16_equal_fraction"])
    # median of |delta| = [0, 0, 1e-3, 1e-3, 2e-3, 0.01, 0.02, 0.5]: between 1e-3 and 2e-3
    assert 1e-3 * 0.97 <= out["sparsity/update_abs_median"] <= 2e-3 * 1.03
    assert out["sparsity/rounded_away_by_kind"]["head"]["update_abs_median"] == out["sparsity/update_abs_median"]


def test_histogram_median_matches_the_exact_median():
    g = torch.Generator().manual_seed(0)
    parts = [torch.randn(1000, generator=g) * 10 ** -k for k in range(2, 7)]  # spans 5+ decades
    parts.append(torch.zeros(300))
    counts = sum(abs_histogram(p) for p in parts)  # tensor by tensor, as update_sparsity does
    exact = torch.cat(parts).abs().median().item()  # torch's lower median; 5300 values
    assert counts[0] == 300  # the zeros
    assert histogram_median(counts) == pytest.approx(exact, rel=0.008)
    assert histogram_median(counts + abs_histogram(torch.zeros(10**4))) == 0.0  # mostly zeros: median 0
    assert histogram_median(torch.zeros_like(counts)) is None
    one = histogram_median(abs_histogram(torch.tensor([1.0, -1.0, 1.0])))  # bin [1, 1 + 2**-7)
    assert 1.0 <= one < 1.0 + 2**-7


def test_no_decomposition_keys_without_decompose():
    init, final = {"w": torch.ones(3)}, {"w": torch.ones(3) * 1.0001}
    out = update_sparsity(init, final, compute_rank=False, decompose=False)
    assert RA not in out and "sparsity/update_abs_median" not in out and out[FP32] == 1.0


@pytest.mark.parametrize("block", [1, 13, 1 << 20])
def test_blockwise_counts_equal_one_block_per_tensor(block):
    """The counts run over flat blocks: any block size gives the same result, bit for bit."""
    g = torch.Generator().manual_seed(0)
    initial = {"model.embed_tokens.weight": torch.randn(20, 6, generator=g),
               "model.layers.0.mlp.up_proj.weight": torch.randn(6, 5, generator=g),
               "model.norm.weight": torch.ones(6)}
    scale = {"model.embed_tokens.weight": 1e-3, "model.layers.0.mlp.up_proj.weight": 3e-2, "model.norm.weight": 1e-4}
    final = {n: t + scale[n] * torch.randn(t.shape, generator=g) * (torch.rand(t.shape, generator=g) < 0.6)
             for n, t in initial.items()}
    whole = update_sparsity(initial, final, block=1 << 30)
    assert update_sparsity(initial, final, block=block) == whole
    assert 0 < whole["sparsity/changed_fraction_bf16"] < whole["sparsity/changed_fraction_fp32"] < 1
    assert whole["sparsity/rounded_away_fraction"] > 0
