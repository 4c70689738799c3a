"""DeepSeek-V3 (MLA, mixed stacks, router bias, shared experts): hand-worked oracle cases,
the corrected sync, config reading and refusals, presets."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from syncviz.cli import main
from syncviz.errors import SyncvizError
from syncviz.families import FAMILY
from syncviz.oracle import model_layout
from syncviz.oracle.families import conventions
from syncviz.oracle.layout import layer_kinds
from syncviz.parallel import Parallel
from syncviz.presets import preset
from syncviz.run.inprocess import run_sync
from syncviz.spec import ModelSpec
from syncviz.sync.corrected import ConventionsSyncMap

L0, L1 = "model.model.layers.0.", "model.model.layers.1."
M0, M1 = "module.module.decoder.layers.0.", "module.module.decoder.layers.1."

# hidden 6, 4 heads; per head q/k = nope 3 + rope 2 = 5 rows, v 5; q_lora 6, kv_lora 4.
# Layer 0 dense (ffn 8), layer 1 MoE: 2 experts of 4, one shared expert of 4, a router bias.
MLA = ModelSpec("mla", "deepseek-v3", 2, 6, 4, 4, 8, 64, num_experts=2, moe_ffn_hidden_size=4,
                shared_expert_ffn_hidden_size=4, first_k_dense_replace=1, router_bias=True,
                q_lora_rank=6, kv_lora_rank=4, qk_nope_head_dim=3, qk_rope_head_dim=2,
                v_head_dim=5)  # fmt: skip
# The same without the low-rank query (Moonlight's MLA): q_proj and kv_a_proj_with_mqa.
NO_Q_LORA = replace(MLA, name="mla-noq", q_lora_rank=0)

DEEPSEEK_CONFIG = {
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
    "num_hidden_layers": 4, "hidden_size": 64, "num_attention_heads": 4,
    "num_key_value_heads": 4, "intermediate_size": 96, "moe_intermediate_size": 32,
    "n_routed_experts": 8, "n_shared_experts": 2, "first_k_dense_replace": 1,
    "moe_layer_freq": 1, "q_lora_rank": 48, "kv_lora_rank": 32, "qk_nope_head_dim": 16,
    "qk_rope_head_dim": 8, "v_head_dim": 16, "topk_method": "noaux_tc", "vocab_size": 500,
    "num_nextn_predict_layers": 1,
}  # fmt: skip


def _rows(index, width: int) -> list[int]:
    """The global rows a 2-D local tensor holds, in order (ids are row * width + col)."""
    return index.ids()[:, 0].floor_divide(width).tolist()


# ---------------------------------------------------------------------- MLA, hand-worked


def test_q_b_proj_rows_of_heads_each_nope_then_rope():
    """q_b_proj [20, 6] at vLLM tp 2: rank r holds heads 2r, 2r+1 = rows 10r..10r+9; head 2 is
    rows 10-12 (nope) then 13-14 (rope); the trainer (tp 2) holds the same rows as
    linear_q_up_proj; row 13 decodes as head 2's first rope row."""
    layout = model_layout(MLA, Parallel(tp=2), Parallel(tp=2), layers=[0])
    q_b = layout.param(f"{L0}self_attn.q_b_proj.weight")
    assert q_b.global_shape == (20, 6)
    assert [_rows(t.index, 6) for t in q_b.dst] == [list(range(0, 10)), list(range(10, 20))]
    assert [(s.name, _rows(s.index, 6)) for s in q_b.src] == [
        (f"{M0}self_attention.linear_q_up_proj.weight", list(range(0, 10))),
        (f"{M0}self_attention.linear_q_up_proj.weight", list(range(10, 20))),
    ]
    labels = [b.label for b in q_b.blocks[4:6]]
    assert labels == ["Q head 2 nope", "Q head 2 rope"]
    assert q_b.decode(13 * 6 + 1) == "Q head 2 rope row 0 col 1"
    assert q_b.decode(12 * 6) == "Q head 2 nope row 2 col 0"


