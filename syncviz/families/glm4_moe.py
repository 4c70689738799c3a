"""GLM-4.5 MoE (``Glm4MoeForCausalLM``): GQA with q/k/v biases, q/k norms when
``use_qk_norm``, dense first layers, routed experts with a router bias, shared experts.

>>> FAMILY.qk_norm_key, FAMILY.dst_names["router_bias"]
('use_qk_norm', 'model.model.layers.{i}.mlp.gate.e_score_correction_bias')
"""

from syncviz.families.names import (
    HF_DENSE,
    HF_QK_NORM,
    HF_ROUTED,
    HF_SHARED,
    MCORE_DENSE_LAYER,
    MCORE_GROUPED_MOE,
    MCORE_QK_NORM,
    MCORE_SHARED,
    MTP,
    VLLM_DENSE,
    VLLM_QK_NORM,
    VLLM_ROUTED,
    VLLM_SHARED,
)
from syncviz.families.record import FamilyInfo, Preset, sizes

_SRC = {**MCORE_GROUPED_MOE, **MCORE_QK_NORM, **MCORE_SHARED}
_DST = {**VLLM_DENSE, **VLLM_QK_NORM, **VLLM_ROUTED, **VLLM_SHARED}
_HF = {**HF_DENSE, **HF_QK_NORM, **HF_ROUTED, **HF_SHARED}


def _glm(experts: int, expert_ffn: int, dense_first: int, qk_norm: bool) -> dict:
    """What GLM-4.5's presets set beyond the dense sizes: head_dim 128, q/k/v biases, a
    router bias, one shared expert as wide as a routed one."""
    return {
        "head_dim": 128, "qkv_bias": True, "num_experts": experts,
        "moe_ffn_hidden_size": expert_ffn, "shared_expert_ffn_hidden_size": expert_ffn,
        "first_k_dense_replace": dense_first, "router_bias": True, "use_qk_norm": qk_norm,
    }  # fmt: skip


# The original has no GLM synchronizer.
FAMILY = FamilyInfo(
    "glm4-moe", "Glm4MoeForCausalLM", "glm4_moe", "", "CorrectedMegatronVllmMCoreSync",
    experts="sequential", experts_keys=("n_routed_experts",), qkv_bias="attention_bias",
    qk_norm=True, qk_norm_key="use_qk_norm", dense_first_key="first_k_dense_replace",
    shared_experts_key="n_shared_experts", router_bias=True,
    mtp_key="num_nextn_predict_layers",
    mtp=MTP,
    src_names=_SRC, dst_names=_DST, hf_names=_HF,
    dense_src_names=MCORE_DENSE_LAYER,
    # vLLM allocates e_score_correction_bias as float32 (Glm4MoE); so does Megatron-Core.
    dtypes={"router_bias": "float32"},
    hf_extra={
        # Not layout keys: what vLLM's GLM-4.5 model reads to build its router.
        "n_group": 1, "topk_group": 1, "num_experts_per_tok": 2, "norm_topk_prob": True,
        "routed_scaling_factor": 1.0, "partial_rotary_factor": 0.5, "hidden_act": "silu",
        "rms_norm_eps": 1e-5, "rope_theta": 1000000.0, "max_position_embeddings": 256,
    },
    notes=(
        "Megatron-Core GQA (linear_qkv with its bias and the fused input norm; "
        "q_layernorm/k_layernorm when use_qk_norm), dense first layers below "
        "first_k_dense_replace (mlp.linear_fc1 with the fused pre-MLP norm), MoE layers "
        "with pre_mlp_layernorm, router mlp.router.weight, the float32 buffer "
        "mlp.router.expert_bias (vLLM mlp.gate.e_score_correction_bias, always present), "
        "TEGroupedMLP experts (rank ep holds ep*E/EP + j) and shared experts "
        "mlp.shared_experts.linear_fc1/fc2 of n_shared_experts * moe_intermediate_size. "
        "The MTP layer (num_nextn_predict_layers) is left out unless asked for (mtp=True)."
    ),
    presets=(
        # zai-org/GLM-4.5 config.json: layers 92, hidden 5120, heads 96, kv heads 8,
        # head_dim 128, intermediate 12288, moe_intermediate_size 1536, n_routed_experts
        # 160, n_shared_experts 1, first_k_dense_replace 3, attention_bias true, vocab
        # 151552, tie_word_embeddings false, num_nextn_predict_layers 1 (with mtp): sure.
        # use_qk_norm true: from our reading of the config, less sure.
        Preset("glm-4.5", sizes(92, 5120, 96, 8, 12288, 151552, **_glm(160, 1536, 3, True)),
               "zai-org/GLM-4.5 config.json", mtp_layers=1),
        # zai-org/GLM-4.5-Air config.json: layers 46, hidden 4096, heads 96, kv heads 8,
        # head_dim 128, intermediate 10944, moe_intermediate_size 1408, n_routed_experts
        # 128, n_shared_experts 1, first_k_dense_replace 1, attention_bias true, vocab
        # 151552, tie_word_embeddings false, num_nextn_predict_layers 1: sure.
        # use_qk_norm false: less sure.
        Preset("glm-4.5-air", sizes(46, 4096, 96, 8, 10944, 151552, **_glm(128, 1408, 1, False)),
               "zai-org/GLM-4.5-Air config.json", mtp_layers=1),
    ),
    # Every feature: q/k/v biases, q/k norms, head_dim 8 (not 64 / 4), one dense then one
    # MoE layer, a router bias, a shared expert; per-rank FFN shares a multiple of 32 at d 4.
    tiny=sizes(2, 64, 4, 2, 128, 100, name="glm4-moe-tiny", head_dim=8, qkv_bias=True,
               num_experts=4, moe_ffn_hidden_size=128, shared_expert_ffn_hidden_size=128,
               first_k_dense_replace=1, router_bias=True, use_qk_norm=True),
)  # fmt: skip
