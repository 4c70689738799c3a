"""Qwen3, Qwen3-MoE and Mistral: hand-worked oracle cases, the corrected sync, config refusals."""

from __future__ import annotations

import json

import pytest
import torch

from syncviz.cli import main
from syncviz.errors import SyncvizError
from syncviz.families import FAMILY, LAYOUT_KEYS
from syncviz.oracle import model_layout
from syncviz.oracle.layout import layer_kinds
from syncviz.parallel import Parallel
from syncviz.presets import preset
from syncviz.run.inprocess import run_sync
from syncviz.spec import ModelSpec

L0 = "model.model.layers.0."
M0 = "module.module.decoder.layers.0."

# hidden 6, 4 query heads, 2 K/V heads, head_dim 2 (not 6 / 4): Q rows 0-7, K 8-11, V 12-15.
QWEN3 = ModelSpec("q3", "qwen3", 1, 6, 4, 2, 4, 64, head_dim=2)
# 2 experts of FFN 4, hidden 2; expert e of w13 is rows [gate 0-3; up 4-7].
QWEN3_MOE = ModelSpec("q3m", "qwen3-moe", 1, 2, 2, 2, 4, 64, head_dim=2, num_experts=2,
                      moe_ffn_hidden_size=4)  # fmt: skip

QWEN3_CONFIG = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "num_hidden_layers": 2,
    "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
    "intermediate_size": 96, "vocab_size": 500, "attention_bias": False,
    "tie_word_embeddings": True,
}  # fmt: skip
QWEN3_MOE_CONFIG = {
    **QWEN3_CONFIG, "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
    "num_experts": 8, "moe_intermediate_size": 32, "decoder_sparse_step": 1,
    "mlp_only_layers": [], "tie_word_embeddings": False,
}  # fmt: skip
LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "num_hidden_layers": 2, "hidden_size": 64,
    "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 96,
    "vocab_size": 500,
}  # fmt: skip


def _rows(index, width: int) -> list[int]:
    """The global rows a 2-D local tensor holds, in order (ids are row * width + col)."""
    return index.ids()[:, 0].floor_divide(width).tolist()


# ---------------------------------------------------------------------- oracle, hand-worked


def test_qwen3_layer_has_q_and_k_norms_and_no_bias():
    """A Qwen3 layer: q_norm and k_norm after qkv, no qkv_bias, a dense MLP."""
    assert layer_kinds(QWEN3) == [
        "input_norm", "qkv", "q_norm", "k_norm", "o_proj", "post_attention_norm", "gate_up",
        "down",
    ]  # fmt: skip


@pytest.mark.parametrize("kind", ["q_norm", "k_norm"])
def test_qk_norms_are_head_dim_and_whole_on_every_rank(kind):
    """q_norm/k_norm are [head_dim] = [2], whole on both trainer ranks and all four vLLM ranks,
    named q_layernorm/k_layernorm on the trainer and self_attn.q_norm/k_norm on vLLM."""
    layout = model_layout(QWEN3, Parallel(tp=2), Parallel(tp=4), layers=[0])
    param = layout.param(f"{L0}self_attn.{kind}.weight")
    assert param.global_shape == (2,)
    assert [t.index.ids().tolist() for t in param.dst] == [[0, 1]] * 4
    trainer = kind.replace("_norm", "_layernorm")
    assert [(s.tp, s.name, s.index.ids().tolist()) for s in param.src] == [
        (0, f"{M0}self_attention.{trainer}.weight", [0, 1]),
        (1, f"{M0}self_attention.{trainer}.weight", [0, 1]),
    ]
    assert param.decode(1) == f"{kind[0]} norm element 1"


def test_qkv_rows_with_head_dim_not_hidden_over_heads():
    """head_dim 2 with hidden 6: QKV is [16, 6], o_proj [6, 8]; tp 2 takes Q heads 0-1 (rows
    0-3), K 0 (8-9), V 0 (12-13) and Q 2-3, K 1, V 1; tp 4 replicates each K/V head on two
    ranks; Megatron's per-group rows at trainer tp 2 are the same heads."""
    layout = model_layout(QWEN3, Parallel(tp=2), Parallel(tp=4), layers=[0])
    qkv = layout.param(f"{L0}self_attn.qkv_proj.weight")
    assert qkv.global_shape == (16, 6)
    assert [_rows(s.index, 6) for s in qkv.src] == [
        [0, 1, 2, 3, 8, 9, 12, 13],
        [4, 5, 6, 7, 10, 11, 14, 15],
    ]
    assert [_rows(t.index, 6) for t in qkv.dst] == [
        [0, 1, 8, 9, 12, 13],
        [2, 3, 8, 9, 12, 13],
        [4, 5, 10, 11, 14, 15],
        [6, 7, 10, 11, 14, 15],
    ]
    o_proj = layout.param(f"{L0}self_attn.o_proj.weight")
    assert o_proj.global_shape == (6, 8)
    assert [t.index.ids()[0].tolist() for t in o_proj.dst] == [[0, 1], [2, 3], [4, 5], [6, 7]]


