"""Qwen2-MoE / Qwen1.5-MoE, ChatLearn's HEP trainer: whole experts over ep * tp ranks.

>>> FAMILY.experts, FAMILY.expert_fc1_halves
('hep', ('up', 'gate'))
"""

from syncviz.families.names import (
    HF_DENSE,
    HF_LAYER,
    HF_ROUTED,
    LEGACY_QWEN,
    VLLM_DENSE,
    VLLM_LAYER,
    VLLM_ROUTED,
    hf_mlp,
    vllm_names,
)
from syncviz.families.record import FamilyInfo, Preset, sizes

# One shared expert (mlp.shared_expert., singular) and its gate.
_HF_SHARED = {
    **hf_mlp(HF_LAYER + "mlp.shared_expert.", "shared_gate_up", "shared_down"),
    "shared_expert_gate": (HF_LAYER + "mlp.shared_expert_gate.weight",),
}
_DST = {
    **VLLM_DENSE,
    **VLLM_ROUTED,
    **vllm_names(_HF_SHARED, shared_gate_up=VLLM_LAYER + "mlp.shared_expert.gate_up_proj.weight"),
}
_HF = {**HF_DENSE, **HF_ROUTED, **_HF_SHARED}

FAMILY = FamilyInfo(
    "qwen2-moe", "Qwen2MoeForCausalLM", "qwen2_moe", "MegatronVllmQWen2Sync",
    "CorrectedMegatronVllmQWen2Sync", experts="hep", trainer="legacy",
    qkv_bias="qkv_bias", qkv_bias_default=True, experts_keys=("num_experts",),
    shared_expert=True, sparse_step=True,
    src_names=LEGACY_QWEN, dst_names=_DST, hf_names=_HF,
    fc1_halves=(("up", "gate"),), expert_fc1_halves=("up", "gate"),
    notes=(
        "As qwen2, plus ChatLearn HEP routed experts: the ep*tp ranks of the "
        "tensor-and-expert group (rank = ep_rank*tp + tp_rank, tp fastest, as in "
        "ChatLearn's HEP test test_hep_eptppp_vllm_tp_dst_ep1_tp4_pp1_src_ep2_tp2_pp2) "
        "each hold E/(ep*tp) whole experts; an expert's fc1 is [up; gate] (golden "
        "record routed-allgather-0001: vLLM gets the trainer's second half first), fc2 "
        "is w2 transposed. Shared-expert fc1 is [up_r; gate_r] "
        "(fix_shared_expert_ordering swaps its halves)."
    ),
    presets=(
        # Qwen/Qwen1.5-MoE-A2.7B: layers 24, hidden 2048, heads 16, kv heads 16,
        # intermediate 5632, num_experts 60, moe_intermediate_size 1408,
        # shared_expert_intermediate_size 5632 (with shared_expert_gate), vocab 151936.
        Preset("qwen1.5-moe-a2.7b",
               sizes(24, 2048, 16, 16, 5632, 151936, qkv_bias=True, num_experts=60,
                     moe_ffn_hidden_size=1408, shared_expert_ffn_hidden_size=5632,
                     shared_expert_gate=True),
               "Qwen/Qwen1.5-MoE-A2.7B config.json"),
        # Qwen/Qwen2-57B-A14B: layers 28, hidden 3584, heads 28, kv heads 4,
        # intermediate 18944, num_experts 64, moe_intermediate_size 2560,
        # shared_expert_intermediate_size 20480, vocab 151936, tie_word_embeddings false.
        Preset("qwen2-57b-a14b",
               sizes(28, 3584, 28, 4, 18944, 151936, qkv_bias=True, num_experts=64,
                     moe_ffn_hidden_size=2560, shared_expert_ffn_hidden_size=20480,
                     shared_expert_gate=True),
               "Qwen/Qwen2-57B-A14B config.json"),
    ),
    tiny=sizes(2, 16, 4, 4, 16, 70, name="qwen2-moe-tiny", head_dim=4, qkv_bias=True,
               num_experts=4, moe_ffn_hidden_size=8, shared_expert_ffn_hidden_size=16,
               shared_expert_gate=True),
)  # fmt: skip
