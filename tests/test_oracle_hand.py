"""The oracle against small layouts worked out by hand.

Tiny model unless a test says otherwise: hidden 8, 4 heads, 2 K/V groups,
head_dim 2, ffn 4, vocab 70, 4 layers. Its global fused QKV has 16 rows:
Q heads 0-3 are rows 0-7 (head h = rows 2h, 2h+1), K heads 0-1 rows 8-11,
V heads 0-1 rows 12-15. Expected rows below were derived on paper from
LAYOUTS.md, not from the code under test.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from syncviz.errors import SyncvizError
from syncviz.oracle import Box, conventions, decode, describe, map_pieces, model_layout
from syncviz.parallel import Parallel
from syncviz.provenance import RegionMap
from syncviz.spec import ModelSpec

PAD = -1


def tiny(family: str = "llama-mcore", **overrides: object) -> ModelSpec:
    fields: dict[str, object] = dict(
        name="tiny",
        family=family,
        num_layers=4,
        hidden_size=8,
        num_attention_heads=4,
        num_query_groups=2,
        ffn_hidden_size=4,
        vocab_size=70,
    )
    fields.update(overrides)
    return ModelSpec(**fields)  # type: ignore[arg-type]


def tiny_moe(family: str = "qwen2-moe", **overrides: object) -> ModelSpec:
    fields: dict[str, object] = dict(
        num_experts=4,
        moe_ffn_hidden_size=2,
        qkv_bias=family == "qwen2-moe",
        shared_expert_ffn_hidden_size=4 if family == "qwen2-moe" else 0,
        shared_expert_gate=family == "qwen2-moe",
    )
    fields.update(overrides)
    return tiny(family, **fields)


def layout(spec: ModelSpec, s: int = 1, d: int = 1, **kw: int):
    src = Parallel(tp=s, pp=kw.get("src_pp", 1), ep=kw.get("src_ep", 1))
    dst = Parallel(tp=d, pp=kw.get("dst_pp", 1))
    return model_layout(spec, src, dst)


def rows_of(index: RegionMap) -> list[int]:
    """Global row numbers of each local row, checking every local row is one whole global row."""
    ids = index.ids()
    width = index.shape[-1] if len(index.shape) > 1 else 1  # row slices: global width
    flat = ids.reshape(-1, width)
    out = []
    for row in flat.tolist():
        if row[0] == PAD:
            assert row == [PAD] * width
            out.append(PAD)
        else:
            assert row == list(range(row[0], row[0] + width)), row
            assert row[0] % width == 0
            out.append(row[0] // width)
    return out


QKV = "model.model.layers.0.self_attn.qkv_proj.weight"


# --- fused QKV, destination --------------------------------------------------------------


def test_qkv_dst_d1_holds_all_rows_in_hf_order():
    """d=1 (< ng): the one vLLM rank holds rows 0-15 in Hugging Face order."""
    p = layout(tiny(), d=1).param(QKV)
    assert rows_of(p.dst[0].index) == list(range(16))


def test_qkv_dst_d_equals_ng():
    """d == ng == 2: rank r holds Q heads 2r, 2r+1, K head r, V head r."""
    p = layout(tiny(), d=2).param(QKV)
    assert rows_of(p.dst[0].index) == [0, 1, 2, 3, 8, 9, 12, 13]
    assert rows_of(p.dst[1].index) == [4, 5, 6, 7, 10, 11, 14, 15]


def test_qkv_dst_d_above_ng_replicates_kv():
    """d=4 > ng=2: one Q head per rank; K/V head 0 on ranks 0-1, head 1 on ranks 2-3."""
    p = layout(tiny(), d=4).param(QKV)
    assert [rows_of(t.index) for t in p.dst] == [
        [0, 1, 8, 9, 12, 13],
        [2, 3, 8, 9, 12, 13],
        [4, 5, 10, 11, 14, 15],
        [6, 7, 10, 11, 14, 15],
    ]
    assert [t.shape for t in p.dst] == [(6, 8)] * 4


def test_qkv_dst_d_below_ng():
    """8 heads, 4 groups, head_dim 1, d=2: rank r holds Q 4r..4r+3, K/V heads 2r, 2r+1."""
    spec = tiny(num_attention_heads=8, num_query_groups=4)
    p = layout(spec, d=2).param(QKV)
    # Global rows: Q 0-7, K 8-11, V 12-15.
    assert rows_of(p.dst[0].index) == [0, 1, 2, 3, 8, 9, 12, 13]
    assert rows_of(p.dst[1].index) == [4, 5, 6, 7, 10, 11, 14, 15]


# --- fused QKV, source -------------------------------------------------------------------


def test_qkv_src_mcore_grouped_order():
    """Megatron-Core s=1: rows per group [q0 q1 k0 v0 | q2 q3 k1 v1]."""
    p = layout(tiny(), s=1).param(QKV)
    assert rows_of(p.src[0].index) == [0, 1, 2, 3, 8, 9, 12, 13, 4, 5, 6, 7, 10, 11, 14, 15]
    assert p.src[0].name == "module.module.decoder.layers.0.self_attention.linear_qkv.weight"


def test_qkv_src_mcore_one_group_per_rank():
    """Megatron-Core s=2: rank r holds group r."""
    p = layout(tiny(), s=2).param(QKV)
    assert rows_of(p.src[0].index) == [0, 1, 2, 3, 8, 9, 12, 13]
    assert rows_of(p.src[1].index) == [4, 5, 6, 7, 10, 11, 14, 15]


def test_mha_legacy_src_interleaves_q_k_v_per_head():
    """Legacy MHA (4 heads = 4 groups, 24 rows: Q 0-7, K 8-15, V 16-23), s=2: [q k v] per head."""
    p = layout(tiny("llama-legacy", num_query_groups=4), s=2, d=2).param(QKV)
    assert rows_of(p.src[0].index) == [0, 1, 8, 9, 16, 17, 2, 3, 10, 11, 18, 19]
    assert rows_of(p.src[1].index) == [4, 5, 12, 13, 20, 21, 6, 7, 14, 15, 22, 23]
    assert rows_of(p.dst[0].index) == [0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19]
    assert rows_of(p.dst[1].index) == [4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23]
    assert p.src[0].name == (
        "module.module.language_model.encoder.layers.0.self_attention.query_key_value.weight"
    )


def test_qkv_bias_follows_the_weight_rows():
    """QWen2 bias (1-D, 16 elements): source s=2 rank 0 and destination d=4 rank 2."""
    p = layout(tiny("qwen2", qkv_bias=True), s=2, d=4).param(
        "model.model.layers.0.self_attn.qkv_proj.bias"
    )
    assert p.kind == "qkv_bias"
    assert p.src[0].index.ids().tolist() == [0, 1, 2, 3, 8, 9, 12, 13]
    assert p.dst[2].index.ids().tolist() == [4, 5, 10, 11, 14, 15]
    assert p.src[0].name == (
        "module.module.language_model.encoder.layers.0.self_attention.query_key_value.bias"
    )


# --- row-parallel weights ----------------------------------------------------------------


def test_o_proj_column_slices():
    """o_proj [8, 8]: dst d=2 rank 1 holds cols 4-7; src s=4 rank 1 holds cols 2-3."""
    p = layout(tiny(num_query_groups=4), s=4, d=2).param(
        "model.model.layers.0.self_attn.o_proj.weight"
    )
    assert p.dst[1].index.ids().tolist() == [
        [4, 5, 6, 7],
        [12, 13, 14, 15],
        [20, 21, 22, 23],
        [28, 29, 30, 31],
        [36, 37, 38, 39],
        [44, 45, 46, 47],
        [52, 53, 54, 55],
        [60, 61, 62, 63],
    ]
    assert p.src[1].index.ids().tolist() == [
        [2, 3],
        [10, 11],
        [18, 19],
        [26, 27],
        [34, 35],
        [42, 43],
        [50, 51],
        [58, 59],
    ]
    assert map_pieces(p.dst[1].index, p.global_shape) == [Box((0, 4), (8, 8))]


def test_down_proj_column_slices():
    """down [8, 4]: dst d=2 rank 1 holds cols 2-3 of every row."""
    p = layout(tiny(), d=2).param("model.model.layers.0.mlp.down_proj.weight")
    assert p.dst[1].index.ids().tolist() == [
        [2, 3],
        [6, 7],
        [10, 11],
        [14, 15],
        [18, 19],
        [22, 23],
        [26, 27],
        [30, 31],
    ]


# --- fused gate/up -----------------------------------------------------------------------

GATE_UP = "model.model.layers.0.mlp.gate_up_proj.weight"


def test_gate_up_megatron_order_and_vllm_order():
    """[gate; up] rows 0-3 / 4-7: Megatron s=2 rank r holds [gate_r; up_r]; vLLM d=4 likewise."""
    p = layout(tiny(), s=2, d=4).param(GATE_UP)
    assert [rows_of(t.index) for t in p.src] == [[0, 1, 4, 5], [2, 3, 6, 7]]
    assert [rows_of(t.index) for t in p.dst] == [[0, 4], [1, 5], [2, 6], [3, 7]]


def test_gate_up_qwen2_trainer_holds_up_first():
    """QWen2 convention: rank r holds [up_r; gate_r]."""
    p = layout(tiny("qwen2"), s=2, d=2).param(GATE_UP)
    assert [rows_of(t.index) for t in p.src] == [[4, 5, 0, 1], [6, 7, 2, 3]]
    assert [rows_of(t.index) for t in p.dst] == [[0, 1, 4, 5], [2, 3, 6, 7]]


def test_gate_up_qwen_v1_two_tensors():
    """QWen v1 keeps mlp.w1 (up) and mlp.w2 (gate), in that order, each TP-sharded by rows."""
    p = layout(tiny("qwen-v1", num_query_groups=4), s=2, d=2).param(
        "model.transformer.h.0.mlp.gate_up_proj.weight"
    )
    rank0 = p.src_for(tp=0)
    assert [s.name.rsplit(".", 3)[-3:] for s in rank0] == [
        ["mlp", "w1", "weight"],
        ["mlp", "w2", "weight"],
    ]
    # Global gate_up rows: gate 0-3, up 4-7; ffn 4 over s=2 gives 2 rows of each per rank.
    assert [rows_of(s.index) for s in rank0] == [[4, 5], [0, 1]]
    assert [rows_of(s.index) for s in p.src_for(tp=1)] == [[6, 7], [2, 3]]


# --- replicated parameters ---------------------------------------------------------------


def test_norms_whole_on_every_rank():
    """Input norm [8]: every source and destination rank holds ids 0-7."""
    p = layout(tiny(), s=2, d=4).param("model.model.layers.0.input_layernorm.weight")
    assert [t.index.ids().tolist() for t in p.src] == [list(range(8))] * 2
    assert [t.index.ids().tolist() for t in p.dst] == [list(range(8))] * 4
    assert p.src[0].name == (
        "module.module.decoder.layers.0.self_attention.linear_qkv.layer_norm_weight"
    )


# --- vocab ---------------------------------------------------------------------------------


def test_vocab_dst_padding_to_64():
    """V=70 padded to 128, d=4: 32 rows each; rank 2 rows 64-69 then 26 padding rows."""
    p = layout(tiny(), d=4).param("model.model.embed_tokens.weight")
    assert rows_of(p.dst[0].index) == list(range(0, 32))
    assert rows_of(p.dst[1].index) == list(range(32, 64))
    assert rows_of(p.dst[2].index) == [64, 65, 66, 67, 68, 69] + [PAD] * 26
    assert rows_of(p.dst[3].index) == [PAD] * 32


def test_vocab_src_megatron_padding():
    """With Megatron's default 128, V=70 pads to a multiple of 128*s=256: 128 rows per rank."""
    spec = tiny()
    conv = replace(conventions(spec.family), src_vocab_divisible_by=128)
    p = model_layout(spec, Parallel(tp=2), Parallel(tp=2), conv=conv).param("model.lm_head.weight")
    assert rows_of(p.src[0].index) == list(range(70)) + [PAD] * 58
    assert rows_of(p.src[1].index) == [PAD] * 128
    assert p.src[0].name == "module.module.output_layer.weight"


