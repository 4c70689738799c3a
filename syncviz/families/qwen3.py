"""Qwen3 (dense): per-head q_norm / k_norm, an explicit head_dim, no qkv bias by default.

>>> FAMILY.qk_norm, sorted(FAMILY.reads)
(True, ['attention_bias', 'head_dim'])
"""

from syncviz.families.names import (
    HF_DENSE,
    HF_QK_NORM,
    MCORE_DENSE,
    MCORE_QK_NORM,
    VLLM_DENSE,
    VLLM_QK_NORM,
)
from syncviz.families.record import FamilyInfo, Preset, sizes

# The original has no Qwen3 synchronizer.
FAMILY = FamilyInfo(
    "qwen3", "Qwen3ForCausalLM", "qwen3", "", "CorrectedMegatronVllmMCoreSync",
    qkv_bias="attention_bias", qk_norm=True,
    src_names={**MCORE_DENSE, **MCORE_QK_NORM}, dst_names={**VLLM_DENSE, **VLLM_QK_NORM},
    hf_names={**HF_DENSE, **HF_QK_NORM},
    notes=(
        "Megatron-Core as llama-mcore, plus self_attention.q_layernorm / k_layernorm "
        "([head_dim], whole on every rank; vLLM self_attn.q_norm / k_norm, replicated "
        "and applied per head). head_dim is explicit (kv_channels) and may differ "
        "from hidden/heads."
    ),
    presets=(
        # Qwen/Qwen3-0.6B: layers 28, hidden 1024, heads 16, kv heads 8, head_dim 128
        # (16 * 128 = 2048, not 1024), intermediate 3072, vocab 151936,
        # tie_word_embeddings true, attention_bias false.
        Preset("qwen3-0.6b",
               sizes(28, 1024, 16, 8, 3072, 151936, head_dim=128, tie_word_embeddings=True),
               "Qwen/Qwen3-0.6B config.json"),
        # Qwen/Qwen3-8B: layers 36, hidden 4096, heads 32, kv heads 8, head_dim 128,
        # intermediate 12288, vocab 151936, tie_word_embeddings false, attention_bias false.
        Preset("qwen3-8b", sizes(36, 4096, 32, 8, 12288, 151936, head_dim=128),
               "Qwen/Qwen3-8B config.json"),
        # Qwen/Qwen3-32B: layers 64, hidden 5120, heads 64, kv heads 8, head_dim 128
        # (64 * 128 = 8192, not 5120), intermediate 25600, vocab 151936,
        # tie_word_embeddings false, attention_bias false.
        Preset("qwen3-32b", sizes(64, 5120, 64, 8, 25600, 151936, head_dim=128),
               "Qwen/Qwen3-32B config.json"),
    ),
    # head_dim 8 differs from hidden / heads = 16 / 4; tied embeddings; vocab 90 pads to 128.
    tiny=sizes(2, 16, 4, 2, 16, 90, name="qwen3-tiny", head_dim=8, tie_word_embeddings=True),
)  # fmt: skip