def test_qwen3_moe_w13_and_w2_per_rank_at_d2():
    """E=2, I=4, H=2 at vLLM tp 2: w13 rank r = each expert's [gate rows 2r..; up rows 4+2r..],
    w2 rank r = each expert's down columns 2r..2r+1; router [2, 2] whole."""
    layout = model_layout(QWEN3_MOE, Parallel(tp=1, ep=2), Parallel(tp=2), layers=[0])
    w13 = layout.param(f"{L0}mlp.experts.w13_weight")
    assert w13.global_shape == (2, 8, 2)  # id = e * 16 + row * 2 + col
    assert [t.index.ids()[:, :, 0].tolist() for t in w13.dst] == [
        [[0, 2, 8, 10], [16, 18, 24, 26]],
        [[4, 6, 12, 14], [20, 22, 28, 30]],
    ]
    w2 = layout.param(f"{L0}mlp.experts.w2_weight")
    assert w2.global_shape == (2, 2, 4)  # id = e * 8 + h * 4 + col
    assert [t.index.ids().tolist() for t in w2.dst] == [
        [[[0, 1], [4, 5]], [[8, 9], [12, 13]]],
        [[[2, 3], [6, 7]], [[10, 11], [14, 15]]],
    ]
    router = layout.param(f"{L0}mlp.gate.weight")
    assert [t.index.ids().tolist() for t in router.dst] == [[[0, 1], [2, 3]]] * 2


def test_qwen3_moe_trainer_experts_have_global_ids_by_ep_rank():
    """Trainer ep 2, tp 1: ep rank q holds expert q * 2/2 + 0 as grouped weight0 ([gate; up]
    whole), so ep 1's fc1 is ids 16-31 and its fc2 expert 1's [2, 4]."""
    layout = model_layout(QWEN3_MOE, Parallel(tp=1, ep=2), Parallel(tp=2), layers=[0])
    w13 = layout.param(f"{L0}mlp.experts.w13_weight")
    assert [(s.ep, s.local_expert, s.name) for s in w13.src] == [
        (0, 0, f"{M0}mlp.experts.linear_fc1.weight0"),
        (1, 0, f"{M0}mlp.experts.linear_fc1.weight0"),
    ]
    assert w13.src[1].index.ids().reshape(-1).tolist() == list(range(16, 32))
    w2 = layout.param(f"{L0}mlp.experts.w2_weight")
    assert w2.src[1].index.ids().tolist() == [[8, 9, 10, 11], [12, 13, 14, 15]]
    assert layout.param(f"{L0}post_attention_layernorm.weight").src[0].name == (
        f"{M0}pre_mlp_layernorm.weight"
    )


# ---------------------------------------------------------------------- the synchronizers


def _assert_exact(spec: ModelSpec, src: Parallel, dst: Parallel, **options) -> None:
    result = run_sync(spec, src, dst, synchronizer="corrected", layers=[0], trace=False, **options)
    assert result.findings == [], [f.message for f in result.findings]
    for param in result.plan.layout:
        for t in param.dst:
            world = result.plan.world_rank("dst", tp=t.tp)
            got = result.local_ids(world, param.key)
            expected = t.index.ids().to(torch.float64)
            assert torch.equal(got, expected), param.describe_dst(t.tp)
            assert result.writes(world)[param.key] == 1


@pytest.mark.parametrize(("s", "d"), [(1, 2), (2, 4), (2, 8), (4, 4)])
def test_corrected_qwen3_is_exact(s, d):
    """Qwen3-8B scaled: every vLLM rank gets exactly the oracle's ids, norms included."""
    src, dst = Parallel(tp=s), Parallel(tp=d)
    _assert_exact(preset("qwen3-8b").scaled(src, dst, num_layers=1), src, dst)


def test_corrected_qwen3_32b_explicit_head_dim_is_exact():
    """Qwen3-32B scaled keeps hidden != heads * head_dim; the corrected sync is exact."""
    src, dst = Parallel(tp=2), Parallel(tp=8)
    spec = preset("qwen3-32b").scaled(src, dst, num_layers=1)
    assert spec.hidden_size != spec.num_attention_heads * spec.head_dim
    _assert_exact(spec, src, dst)