def test_vocab_src_pads_like_vllm_by_default():
    """By default the trainer pads V=70 like vLLM, to 128 rows: s=2 gives 64 rows per rank."""
    p = layout(tiny(), s=2).param("model.lm_head.weight")
    assert rows_of(p.src[0].index) == list(range(64))
    assert rows_of(p.src[1].index) == [64, 65, 66, 67, 68, 69] + [PAD] * 58


def test_tied_embeddings_have_no_lm_head():
    """tie_word_embeddings: vLLM has no lm_head parameter."""
    keys = layout(tiny(tie_word_embeddings=True)).keys()
    assert "model.lm_head.weight" not in keys
    assert "model.model.embed_tokens.weight" in keys


# --- MoE: Qwen2-MoE HEP ---------------------------------------------------------------------
# w13 global [4 experts, 4 rows (gate 0-1, up 2-3), 8]: "row" below = expert*4 + row.
# w2 global [4 experts, 8, 2]: id = expert*16 + h*2 + i.

W13 = "model.model.layers.0.mlp.experts.w13_weight"
W2 = "model.model.layers.0.mlp.experts.w2_weight"


def test_hep_fc1_without_ep():
    """HEP s=2 ep=1: rank 0 holds experts 0-1, each [up; gate]; rank 1 experts 2-3."""
    p = layout(tiny_moe(), s=2, d=2).param(W13)
    assert [(t.tp, t.ep) for t in p.src] == [(0, 0), (1, 0)]
    assert [t.shape for t in p.src] == [(8, 8), (8, 8)]
    assert rows_of(p.src[0].index) == [2, 3, 0, 1, 6, 7, 4, 5]
    assert rows_of(p.src[1].index) == [10, 11, 8, 9, 14, 15, 12, 13]
    assert p.src[0].name == (
        "module.module.language_model.encoder.layers.0.mlp.experts.dense_h_to_4h.weight"
    )


