"""DeepSeek-V3 (Kimi-K2 and Moonlight read as it): multi-head latent attention (MLA),
dense first layers, routed experts with a router bias and shared experts.

>>> FAMILY.mla, FAMILY.dense_first_key, FAMILY.dtypes["router_bias"]
(True, 'first_k_dense_replace', 'float32')
>>> FAMILY.dst_names["fused_qkv_a"]
'model.model.layers.{i}.self_attn.fused_qkv_a_proj.weight'
"""

from syncviz.families.names import (
    HF_DENSE,
    HF_LAYER,
    HF_ROUTED,
    HF_SHARED,
    MCORE_DENSE_LAYER,
    MCORE_GROUPED_MOE,
    MCORE_LAYER,
    MCORE_SHARED,
    MTP,
    VLLM_DENSE,
    VLLM_LAYER,
    VLLM_ROUTED,
    VLLM_SHARED,
    without,
)
from syncviz.families.record import FamilyInfo, Preset, sizes

_ATTN = MCORE_LAYER + "self_attention."
_SRC = {
    **without(MCORE_GROUPED_MOE, "qkv", "qkv_bias"),
    # MLA has no fused linear_qkv to carry the input norm: it is its own module.
    "input_norm": MCORE_LAYER + "input_layernorm.weight",
    "q_proj": _ATTN + "linear_q_proj.weight",
    # vLLM's fused_qkv_a_proj is the two down projections joined: [q_down; kv_down].
    "fused_qkv_a": (_ATTN + "linear_q_down_proj.weight", _ATTN + "linear_kv_down_proj.weight"),
    "q_a_norm": _ATTN + "linear_q_up_proj.layer_norm_weight",
    "q_b_proj": _ATTN + "linear_q_up_proj.weight",
    "kv_a": _ATTN + "linear_kv_down_proj.weight",
    "kv_a_norm": _ATTN + "linear_kv_up_proj.layer_norm_weight",
    "kv_b_proj": _ATTN + "linear_kv_up_proj.weight",
    **MCORE_SHARED,
}
# MLA's modules under self_attn., named alike in vLLM and in the checkpoint but for the
# fused one (the checkpoint's two tensors, below).
_MLA = {
    "q_proj": "q_proj",
    # vLLM 0.32 (DeepseekV2MLAAttention): with q_lora_rank, q_a_proj and kv_a_proj_with_mqa
    # load into one replicated fused_qkv_a_proj; without, kv_a_proj_with_mqa stays alone.
    # (With VLLM_MLA_DISABLE set, vLLM's non-MLA attention keeps q_a_proj unfused.)
    "fused_qkv_a": "fused_qkv_a_proj",
    "q_a_norm": "q_a_layernorm",
    "q_b_proj": "q_b_proj",
    "kv_a": "kv_a_proj_with_mqa",
    "kv_a_norm": "kv_a_layernorm",
    "kv_b_proj": "kv_b_proj",
}
_DST = {
    **without(VLLM_DENSE, "qkv", "qkv_bias"),
    **VLLM_ROUTED,
    **{kind: VLLM_LAYER + f"self_attn.{name}.weight" for kind, name in _MLA.items()},
    **VLLM_SHARED,
}
_HF = {
    **without(HF_DENSE, "qkv", "qkv_bias"),
    **HF_ROUTED,
    **{kind: (HF_LAYER + f"self_attn.{name}.weight",) for kind, name in _MLA.items()},
    "fused_qkv_a": tuple(HF_LAYER + f"self_attn.{m}.weight" for m in ("q_a_proj", _MLA["kv_a"])),
    **HF_SHARED,
}

# DeepSeek-V3's expert FFN and MLA sizes, which Kimi-K2 shares.
_V3_FFN = {"moe_ffn_hidden_size": 2048, "shared_expert_ffn_hidden_size": 2048}
_V3_MLA = {
    "router_bias": True, "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64, "v_head_dim": 128,
}  # fmt: skip

