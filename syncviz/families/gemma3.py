"""Gemma-3 (text): four norms a layer, per-head q_norm / k_norm, explicit head_dim, tied head.

>>> FAMILY.output_norms, FAMILY.qk_norm, FAMILY.config_defaults["head_dim"]
(True, True, 256)
>>> FAMILY.dst_names["post_attention_norm"]
'model.model.layers.{i}.pre_feedforward_layernorm.weight'
"""

from syncviz.families.names import (
    HF_DENSE,
    HF_LAYER,
    HF_QK_NORM,
    MCORE_DENSE,
    MCORE_LAYER,
    MCORE_QK_NORM,
    VLLM_DENSE,
    VLLM_LAYER,
    VLLM_QK_NORM,
)
from syncviz.families.record import FamilyInfo, Preset, sizes

# Kind -> layer norm name in Hugging Face and vLLM (vLLM's Gemma3DecoderLayer keeps the
# checkpoint's module names). Gemma's own "post_attention_layernorm" normalises the
# attention output before the residual add; the norm before the MLP (syncviz's
# post_attention_norm, fused into Megatron-Core's linear_fc1) is its pre_feedforward_layernorm.
_NORMS = {
    "input_norm": "input_layernorm",
    "attn_out_norm": "post_attention_layernorm",
    "post_attention_norm": "pre_feedforward_layernorm",
    "ffn_out_norm": "post_feedforward_layernorm",
}
# Megatron-Core: the output norms ride on the row-parallel layers they follow
# (Megatron-Bridge's Gemma-3 mapping, gemma3_bridge.py: TERowParallelLinearLayerNorm).
_MCORE_OUT_NORMS = {
    "attn_out_norm": MCORE_LAYER + "self_attention.linear_proj.post_layernorm.weight",
    "ffn_out_norm": MCORE_LAYER + "mlp.linear_fc2.post_layernorm.weight",
}

# The original has no Gemma-3 synchronizer.
FAMILY = FamilyInfo(
    "gemma3", "Gemma3ForCausalLM", "gemma3_text", "", "CorrectedMegatronVllmMCoreSync",
    qkv_bias="attention_bias", qk_norm=True, output_norms=True,
    wrapper_architecture="Gemma3ForConditionalGeneration", wrapper_model_type="gemma3",
    # transformers' Gemma3TextConfig defaults: a published text_config leaves most out
    # (google/gemma-3-12b-it gives no head_dim, vocab_size or tie_word_embeddings).
    config_defaults={
        "vocab_size": 262208, "hidden_size": 2304, "intermediate_size": 9216,
        "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
        "head_dim": 256, "tie_word_embeddings": True, "attention_bias": False,
    },
    src_names={**MCORE_DENSE, **MCORE_QK_NORM, **_MCORE_OUT_NORMS},
    dst_names={
        **VLLM_DENSE, **VLLM_QK_NORM,
        **{kind: VLLM_LAYER + f"{name}.weight" for kind, name in _NORMS.items()},
    },
    hf_names={
        **HF_DENSE, **HF_QK_NORM,
        **{kind: (HF_LAYER + f"{name}.weight",) for kind, name in _NORMS.items()},
    },
    notes=(
        "vLLM 0.32 gemma3.py: Gemma3DecoderLayer has input_layernorm, "
        "post_attention_layernorm (on the attention output), pre_feedforward_layernorm "
        "(before the MLP) and post_feedforward_layernorm (on the MLP output), each "
        "[hidden], whole on every rank; self_attn.q_norm / k_norm [head_dim], replicated, "
        "applied per head; qkv_proj (q, k, v stacked, GQA with K/V replicated past the K/V "
        "heads) and gate_up_proj (gate, up) as Llama; lm_head tied to embed_tokens when "
        "tie_word_embeddings (the default). head_dim is explicit (256 for 12B, not "
        "hidden/heads = 240). Megatron-Core names from Megatron-Bridge's Gemma-3 mapping. "
        "Gemma3ForConditionalGeneration configs are read through their text_config; the "
        "vision tower and the wrapper's language_model.* names are out of scope. Scaling "
        "the embedding by sqrt(hidden), the (1 + w) RMS norms, the query scale and the "
        "sliding-window layers are run-time math, not layout."
    ),
    presets=(
        # google/gemma-3-12b-it (Gemma3ForConditionalGeneration), text_config: layers 48,
        # hidden 3840, heads 16, kv heads 8, intermediate 15360; head_dim (256), vocab_size
        # (262208) and tie_word_embeddings (true) from Gemma3TextConfig's defaults.
        Preset("gemma3-12b",
               sizes(48, 3840, 16, 8, 15360, 262208, head_dim=256, tie_word_embeddings=True),
               "google/gemma-3-12b-it config.json (text_config)"),
        # google/gemma-3-1b-it (Gemma3ForCausalLM): layers 26, hidden 1152, heads 4, kv
        # heads 1, head_dim 256, intermediate 6912, vocab 262144, tied embeddings (default).
        Preset("gemma3-1b",
               sizes(26, 1152, 4, 1, 6912, 262144, head_dim=256, tie_word_embeddings=True),
               "google/gemma-3-1b-it config.json"),
    ),
    # head_dim 8 differs from hidden / heads = 16 / 4; tied embeddings; vocab 90 pads to 128.
    tiny=sizes(2, 16, 4, 2, 16, 90, name="gemma3-tiny", head_dim=8, tie_word_embeddings=True),
)  # fmt: skip