def test_kv_b_proj_rows_of_heads_each_k_nope_then_v():
    """kv_b_proj [32, 4] (8 rows a head: k_nope 3, v 5) at tp 4: rank 2 holds head 2 = rows
    16-23, rows 16-18 k_nope and 19-23 v; trainer linear_kv_up_proj at tp 1 holds all."""
    layout = model_layout(MLA, Parallel(tp=1), Parallel(tp=4), layers=[0])
    kv_b = layout.param(f"{L0}self_attn.kv_b_proj.weight")
    assert kv_b.global_shape == (32, 4)
    assert _rows(kv_b.dst[2].index, 4) == list(range(16, 24))
    assert kv_b.dst[2].index.ids().tolist()[0] == [64, 65, 66, 67]
    assert kv_b.decode(18 * 4) == "kv_b head 2 k_nope row 2 col 0"
    assert kv_b.decode(19 * 4 + 3) == "kv_b head 2 v row 0 col 3"
    assert kv_b.src[0].name == f"{M0}self_attention.linear_kv_up_proj.weight"
    assert _rows(kv_b.src[0].index, 4) == list(range(32))


def test_fused_qkv_a_is_both_down_projections_whole_on_every_rank():
    """fused_qkv_a_proj [6 + 4 + 2, 6]: every vLLM rank holds all 12 rows; each trainer rank
    holds linear_q_down_proj = rows 0-5 and linear_kv_down_proj = rows 6-11; the norms of
    the up projections are q_a_layernorm [6] and kv_a_layernorm [4], whole."""
    layout = model_layout(MLA, Parallel(tp=2), Parallel(tp=4), layers=[0])
    fused = layout.param(f"{L0}self_attn.fused_qkv_a_proj.weight")
    assert fused.global_shape == (12, 6)
    assert [_rows(t.index, 6) for t in fused.dst] == [list(range(12))] * 4
    assert [(s.tp, s.name.split(".")[-2], _rows(s.index, 6)) for s in fused.src] == [
        (0, "linear_q_down_proj", [0, 1, 2, 3, 4, 5]),
        (0, "linear_kv_down_proj", [6, 7, 8, 9, 10, 11]),
        (1, "linear_q_down_proj", [0, 1, 2, 3, 4, 5]),
        (1, "linear_kv_down_proj", [6, 7, 8, 9, 10, 11]),
    ]
    assert [b.label for b in fused.blocks] == ["q_a", "kv_a"]
    q_norm = layout.param(f"{L0}self_attn.q_a_layernorm.weight")
    kv_norm = layout.param(f"{L0}self_attn.kv_a_layernorm.weight")
    assert (q_norm.global_shape, kv_norm.global_shape) == ((6,), (4,))
    assert q_norm.src[0].name == f"{M0}self_attention.linear_q_up_proj.layer_norm_weight"
    assert kv_norm.src[1].name == f"{M0}self_attention.linear_kv_up_proj.layer_norm_weight"
    assert [t.index.ids().tolist() for t in kv_norm.dst] == [[0, 1, 2, 3]] * 4


def test_without_q_lora_q_proj_by_heads_and_kv_a_alone():
    """q_lora_rank 0: the layer has q_proj [20, 6] (rank 1 of 2: rows 10-19, linear_q_proj)
    and kv_a_proj_with_mqa [4 + 2, 6] whole (linear_kv_down_proj), no q_a/q_b."""
    assert layer_kinds(NO_Q_LORA, 0)[:6] == [
        "input_norm", "q_proj", "kv_a", "kv_a_norm", "kv_b_proj", "o_proj",
    ]  # fmt: skip
    layout = model_layout(NO_Q_LORA, Parallel(tp=2), Parallel(tp=2), layers=[0])
    q = layout.param(f"{L0}self_attn.q_proj.weight")
    assert q.global_shape == (20, 6)
    assert _rows(q.dst[1].index, 6) == list(range(10, 20))
    assert q.src[1].name == f"{M0}self_attention.linear_q_proj.weight"
    kv_a = layout.param(f"{L0}self_attn.kv_a_proj_with_mqa.weight")
    assert kv_a.global_shape == (6, 6)
    assert [_rows(t.index, 6) for t in kv_a.dst] == [list(range(6))] * 2
    assert kv_a.src[0].name == f"{M0}self_attention.linear_kv_down_proj.weight"


def test_o_proj_columns_of_heads_of_v_head_dim():
    """o_proj [6, 4 * 5]: vLLM rank 1 of 2 holds columns 10-19 (heads 2-3, v 5 each)."""
    layout = model_layout(MLA, Parallel(tp=1), Parallel(tp=2), layers=[0])
    o_proj = layout.param(f"{L0}self_attn.o_proj.weight")
    assert o_proj.global_shape == (6, 20)
    assert o_proj.dst[1].index.ids()[0].tolist() == list(range(10, 20))


