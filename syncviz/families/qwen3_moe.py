"""Qwen3-MoE: Qwen3 attention, routed experts without a shared expert, Megatron-Core
grouped experts on the trainer (``mlp.experts.linear_fc1.weight{j}``).

>>> FAMILY.experts, FAMILY.src_names["experts_w2"]
('sequential', 'decoder.layers.{i}.mlp.experts.linear_fc2.weight{j}')
"""

from syncviz.families.names import (
    HF_DENSE,
    HF_QK_NORM,
    HF_ROUTED,
    MCORE_GROUPED_MOE,
    MCORE_QK_NORM,
    VLLM_DENSE,
    VLLM_QK_NORM,
    VLLM_ROUTED,
    without,
)
from syncviz.families.record import FamilyInfo, Preset, sizes

FAMILY = FamilyInfo(
    "qwen3-moe", "Qwen3MoeForCausalLM", "qwen3_moe", "", "CorrectedMegatronVllmMCoreSync",
    experts="sequential", qkv_bias="attention_bias", qk_norm=True,
    experts_keys=("num_experts",), sparse_step=True,
    src_names={**MCORE_GROUPED_MOE, **MCORE_QK_NORM},
    dst_names={**without(VLLM_DENSE, "gate_up", "down"), **VLLM_QK_NORM, **VLLM_ROUTED},
    hf_names={**without(HF_DENSE, "gate_up", "down"), **HF_QK_NORM, **HF_ROUTED},
    notes=(
        "Qwen3 attention; Megatron-Core grouped experts (TEGroupedMLP, "
        "mlp.experts.linear_fc1.weight{j}): rank ep holds experts ep*E/EP + j, each "
        "TP-sharded like a dense fc1 [gate_r; up_r] and fc2 column-sharded (the same "
        "placement as SequentialMLP); router mlp.router.weight [E, H] and "
        "pre_mlp_layernorm whole. No shared expert."
    ),
    presets=(
        # Qwen/Qwen3-30B-A3B (Qwen3MoeForCausalLM): layers 48, hidden 2048, heads 32, kv
        # heads 4, head_dim 128, intermediate 6144 (unused: every layer is MoE), num_experts
        # 128, moe_intermediate_size 768, decoder_sparse_step 1, mlp_only_layers [], no
        # shared expert, vocab 151936, tie_word_embeddings false, attention_bias false.
        Preset("qwen3-30b-a3b",
               sizes(48, 2048, 32, 4, 6144, 151936, head_dim=128, num_experts=128,
                     moe_ffn_hidden_size=768),
               "Qwen/Qwen3-30B-A3B config.json"),
        # Qwen/Qwen3-235B-A22B: layers 94, hidden 4096, heads 64, kv heads 4, head_dim 128,
        # intermediate 12288 (unused), num_experts 128, moe_intermediate_size 1536,
        # decoder_sparse_step 1, mlp_only_layers [], vocab 151936, tie_word_embeddings false.
        Preset("qwen3-235b-a22b",
               sizes(94, 4096, 64, 4, 12288, 151936, head_dim=128, num_experts=128,
                     moe_ffn_hidden_size=1536),
               "Qwen/Qwen3-235B-A22B config.json"),
    ),
    # 4 experts without a shared expert; head_dim 4 with hidden 24 (not 24 / 4 = 6).
    tiny=sizes(2, 24, 4, 2, 16, 70, name="qwen3-moe-tiny", head_dim=4, num_experts=4,
               moe_ffn_hidden_size=8),
)  # fmt: skip