# The original has no DeepSeek synchronizer.
FAMILY = FamilyInfo(
    "deepseek-v3", "DeepseekV3ForCausalLM", "deepseek_v3", "", "CorrectedMegatronVllmMCoreSync",
    experts="sequential", experts_keys=("n_routed_experts",), mha_only=True, mla=True,
    dense_first_key="first_k_dense_replace", shared_experts_key="n_shared_experts",
    router_bias=True, mtp_key="num_nextn_predict_layers", also_model_types=("kimi_k2",),
    mtp=MTP,
    src_names=_SRC, dst_names=_DST, hf_names=_HF,
    dense_src_names=MCORE_DENSE_LAYER,
    # vLLM allocates e_score_correction_bias as float32 whatever the weights' dtype;
    # Megatron-Core keeps expert_bias in float32 too.
    dtypes={"router_bias": "float32"},
    hf_extra={
        # Not layout keys: what vLLM's DeepSeek model reads to build its router.
        "n_group": 1, "topk_group": 1, "num_experts_per_tok": 2, "moe_layer_freq": 1,
        "scoring_func": "sigmoid", "norm_topk_prob": True, "routed_scaling_factor": 1.0,
        "hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "max_position_embeddings": 256,
    },
    notes=(
        "Megatron-Core MLA (multi_latent_attention.py): linear_q_proj, or linear_q_down_proj "
        "+ linear_q_up_proj (its layer_norm_weight is q_a_layernorm), linear_kv_down_proj, "
        "linear_kv_up_proj (layer_norm_weight = kv_a_layernorm), linear_proj; the down "
        "projections whole on every TP rank, the up projections column-parallel by heads "
        "with each head [nope; rope] (q) or [k_nope; v] (kv), as vLLM's q_proj/q_b_proj/"
        "kv_b_proj. input_layernorm is its own module. Dense first layers (below "
        "first_k_dense_replace) have mlp.linear_fc1 with the fused pre-MLP norm; MoE layers "
        "pre_mlp_layernorm, router mlp.router.weight and the float32 buffer "
        "mlp.router.expert_bias (vLLM mlp.gate.e_score_correction_bias, when topk_method is "
        "noaux_tc), TEGroupedMLP experts (rank ep holds ep*E/EP + j) and shared experts "
        "mlp.shared_experts.linear_fc1/fc2 of n_shared_experts * moe_intermediate_size, "
        "without a gate. The MTP layer (num_nextn_predict_layers) is left out unless asked "
        "for (mtp=True)."
    ),
    presets=(
        # deepseek-ai/DeepSeek-V3 config.json (also DeepSeek-V3-0324 / V3.1, same shapes):
        # layers 61, hidden 7168, heads 128 (num_key_value_heads 128), q_lora_rank 1536,
        # kv_lora_rank 512, qk_rope_head_dim 64, qk_nope_head_dim 128, v_head_dim 128,
        # intermediate 18432, moe_intermediate_size 2048, n_routed_experts 256,
        # n_shared_experts 1, first_k_dense_replace 3, moe_layer_freq 1, topk_method
        # noaux_tc, vocab 129280, tie_word_embeddings false, num_nextn_predict_layers 1
        # (laid out only with mtp), an fp8 quantization_config (noted). Sure of every value.
        Preset("deepseek-v3",
               sizes(61, 7168, 128, 128, 18432, 129280, num_experts=256, **_V3_FFN,
                     first_k_dense_replace=3, **_V3_MLA),
               "deepseek-ai/DeepSeek-V3 config.json", mtp_layers=1),
        # moonshotai/Kimi-K2-Instruct config.json (architectures DeepseekV3ForCausalLM,
        # model_type kimi_k2): layers 61, hidden 7168, heads 64 (num_key_value_heads 64),
        # n_routed_experts 384, first_k_dense_replace 1, vocab 163840: sure. Same as
        # DeepSeek-V3 (sure to our reading of the config): q_lora_rank 1536, kv_lora_rank
        # 512, rope 64, nope 128, v 128, intermediate 18432, moe_intermediate_size 2048,
        # n_shared_experts 1, topk_method noaux_tc, tie_word_embeddings false.
        Preset("kimi-k2", sizes(61, 7168, 64, 64, 18432, 163840, num_experts=384, **_V3_FFN,
                                first_k_dense_replace=1, **_V3_MLA),
               "moonshotai/Kimi-K2-Instruct config.json"),
        # moonshotai/Moonlight-16B-A3B config.json (DeepseekV3ForCausalLM): q_lora_rank null
        # (sure: the MLA without low-rank query), kv_lora_rank 512, rope 64, nope 128, v 128,
        # vocab 163840 (sure). Less sure, from our reading of the config: layers 27,
        # hidden 2048, heads 16, intermediate 11264, moe_intermediate_size 1408,
        # n_routed_experts 64, n_shared_experts 2, first_k_dense_replace 1, topk_method
        # noaux_tc, tie_word_embeddings false.
        Preset("moonlight-16b-a3b",
               sizes(27, 2048, 16, 16, 11264, 163840, num_experts=64,
                     moe_ffn_hidden_size=1408, shared_expert_ffn_hidden_size=2816,
                     first_k_dense_replace=1, router_bias=True, kv_lora_rank=512,
                     qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128),
               "moonshotai/Moonlight-16B-A3B config.json"),
    ),
    # Every feature: the low-rank query, one dense layer then one MoE layer, a router
    # bias, a shared expert; nope/rope/v sizes that differ; FFN sizes whose per-rank
    # share at d = 4 is still a multiple of 32 (vLLM's CPU MoE back end).
    tiny=sizes(2, 64, 4, 4, 128, 100, name="deepseek-v3-tiny", num_experts=4,
               moe_ffn_hidden_size=128, shared_expert_ffn_hidden_size=128,
               first_k_dense_replace=1, router_bias=True, q_lora_rank=24, kv_lora_rank=16,
               qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8),
)  # fmt: skip