# ---------------------------------------------------------------------- mixed stack, router bias


def test_mixed_stack_dense_first_layer_then_moe():
    """first_k_dense_replace 1: layer 0 has gate_up/down (fc1 with the fused pre-MLP norm on
    the trainer), layer 1 router, router bias, experts and shared experts (pre_mlp_layernorm)."""
    assert layer_kinds(MLA, 0)[-3:] == ["post_attention_norm", "gate_up", "down"]
    assert layer_kinds(MLA, 1)[-7:] == [
        "post_attention_norm", "router", "router_bias", "experts_w13", "experts_w2",
        "shared_gate_up", "shared_down",
    ]  # fmt: skip
    layout = model_layout(MLA, Parallel(tp=2), Parallel(tp=2))
    keys = set(layout.keys())
    assert f"{L0}mlp.gate_up_proj.weight" in keys and f"{L0}mlp.gate.weight" not in keys
    assert f"{L1}mlp.experts.w13_weight" in keys and f"{L1}mlp.gate_up_proj.weight" not in keys
    norm0 = layout.param(f"{L0}post_attention_layernorm.weight").src[0].name
    norm1 = layout.param(f"{L1}post_attention_layernorm.weight").src[0].name
    assert (norm0, norm1) == (
        f"{M0}mlp.linear_fc1.layer_norm_weight",
        f"{M1}pre_mlp_layernorm.weight",
    )
    gate_up = layout.param(f"{L0}mlp.gate_up_proj.weight")
    assert gate_up.global_shape == (16, 6)  # dense ffn 8: [gate 0-7; up 8-15]
    assert _rows(gate_up.dst[1].index, 6) == [4, 5, 6, 7, 12, 13, 14, 15]


def test_shared_experts_merged_column_and_row_parallel():
    """Shared expert FFN 4: gate_up [8, 6] rank 1 of 2 = [gate 2-3; up 6-7] (trainer
    mlp.shared_experts.linear_fc1), down [6, 4] rank 1 = columns 2-3; no gate."""
    layout = model_layout(MLA, Parallel(tp=2), Parallel(tp=2), layers=[1])
    gate_up = layout.param(f"{L1}mlp.shared_experts.gate_up_proj.weight")
    assert _rows(gate_up.dst[1].index, 6) == [2, 3, 6, 7]
    assert gate_up.src[1].name == f"{M1}mlp.shared_experts.linear_fc1.weight"
    assert _rows(gate_up.src[1].index, 6) == [2, 3, 6, 7]
    down = layout.param(f"{L1}mlp.shared_experts.down_proj.weight")
    assert down.dst[1].index.ids()[0].tolist() == [2, 3]
    assert not any("shared_expert_gate" in p.key for p in layout)


def test_router_bias_is_float32_replicated_buffer():
    """The router bias is [E] = [2], whole on every rank: vLLM mlp.gate.e_score_correction_bias,
    trainer buffer mlp.router.expert_bias; its dtype, float32, is data of the family."""
    layout = model_layout(MLA, Parallel(tp=2, ep=2), Parallel(tp=2), layers=[1])
    bias = layout.param(f"{L1}mlp.gate.e_score_correction_bias")
    assert bias.global_shape == (2,)
    assert [t.index.ids().tolist() for t in bias.dst] == [[0, 1], [0, 1]]
    assert {s.name for s in bias.src} == {f"{M1}mlp.router.expert_bias"}
    assert FAMILY["deepseek-v3"].dtypes == {"router_bias": "float32"}
    assert conventions("deepseek-v3").dtypes["router_bias"] == "float32"
    assert getattr(torch, conventions("deepseek-v3").dtypes["router_bias"]) is torch.float32