def test_hep_fc1_with_ep():
    """HEP s=2 ep=2: HEP rank ep*2+tp holds one expert: (tp0,ep0) e0, (tp1,ep0) e1, (tp0,ep1) e2."""
    p = layout(tiny_moe(), s=2, d=1, src_ep=2).param(W13)
    held = {(t.tp, t.ep): rows_of(t.index) for t in p.src}
    assert held == {
        (0, 0): [2, 3, 0, 1],
        (1, 0): [6, 7, 4, 5],
        (0, 1): [10, 11, 8, 9],
        (1, 1): [14, 15, 12, 13],
    }


def test_hep_fc2_is_w2_transposed():
    """HEP fc2 [E_local*I, H]: local row (e, i) is w2[e, :, i]."""
    p = layout(tiny_moe(), s=2, d=2).param(W2)
    assert p.src[0].index.ids().tolist() == [
        [0, 2, 4, 6, 8, 10, 12, 14],
        [1, 3, 5, 7, 9, 11, 13, 15],
        [16, 18, 20, 22, 24, 26, 28, 30],
        [17, 19, 21, 23, 25, 27, 29, 31],
    ]


def test_moe_dst_fused_experts():
    """vLLM d=2: w13 [4, 2, 8] = per expert [gate row r; up row r]; w2 [4, 8, 1] = col r."""
    lay = layout(tiny_moe(), s=2, d=2)
    w13 = lay.param(W13)
    assert w13.dst[0].shape == (4, 2, 8)
    assert rows_of(w13.dst[0].index) == [0, 2, 4, 6, 8, 10, 12, 14]
    assert rows_of(w13.dst[1].index) == [1, 3, 5, 7, 9, 11, 13, 15]
    w2 = lay.param(W2)
    assert w2.dst[1].shape == (4, 8, 1)
    assert w2.dst[0].index.ids().reshape(-1).tolist() == list(range(0, 64, 2))
    assert w2.dst[1].index.ids().reshape(-1).tolist() == list(range(1, 64, 2))