@pytest.mark.parametrize(("s", "ep", "d"), [(1, 1, 2), (1, 2, 2), (2, 2, 4), (1, 4, 1)])
def test_corrected_qwen3_moe_with_trainer_ep_is_exact(s, ep, d):
    """Qwen3-30B-A3B scaled under trainer tp/ep: experts gathered over ep land exactly."""
    src, dst = Parallel(tp=s, ep=ep), Parallel(tp=d)
    _assert_exact(preset("qwen3-30b-a3b").scaled(src, dst, num_layers=1), src, dst)


def test_corrected_mistral_is_exact():
    """Mistral-7B-v0.3 scaled (Llama's layout) through the conventions-driven class."""
    src, dst = Parallel(tp=2), Parallel(tp=4)
    _assert_exact(preset("mistral-7b-v0.3").scaled(src, dst, num_layers=1), src, dst)


@pytest.mark.parametrize(
    ("name", "arch"), [("qwen3-8b", "Qwen3ForCausalLM"), ("qwen3-30b-a3b", "Qwen3MoeForCausalLM")]
)
def test_faithful_port_has_no_class_for_qwen3(name, arch):
    """The faithful port refuses Qwen3 / Qwen3-MoE as the original did: unsupported model."""
    spec = preset(name).scaled(num_layers=1)
    result = run_sync(spec, Parallel(tp=1), Parallel(tp=2), layers=[0], trace=False)
    first = result.findings[0]
    assert (first.rank, first.stage) == (0, "flow")
    assert first.message.startswith(f"RuntimeError: Unsupported model {arch}, Expect ")


@pytest.mark.parametrize(("s", "ep", "d"), [(1, 2, 2), (2, 2, 4)])
def test_corrected_qwen3_moe_alltoall_under_trainer_ep_is_exact(s, ep, d):
    """--expert-comm alltoall under trainer ep > 1: the same experts land, bit for bit."""
    src, dst = Parallel(tp=s, ep=ep), Parallel(tp=d)
    spec = preset("qwen3-30b-a3b").scaled(src, dst, num_layers=1)
    _assert_exact(spec, src, dst, expert_comm="alltoall")


# ---------------------------------------------------------------------- reading config.json


def test_qwen3_config_reads_head_dim_norms_and_tie():
    """Qwen3's config: head_dim 32 (64 / 4 = 16), q/k norms, tied embeddings, no bias."""
    spec = ModelSpec.from_hf_config(QWEN3_CONFIG, name="q")
    assert spec == ModelSpec("q", "qwen3", 2, 64, 4, 2, 96, 500, head_dim=32,
                             tie_word_embeddings=True)  # fmt: skip
    assert spec.qk_norm and not spec.qkv_bias


def test_qwen3_moe_config_reads_experts_without_shared_expert():
    """Qwen3-MoE: num_experts 8 of moe_intermediate_size 32, no shared expert or gate."""
    spec = ModelSpec.from_hf_config(QWEN3_MOE_CONFIG)
    assert (spec.family, spec.num_experts, spec.moe_ffn_hidden_size) == ("qwen3-moe", 8, 32)
    assert (spec.shared_expert_ffn_hidden_size, spec.shared_expert_gate) == (0, False)


def test_mistral_by_model_type():
    """A Mistral config without architectures is read by model_type as family mistral."""
    spec = ModelSpec.from_hf_config(
        {**LLAMA_CONFIG, "architectures": None, "model_type": "mistral"}
    )
    assert spec.family == "mistral"


def test_qwen3_moe_mixed_stack_names_the_field():
    """mlp_only_layers [0] makes a mixed dense/MoE stack: refused, naming the field."""
    with pytest.raises(SyncvizError, match=r"mixes dense and MoE.*\(mlp_only_layers\)"):
        ModelSpec.from_hf_config({**QWEN3_MOE_CONFIG, "mlp_only_layers": [0]})
    with pytest.raises(SyncvizError, match=r"\(decoder_sparse_step\)"):
        ModelSpec.from_hf_config({**QWEN3_MOE_CONFIG, "decoder_sparse_step": 2})