def test_sync_map_joins_down_projections_and_keeps_the_router_bias():
    """With q_lora both down projections name one fused_qkv_a_proj (listed once, where the
    first arrives); without it linear_kv_down_proj is kv_a_proj_with_mqa; expert_bias maps
    to e_score_correction_bias (a bias the Llama maps would drop)."""
    conv = conventions("deepseek-v3")
    at = M0 + "self_attention."
    names = [at + "linear_q_down_proj.weight", at + "linear_q_up_proj.weight",
             at + "linear_kv_down_proj.weight", M0 + "mlp.router.expert_bias"]  # fmt: skip
    assert ConventionsSyncMap(names, 3, conv).dst_names == [
        "model.model.layers.3.self_attn.fused_qkv_a_proj.weight",
        "model.model.layers.3.self_attn.q_b_proj.weight",
        "model.model.layers.3.mlp.gate.e_score_correction_bias",
    ]
    alone = [at + "linear_q_proj.weight", at + "linear_kv_down_proj.weight"]
    assert ConventionsSyncMap(alone, 0, conv).dst_names == [
        L0 + "self_attn.q_proj.weight",
        L0 + "self_attn.kv_a_proj_with_mqa.weight",
    ]


# ---------------------------------------------------------------------- the synchronizers


def _assert_exact(spec: ModelSpec, src: Parallel, dst: Parallel, layers, **options) -> None:
    result = run_sync(spec, src, dst, synchronizer="corrected", layers=layers, trace=False,
                      **options)  # fmt: skip
    assert result.findings == [], [f.message for f in result.findings]
    for param in result.plan.layout:
        for t in param.dst:
            world = result.plan.world_rank("dst", tp=t.tp)
            got = result.local_ids(world, param.key)
            assert torch.equal(got, t.index.ids().to(torch.float64)), param.describe_dst(t.tp)
            assert result.writes(world)[param.key] == 1


@pytest.mark.parametrize(("s", "ep", "d"), [(1, 1, 1), (1, 2, 2), (2, 1, 4), (2, 2, 2), (1, 1, 4)])
@pytest.mark.parametrize("spec", [MLA, NO_Q_LORA], ids=["q_lora", "no_q_lora"])
def test_corrected_deepseek_tiny_is_exact(spec, s, ep, d):
    """Both MLA forms, dense then MoE layer: every vLLM rank gets exactly the oracle's ids."""
    _assert_exact(spec, Parallel(tp=s, ep=ep), Parallel(tp=d), [0, 1])


def test_corrected_deepseek_v3_scaled_alltoall_is_exact():
    """DeepSeek-V3 scaled (128 heads, 256 experts) at trainer tp 2 ep 4 -> vLLM tp 8, experts
    by all-to-all, a dense layer and an MoE layer."""
    src, dst = Parallel(tp=2, ep=4), Parallel(tp=8)
    spec = preset("deepseek-v3").scaled(src, dst)
    _assert_exact(spec, src, dst, [2, 3], expert_comm="alltoall")


def test_faithful_port_has_no_class_for_deepseek():
    """The faithful port refuses DeepSeek-V3 as the original did: unsupported model."""
    result = run_sync(MLA, Parallel(tp=1), Parallel(tp=2), layers=[0], trace=False)
    first = result.findings[0]
    assert (first.rank, first.stage) == (0, "flow")
    assert first.message.startswith("RuntimeError: Unsupported model DeepseekV3ForCausalLM, ")


# ---------------------------------------------------------------------- config.json


def test_deepseek_config_reads_mla_stack_shared_and_bias():
    """The reader: q/kv lora, nope/rope/v (head_dim = v), dense first layer, 2 shared experts
    of 32 = 64, the router bias (noaux_tc); the MTP layer is noted, not refused."""
    spec = ModelSpec.from_hf_config(DEEPSEEK_CONFIG)
    assert spec.family == "deepseek-v3"
    got = (spec.q_lora_rank, spec.kv_lora_rank, spec.qk_nope_head_dim, spec.qk_rope_head_dim,
           spec.v_head_dim, spec.head_dim, spec.first_k_dense_replace,
           spec.shared_expert_ffn_hidden_size, spec.router_bias, spec.num_experts)  # fmt: skip
    assert got == (48, 32, 16, 8, 16, 16, 1, 64, True, 8)
    assert any("num_nextn_predict_layers" in note for note in spec.notes)
    greedy = ModelSpec.from_hf_config({**DEEPSEEK_CONFIG, "topk_method": "greedy"})
    assert greedy.router_bias is False
    no_q = ModelSpec.from_hf_config({**DEEPSEEK_CONFIG, "q_lora_rank": None})
    assert no_q.q_lora_rank == 0 and "q_proj" in layer_kinds(no_q, 0)


