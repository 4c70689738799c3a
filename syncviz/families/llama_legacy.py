"""Llama trained with legacy Megatron (ChatLearn's Llama trainer): ``language_model.encoder``.

>>> FAMILY.presets[0].name, FAMILY.hf_default
('llama2-7b', False)
"""

from syncviz.families.names import HF_DENSE, LEGACY_LAYER, VLLM_DENSE
from syncviz.families.record import FamilyInfo, Preset, sizes

_SRC = {
    "embed": "embedding.word_embeddings.weight",
    "final_norm": "encoder.final_norm.weight",
    "lm_head": "output_layer.weight",
    "input_norm": LEGACY_LAYER + "input_norm.weight",
    "qkv": LEGACY_LAYER + "self_attention.query_key_value.weight",
    "qkv_bias": LEGACY_LAYER + "self_attention.query_key_value.bias",
    "o_proj": LEGACY_LAYER + "self_attention.dense.weight",
    "post_attention_norm": LEGACY_LAYER + "post_attention_norm.weight",
    "gate_up": LEGACY_LAYER + "mlp.dense_h_to_4h.weight",
    "down": LEGACY_LAYER + "mlp.dense_4h_to_h.weight",
}

# A plain Llama checkpoint is trained with Megatron-Core today, hence not the default.
FAMILY = FamilyInfo(
    "llama-legacy", "LlamaForCausalLM", "llama", "MegatronVllmLlamaSync",
    "CorrectedMegatronVllmLlamaSync", hf_default=False, trainer="legacy",
    qkv_bias="attention_bias",
    src_names=_SRC, dst_names=VLLM_DENSE, hf_names=HF_DENSE,
    notes=(
        "Names: golden records of Megatron2LlamaSyncMap. QKV: legacy Megatron keeps "
        "[q_h, k_h, v_h] per head for MHA (checkpoint version >= 2) and the per-group "
        "order with GQA; ChatLearn's fix_qwen_query_key_value_ordering(version 3.0) "
        "turns the MHA interleave into [Q; K; V]. fc1: Megatron swiglu chunks the "
        "local output, so rank r holds [gate_r; up_r]."
    ),
    presets=(
        # meta-llama/Llama-2-7b-hf: layers 32, hidden 4096, heads 32, no num_key_value_heads
        # (MHA), intermediate 11008, vocab 32000, tie_word_embeddings false.
        Preset("llama2-7b", sizes(32, 4096, 32, 32, 11008, 32000),
               "meta-llama/Llama-2-7b-hf config.json"),
    ),
)  # fmt: skip
