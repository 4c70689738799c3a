"""Mixtral, Megatron-Core trainer with SequentialMLP experts; vLLM's ``block_sparse_moe``.

>>> FAMILY.experts, FAMILY.chatlearn
('sequential', '')
"""

from syncviz.families.names import HF_DENSE, HF_LAYER, MCORE_MOE, VLLM_DENSE, VLLM_ROUTED
from syncviz.families.record import FamilyInfo, Preset, sizes

# Mixtral keeps the router and experts under block_sparse_moe. where others say mlp.
_DST = {
    **VLLM_DENSE,
    **{k: n.replace(".mlp.", ".block_sparse_moe.") for k, n in VLLM_ROUTED.items()},
}
_EXPERT = HF_LAYER + "block_sparse_moe.experts.{e}."
_HF = {
    **HF_DENSE,
    "router": (HF_LAYER + "block_sparse_moe.gate.weight",),
    # w1 is the gate (SiLU'd) projection, w3 the up projection, w2 the down projection.
    "experts_w13": (_EXPERT + "w1.weight", _EXPERT + "w3.weight"),
    "experts_w2": (_EXPERT + "w2.weight",),
}

# The original has no Mixtral synchronizer. intermediate_size is each expert's size.
FAMILY = FamilyInfo(
    "mixtral", "MixtralForCausalLM", "mixtral", "", "CorrectedMegatronVllmMixtralSync",
    experts="sequential", experts_keys=("num_local_experts", "num_experts"),
    moe_ffn_key="intermediate_size",
    src_names=MCORE_MOE, dst_names=_DST, hf_names=_HF,
    notes=(
        "Chosen: Megatron-Core MoE with SequentialMLP (mlp.experts.local_experts.{j}), "
        "experts split over ep (rank q holds q*E/ep ..), each expert's fc1 TP-sharded "
        "like a dense fc1 [gate_r; up_r] and fc2 column-sharded; router and "
        "pre_mlp_layernorm whole. vLLM names: MixtralForCausalLM's block_sparse_moe."
    ),
    presets=(
        # mistralai/Mixtral-8x7B-v0.1: layers 32, hidden 4096, heads 32, kv heads 8,
        # intermediate 14336 (each expert's size; no dense MLP), num_local_experts 8,
        # vocab 32000, tie_word_embeddings false.
        Preset("mixtral-8x7b",
               sizes(32, 4096, 32, 8, 14336, 32000, num_experts=8, moe_ffn_hidden_size=14336),
               "mistralai/Mixtral-8x7B-v0.1 config.json"),
    ),
    tiny=sizes(2, 16, 4, 2, 8, 64, name="mixtral-tiny", head_dim=4, num_experts=4,
               moe_ffn_hidden_size=8),
)  # fmt: skip