def test_moe_dense_params_replicated_over_ep():
    """With ep=2 a dense parameter has ep=None (every ep rank holds it); experts name their ep."""
    lay = layout(tiny_moe(), s=1, d=1, src_ep=2)
    assert [t.ep for t in lay.param(QKV).src] == [None]
    assert [t.ep for t in lay.param(W13).src] == [0, 1]
    router = lay.param("model.model.layers.0.mlp.gate.weight")
    assert router.src[0].index.ids().shape == (4, 8)
    assert router.src[0].name == (
        "module.module.language_model.encoder.layers.0.mlp.router.layer.weight"
    )


def test_shared_expert():
    """Shared expert fc1 [8, 8] s=2: rank 0 [up_0; gate_0]; shared_expert_gate [1, 8] whole."""
    lay = layout(tiny_moe(), s=2, d=2)
    p = lay.param("model.model.layers.0.mlp.shared_expert.gate_up_proj.weight")
    assert [rows_of(t.index) for t in p.src] == [[4, 5, 0, 1], [6, 7, 2, 3]]
    assert [rows_of(t.index) for t in p.dst] == [[0, 1, 4, 5], [2, 3, 6, 7]]
    gate = lay.param("model.model.layers.0.mlp.shared_expert_gate.weight")
    assert gate.global_shape == (1, 8)
    assert [t.index.ids().tolist() for t in gate.dst] == [[list(range(8))]] * 2
    assert gate.src[1].name == "module.module.language_model.encoder.layers.0.mlp.gate.weight"


