"""GLM-4.5 MoE: optional q/k norms, q/k/v biases, dense first layers, router bias and shared
experts; hand-worked oracle cases, the corrected sync, config reading, presets."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from syncviz.oracle import model_layout
from syncviz.oracle.layout import layer_kinds
from syncviz.parallel import Parallel
from syncviz.presets import preset
from syncviz.run.inprocess import run_sync
from syncviz.spec import ModelSpec

L0, L1 = "model.model.layers.0.", "model.model.layers.1."
M0, M1 = "module.module.decoder.layers.0.", "module.module.decoder.layers.1."

# hidden 6, 4 heads, 2 K/V heads, head_dim 2 (Q rows 0-7, K 8-11, V 12-15); layer 0 dense
# (ffn 4), layer 1 MoE (2 experts of 4, a shared expert of 4, a router bias); q/k norms.
GLM = ModelSpec("glm", "glm4-moe", 2, 6, 4, 2, 4, 64, head_dim=2, qkv_bias=True,
                num_experts=2, moe_ffn_hidden_size=4, shared_expert_ffn_hidden_size=4,
                first_k_dense_replace=1, router_bias=True, use_qk_norm=True)  # fmt: skip
GLM_CONFIG = {
    "architectures": ["Glm4MoeForCausalLM"], "model_type": "glm4_moe", "num_hidden_layers": 4,
    "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
    "intermediate_size": 96, "moe_intermediate_size": 32, "n_routed_experts": 8,
    "n_shared_experts": 1, "first_k_dense_replace": 1, "attention_bias": True,
    "use_qk_norm": False, "vocab_size": 500, "num_nextn_predict_layers": 1,
}  # fmt: skip


def test_glm_layers_dense_then_moe_with_bias_norms_and_router_bias():
    """Layer 0: qkv, its bias, q/k norms, a dense MLP (trainer fc1's fused norm); layer 1:
    router, router bias, experts, shared experts (pre_mlp_layernorm)."""
    assert layer_kinds(GLM, 0) == [
        "input_norm", "qkv", "qkv_bias", "q_norm", "k_norm", "o_proj", "post_attention_norm",
        "gate_up", "down",
    ]  # fmt: skip
    assert layer_kinds(GLM, 1)[7:] == [
        "router", "router_bias", "experts_w13", "experts_w2", "shared_gate_up", "shared_down",
    ]  # fmt: skip
    layout = model_layout(GLM, Parallel(tp=2), Parallel(tp=4), layers=[0, 1])
    assert layout.param(f"{L0}post_attention_layernorm.weight").src[0].name == (
        f"{M0}mlp.linear_fc1.layer_norm_weight"
    )
    assert layout.param(f"{L1}post_attention_layernorm.weight").src[0].name == (
        f"{M1}pre_mlp_layernorm.weight"
    )
    bias = layout.param(f"{L1}mlp.gate.e_score_correction_bias")
    assert bias.src[0].name == f"{M1}mlp.router.expert_bias"
    assert [t.index.ids().tolist() for t in bias.dst] == [[0, 1]] * 4


def test_glm_qkv_bias_rows_at_tp4_replicate_kv():
    """qkv bias [16] at vLLM tp 4: rank r = Q head r (rows 2r, 2r+1), K/V head r // 2."""
    layout = model_layout(GLM, Parallel(tp=1), Parallel(tp=4), layers=[0])
    bias = layout.param(f"{L0}self_attn.qkv_proj.bias")
    assert [t.index.ids().tolist() for t in bias.dst] == [
        [0, 1, 8, 9, 12, 13],
        [2, 3, 8, 9, 12, 13],
        [4, 5, 10, 11, 14, 15],
        [6, 7, 10, 11, 14, 15],
    ]


def test_use_qk_norm_false_drops_the_norms():
    """use_qk_norm false: no q_norm/k_norm in any layer (GLM-4.5-Air's reading)."""
    plain = replace(GLM, use_qk_norm=False)
    assert "q_norm" not in layer_kinds(plain, 0) and "k_norm" not in layer_kinds(plain, 1)
    spec = ModelSpec.from_hf_config(GLM_CONFIG)
    assert spec.family == "glm4-moe" and spec.qk_norm is False
    assert ModelSpec.from_hf_config({**GLM_CONFIG, "use_qk_norm": True}).qk_norm is True


def test_glm_config_reads_stack_shared_bias_and_notes_mtp():
    """head_dim 32 (not 64 / 4), bias, 1 dense layer, a shared expert of 32, the router bias
    (GLM has no topk_method: always there); the MTP layer is a note."""
    spec = ModelSpec.from_hf_config(GLM_CONFIG)
    got = (spec.head_dim, spec.qkv_bias, spec.first_k_dense_replace,
           spec.shared_expert_ffn_hidden_size, spec.router_bias, spec.num_experts)  # fmt: skip
    assert got == (32, True, 1, 32, True, 8)
    assert any("num_nextn_predict_layers" in note for note in spec.notes)


@pytest.mark.parametrize(("s", "ep", "d"), [(1, 1, 1), (1, 2, 2), (2, 1, 4), (2, 2, 4)])
def test_corrected_glm_tiny_is_exact(s, ep, d):
    """Dense and MoE layer, norms, biases, router bias: every vLLM rank gets the oracle's ids."""
    result = run_sync(GLM, Parallel(tp=s, ep=ep), Parallel(tp=d), synchronizer="corrected",
                      layers=[0, 1], trace=False)  # fmt: skip
    assert result.findings == [], [f.message for f in result.findings]
    for param in result.plan.layout:
        for t in param.dst:
            world = result.plan.world_rank("dst", tp=t.tp)
            got = result.local_ids(world, param.key)
            assert torch.equal(got, t.index.ids().to(torch.float64)), param.describe_dst(t.tp)


def test_glm_presets():
    """GLM-4.5: 92 layers, 96 heads over 8 K/V heads, 160 experts, 3 dense layers, q/k norms;
    GLM-4.5-Air: 46 layers, 128 experts, 1 dense layer, no q/k norms."""
    full, air = preset("glm-4.5"), preset("glm-4.5-air")
    assert (full.num_layers, full.num_query_groups, full.num_experts) == (92, 8, 160)
    assert (full.first_k_dense_replace, full.qk_norm, full.head_dim) == (3, True, 128)
    assert (air.num_layers, air.num_experts, air.first_k_dense_replace) == (46, 128, 1)
    assert air.qk_norm is False and air.router_bias and air.qkv_bias