@pytest.mark.parametrize(
    ("key", "value", "reader"),
    [
        ("q_lora_rank", 1536, "family deepseek-v3 reads it"),
        ("kv_lora_rank", 512, "family deepseek-v3 reads it"),
        ("n_routed_experts", 256, "family deepseek-v3 / glm4-moe reads it"),
        ("num_experts", 8, "family qwen2-moe / mixtral / qwen3-moe reads it"),
        ("num_local_experts", 8, "family mixtral / gpt-oss reads it"),
        ("use_qk_norm", True, "family glm4-moe reads it"),
        ("head_dim", 32, "family "),
        ("mlp_bias", True, "MLP biases"),
    ],
)
def test_layout_keys_a_family_does_not_read_are_refused(key, value, reader):
    """A layout key the chosen family does not read is refused with its name and its reader
    (head_dim differs from hidden/heads only for QWen v1, which reads kv_channels)."""
    base = LLAMA_CONFIG
    if key == "head_dim":
        base = {**LLAMA_CONFIG, "architectures": ["QWenLMHeadModel"]}
    with pytest.raises(SyncvizError) as info:
        ModelSpec.from_hf_config({**base, key: value})
    text = str(info.value)
    assert text.startswith(f"{key} ({value!r})") and "does not read it" in text
    assert reader in text


def test_inactive_layout_keys_are_not_refused():
    """null, false, 0, [] and decoder_sparse_step 1 add nothing; head_dim = hidden/heads is
    the derived size anyway."""
    quiet = {"q_lora_rank": None, "use_qk_norm": False, "num_experts": 0, "mlp_only_layers": [],
             "decoder_sparse_step": 1, "mlp_bias": False}  # fmt: skip
    assert ModelSpec.from_hf_config({**LLAMA_CONFIG, **quiet}).family == "llama-mcore"
    qwen_v1 = {**LLAMA_CONFIG, "architectures": ["QWenLMHeadModel"], "head_dim": 16}
    assert ModelSpec.from_hf_config(qwen_v1).head_dim == 16


def test_every_unread_layout_key_is_refused_for_every_family():
    """Data-driven: for each family, each layout key it does not read (set to 7) is refused."""
    for info in FAMILY.values():
        if not info.hf_default:
            continue
        config = {**LLAMA_CONFIG, "architectures": [info.architecture]}
        if info.is_moe:
            config.update({info.experts_keys[0]: 4, info.moe_ffn_key: 32})
        if info.mla:
            config.update(kv_lora_rank=8, qk_nope_head_dim=4, qk_rope_head_dim=2, v_head_dim=4)
        ModelSpec.from_hf_config(config)  # the base reads
        for key in set(LAYOUT_KEYS) - info.reads:
            with pytest.raises(SyncvizError, match=f"^{key} "):
                ModelSpec.from_hf_config({**config, key: 7})


def test_relabelled_qwen3_is_refused():
    """Qwen3's config relabelled as Llama keeps model_type qwen3: refused, not a false OK."""
    relabelled = {**QWEN3_CONFIG, "architectures": ["LlamaForCausalLM"]}
    with pytest.raises(SyncvizError, match=r"model_type 'qwen3' .* is family qwen3"):
        ModelSpec.from_hf_config(relabelled)
    same_layout = {**LLAMA_CONFIG, "model_type": "mistral"}
    assert ModelSpec.from_hf_config(same_layout).family == "llama-mcore"
    deepseek = {**LLAMA_CONFIG, "model_type": "deepseek_v3"}
    with pytest.raises(SyncvizError, match="is family deepseek-v3"):
        ModelSpec.from_hf_config(deepseek)


def test_quantization_config_is_noted_not_refused():
    """A quantization_config is one note; the spec is the same as without it."""
    plain = ModelSpec.from_hf_config(QWEN3_CONFIG)
    quantized = ModelSpec.from_hf_config({**QWEN3_CONFIG, "quantization_config": {"bits": 8}})
    assert quantized == plain and plain.notes == ()
    assert len(quantized.notes) == 1 and "scales are not part of the layout" in quantized.notes[0]


def test_cli_refusal_exits_2_and_note_does_not_stop(tmp_path, capsys):
    """`syncviz layout --config`: a relabelled Qwen3 exits 2 in one line; a quantized config
    prints its note and exits 0."""
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**QWEN3_CONFIG, "architectures": ["LlamaForCausalLM"]}))
    assert main(["layout", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("syncviz: error: model_type 'qwen3'") and err.count("\n") == 1
    good = tmp_path / "good.json"
    good.write_text(json.dumps({**QWEN3_CONFIG, "quantization_config": {"bits": 8}}))
    assert main(["layout", "--config", str(good)]) == 0
    assert "syncviz: note:" in capsys.readouterr().err