# --- MoE: Mixtral (Megatron-Core SequentialMLP) -------------------------------------------


def test_mixtral_experts_split_by_ep_and_tp():
    """ep=2, s=2: (tp1, ep1) local expert 0 is expert 2: fc1 [gate row 1; up row 3], fc2 col 1."""
    lay = layout(tiny_moe("mixtral"), s=2, d=1, src_ep=2)
    w13 = lay.param("model.model.layers.0.block_sparse_moe.experts.w13_weight")
    shard = next(s for s in w13.src if (s.tp, s.ep, s.local_expert) == (1, 1, 0))
    assert shard.name == (
        "module.module.decoder.layers.0.mlp.experts.local_experts.0.linear_fc1.weight"
    )
    assert rows_of(shard.index) == [9, 11]
    w2 = lay.param("model.model.layers.0.block_sparse_moe.experts.w2_weight")
    shard = next(s for s in w2.src if (s.tp, s.ep, s.local_expert) == (1, 1, 1))
    assert shard.shape == (8, 1)
    assert shard.index.ids().reshape(-1).tolist() == [49, 51, 53, 55, 57, 59, 61, 63]
    assert lay.param("model.model.layers.0.post_attention_layernorm.weight").src[0].name == (
        "module.module.decoder.layers.0.pre_mlp_layernorm.weight"
    )


# --- pipeline --------------------------------------------------------------------------------


def test_pipeline_names_and_stages():
    """4 layers, src pp=2, dst pp=2: layer 3 is trainer stage 1 local layer 1, vLLM layers.3."""
    lay = layout(tiny(), s=1, d=1, src_pp=2, dst_pp=2)
    p = lay.param("model.model.layers.3.self_attn.qkv_proj.weight")
    assert (p.src[0].pp, p.src[0].layer_offset) == (1, 2)
    assert p.src[0].name == "module.module.decoder.layers.1.self_attention.linear_qkv.weight"
    assert (p.dst[0].pp, p.dst[0].name) == (1, "model.model.layers.3.self_attn.qkv_proj.weight")
    assert lay.param("model.model.embed_tokens.weight").src[0].pp == 0
    assert lay.param("model.model.norm.weight").src[0].pp == 1
    assert lay.param("model.lm_head.weight").dst[0].pp == 1