def test_kimi_k2_model_type_reads_as_deepseek_and_quantization_is_noted():
    """model_type kimi_k2 (with or without architectures) reads as deepseek-v3; a
    quantization_config is a note, the spec the same."""
    kimi = {**DEEPSEEK_CONFIG, "model_type": "kimi_k2"}
    assert ModelSpec.from_hf_config(kimi).family == "deepseek-v3"
    bare = {k: v for k, v in kimi.items() if k != "architectures"}
    assert ModelSpec.from_hf_config(bare).family == "deepseek-v3"
    quantized = ModelSpec.from_hf_config({**kimi, "quantization_config": {"quant_method": "fp8"}})
    assert quantized == ModelSpec.from_hf_config(kimi)
    assert any("quantization_config" in note for note in quantized.notes)


@pytest.mark.parametrize(
    ("extra", "refused"),
    [
        ({"use_qk_norm": True}, "use_qk_norm (True)"),
        ({"moe_layer_freq": 2}, "moe_layer_freq (2)"),
        ({"num_experts": 8}, "num_experts (8)"),
        ({"shared_expert_intermediate_size": 64}, "shared_expert_intermediate_size (64)"),
    ],
)
def test_keys_deepseek_does_not_read_are_refused(extra, refused):
    """A layout key DeepSeek-V3 does not read (GLM's q/k norm switch, MoE every 2 layers,
    other families' expert keys) is still refused on a DeepSeek config."""
    with pytest.raises(SyncvizError, match=r"^" + refused.replace("(", r"\(").replace(")", r"\)")):
        ModelSpec.from_hf_config({**DEEPSEEK_CONFIG, **extra})


@pytest.mark.parametrize(
    "key", ["first_k_dense_replace", "n_shared_experts", "kv_lora_rank", "qk_rope_head_dim"]
)
def test_deepseek_keys_on_a_llama_config_name_the_family(key):
    """DeepSeek's layout keys on a Llama config are refused, naming deepseek-v3 as reader."""
    llama = {k: v for k, v in DEEPSEEK_CONFIG.items() if k not in ("model_type",)}
    llama = {"architectures": ["LlamaForCausalLM"], "num_hidden_layers": 2, "hidden_size": 64,
             "num_attention_heads": 4, "intermediate_size": 96, "vocab_size": 500,
             key: llama[key]}  # fmt: skip
    with pytest.raises(SyncvizError, match=r"family deepseek-v3( / glm4-moe)? reads it"):
        ModelSpec.from_hf_config(llama)


def test_mla_spec_refuses_missing_head_parts():
    """kv_lora_rank without qk_rope_head_dim, or q_lora_rank without MLA, is refused."""
    with pytest.raises(SyncvizError, match=r"^qk_rope_head_dim \(0\)"):
        replace(MLA, qk_rope_head_dim=0)
    with pytest.raises(SyncvizError, match=r"^q_lora_rank \(6\) needs"):
        replace(MLA, kv_lora_rank=0)


# ---------------------------------------------------------------------- presets, views


def test_deepseek_presets():
    """DeepSeek-V3 61 layers, 256 experts, 3 dense layers; Kimi-K2 64 heads, 384 experts, 1
    dense layer; Moonlight without q_lora; all with a router bias and MLA head 128 + 64."""
    v3, kimi, moon = preset("deepseek-v3"), preset("kimi-k2"), preset("moonlight-16b-a3b")
    assert (v3.num_layers, v3.num_experts, v3.first_k_dense_replace, v3.q_lora_rank) == (
        61, 256, 3, 1536)  # fmt: skip
    assert (kimi.num_attention_heads, kimi.num_experts, kimi.first_k_dense_replace) == (64, 384, 1)
    assert (moon.q_lora_rank, moon.shared_expert_ffn_hidden_size) == (0, 2 * 1408)
    for spec in (v3, kimi, moon):
        assert spec.router_bias and (spec.qk_nope_head_dim, spec.qk_rope_head_dim) == (128, 64)
        assert spec.head_dim == spec.v_head_dim == 128


def test_scaled_deepseek_keeps_the_layout():
    """Scaled DeepSeek-V3 keeps heads, experts, dense layers and q_lora on; MLA sizes shrink."""
    small = preset("deepseek-v3").scaled()
    assert (small.num_attention_heads, small.num_experts, small.first_k_dense_replace) == (
        128, 256, 3)  # fmt: skip
    assert small.q_lora_rank > 0 and small.kv_lora_rank < 512 and small.head_dim == 4
    assert layer_kinds(small, 2) == layer_kinds(preset("deepseek-v3"), 2)


