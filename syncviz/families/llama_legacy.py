"""Llama trained with legacy Megatron (ChatLearn's Llama trainer): ``language_model.encoder``.

>>> FAMILY.presets[0].name, FAMILY.hf_default
('llama2-7b', False)
"""

from dataclasses import replace

from syncviz.families import llama_mcore
from syncviz.families.names import LEGACY_DENSE, LEGACY_LAYER
from syncviz.families.record import Preset, sizes

# A plain Llama checkpoint is trained with Megatron-Core today, hence not the default.
# The model is llama-mcore's (architecture, vLLM and checkpoint names, classes); the
# trainer names its norms input_norm / post_attention_norm / final_norm.
FAMILY = replace(
    llama_mcore.FAMILY,
    name="llama-legacy", hf_default=False, trainer="legacy", tiny=None,
    src_names={
        **LEGACY_DENSE,
        "final_norm": "encoder.final_norm.weight",
        "input_norm": LEGACY_LAYER + "input_norm.weight",
        "post_attention_norm": LEGACY_LAYER + "post_attention_norm.weight",
    },
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