def test_pipeline_src_only():
    """src pp=4, dst pp=1: layer 3 is trainer stage 3 local layer 0; legacy names too."""
    lay = layout(tiny("llama-legacy"), src_pp=4)
    p = lay.param("model.model.layers.3.mlp.down_proj.weight")
    assert p.src[0].pp == 3
    assert p.src[0].name == "module.module.language_model.encoder.layers.0.mlp.dense_4h_to_h.weight"
    assert p.dst[0].pp == 0


def test_qwen_v1_names():
    """QWen v1 vLLM names use model.transformer.h.{i}; norms are ln_1 / ln_2 / ln_f."""
    keys = layout(tiny("qwen-v1", num_query_groups=4, qkv_bias=True)).keys()
    assert "model.transformer.h.2.attn.c_attn.weight" in keys
    assert "model.transformer.h.2.attn.c_attn.bias" in keys
    assert "model.transformer.h.2.attn.c_proj.weight" in keys
    assert "model.transformer.h.2.mlp.c_proj.weight" in keys
    assert "model.transformer.h.2.ln_2.weight" in keys
    assert keys[0] == "model.transformer.wte.weight"
    assert keys[-2:] == ["model.transformer.ln_f.weight", "model.lm_head.weight"]


# --- bad sizes -----------------------------------------------------------------------------


def test_bad_sizes_name_the_rule():
    """dst tp 3 does not divide 4 heads; dst tp 8 > 2 groups is fine only as a multiple of 2."""
    with pytest.raises(SyncvizError, match=r"dst tp \(3\) must divide num_attention_heads \(4\)"):
        layout(tiny(), d=3)
    hep = r"src ep\*tp \(4\*2 = 8\) must divide num_experts \(4\)"
    with pytest.raises(SyncvizError, match=hep):
        layout(tiny_moe(), s=2, src_ep=4)


# --- words -----------------------------------------------------------------------------------


def test_describe_words():
    """describe() on the oracle's maps: GQA replication, vocab padding, HEP, fused experts."""
    p = layout(tiny(), d=4).param(QKV)
    assert (
        describe(p, p.dst[1].index) == "rows 0-1: Q head 1; rows 2-3: K head 0; rows 4-5: V head 0"
    )
    emb = layout(tiny(), d=4).param("model.model.embed_tokens.weight")
    assert describe(emb, emb.dst[2].index) == "rows 0-5: vocab rows 64-69; rows 6-31: padding"
    w13 = layout(tiny_moe(), s=2, d=2).param(W13)
    assert describe(w13, w13.src[1].index) == (
        "rows 0-1: expert 2 up; rows 2-3: expert 2 gate;"
        " rows 4-5: expert 3 up; rows 6-7: expert 3 gate"
    )
    assert describe(w13, w13.dst[1].index) == (
        "experts 0-3 each (row 0: gate row 1, row 1: up row 1)"
    )


def test_describe_a_wrong_tensor():
    """A tensor with K and V swapped is told as such, row by row."""
    p = layout(tiny(), d=4).param(QKV)
    good = p.dst[1].index.ids()
    swapped = torch.cat([good[0:2], good[4:6], good[2:4]])
    assert describe(p, swapped) == "rows 0-1: Q head 1; rows 2-3: V head 0; rows 4-5: K head 0"
    assert describe(p, swapped.double()) == describe(p, swapped)
    junk = torch.full((6, 8), 0.5, dtype=torch.float64)
    assert describe(p, junk) == "rows 0-5: values that are not ids of this parameter"


def test_decode_one_id():
    """Id 75 of the [16, 8] qkv is row 9 col 3: K head 0, its row 1."""
    p = layout(tiny()).param(QKV)
    assert p.decode(75) == "K head 0 row 1 col 3"
    assert decode(p.blocks, -1) == "padding"