def test_cli_check_layout_and_render(tmp_path, capsys):
    """check exits 0 with the corrected sync on a DeepSeek config; layout's words name the
    fused down projection's parts and the kv_b heads; render writes a picture."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps(DEEPSEEK_CONFIG), encoding="utf-8")
    args = ["--config", str(config), "--src-tp", "2", "--dst-tp", "4", "--layers", "1"]
    assert main(["check", *args, "--synchronizer", "corrected"]) == 0
    capsys.readouterr()
    assert main(["layout", *args]) == 0
    words = capsys.readouterr().out
    assert "rows 0-87: q_a, kv_a" in words and "kv_b head 1" in words
    out = tmp_path / "q_b.png"
    render = ["render", *args, "--param", "q_b_proj", "-o", str(out)]
    assert main(render) == 0
    assert out.stat().st_size > 0


def test_render_with_the_faithful_port_says_why_nothing_was_written(tmp_path, capsys):
    """render with the faithful port, which has no DeepSeek class: its one-line refusal per
    trainer rank comes before the never-written regions it left."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps(DEEPSEEK_CONFIG), encoding="utf-8")
    out = tmp_path / "kv_b.png"
    args = ["--config", str(config), "--src-tp", "2", "--dst-tp", "4", "--layers", "1"]
    assert main(["render", *args, "--param", "kv_b_proj", "-o", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    refusals = [
        n for n, line in enumerate(lines) if "Unsupported model DeepseekV3ForCausalLM" in line
    ]
    assert [lines[n].split(":")[0] for n in refusals] == ["flow", "flow"]  # trainer ranks 0, 1
    first_region = next(n for n, line in enumerate(lines) if line.startswith("WRONG "))
    assert max(refusals) < first_region
    assert "holds nothing (never written)" in lines[first_region]


def test_picture_labels_name_mla_head_parts():
    """The pictures' short labels: Q heads by nope/rope, kv_b heads by k_nope / V, the fused
    down projection's parts by name."""
    from syncviz.diagram.labels import short_label
    from syncviz.diagram.raster import BlockTable

    layout = model_layout(MLA, Parallel(tp=1), Parallel(tp=2), layers=[0])
    q_b = BlockTable(layout.param(f"{L0}self_attn.q_b_proj.weight"))
    assert [short_label(q_b, b) for b in range(4)] == ["Q0 nope", "Q0 rope", "Q1 nope", "Q1 rope"]
    kv_b = BlockTable(layout.param(f"{L0}self_attn.kv_b_proj.weight"))
    assert [short_label(kv_b, b) for b in range(2)] == ["K0 k_nope", "V0"]
    fused = BlockTable(layout.param(f"{L0}self_attn.fused_qkv_a_proj.weight"))
    assert [short_label(fused, b) for b in range(2)] == ["q_a", "kv_a"]


def test_diagnose_tiny_deepseek_dumps(tmp_path):
    """diagnose reads the family's tiny checkpoint (MLA with q_lora, dense then MoE layer):
    right dumps at tp 2 are OK; kv_b_proj of rank 0 on every rank is found on rank 1."""
    from syncviz.diagnose import diagnose
    from syncviz.diagnose.fixtures import tiny_spec, write_checkpoint, write_dumps

    spec = tiny_spec("deepseek-v3")
    write_checkpoint(spec, tmp_path / "ref")
    write_dumps(spec, tmp_path / "ref", tmp_path / "good", tp=2)
    assert diagnose(tmp_path / "ref", tmp_path / "good", 2).ok
    write_dumps(spec, tmp_path / "ref", tmp_path / "bad", tp=2, bugs={"kv_b_proj": "shard0"})
    report = diagnose(tmp_path / "ref", tmp_path / "bad", 2)
    lines = {p.key: " ".join(p.lines()) for p in report.bad()}
    assert list(lines) == [f"{L0}self_attn.kv_b_proj.weight"]
    assert (
        "holds tp 0's kv_b heads 0-1, expected kv_b heads 2-3"
        in lines[f"{L0}self_attn.kv_b_proj.weight"]
    )
