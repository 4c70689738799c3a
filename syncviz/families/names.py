"""Name tables several family files share: vLLM's, the trainers', Hugging Face's.

Keys are parameter kinds (``syncviz.oracle.blocks.KINDS``); ``{i}`` is the layer index
(stage-local for the trainer, as Megatron numbers layers inside a pipeline stage;
global for vLLM), ``{j}`` a local expert, ``{e}`` an expert. Trainer names leave out
the trainer's prefix (``syncviz.families.record.TRAINER_PREFIX``).

>>> VLLM_DENSE["qkv"]
'model.model.layers.{i}.self_attn.qkv_proj.weight'
>>> MCORE_DENSE["post_attention_norm"]
'decoder.layers.{i}.mlp.linear_fc1.layer_norm_weight'
"""

from __future__ import annotations

from syncviz.families.record import MtpLayout

VLLM_LAYER = "model.model.layers.{i}."
VLLM_DENSE = {
    "embed": "model.model.embed_tokens.weight",
    "final_norm": "model.model.norm.weight",
    "lm_head": "model.lm_head.weight",
    "input_norm": VLLM_LAYER + "input_layernorm.weight",
    "qkv": VLLM_LAYER + "self_attn.qkv_proj.weight",
    "qkv_bias": VLLM_LAYER + "self_attn.qkv_proj.bias",
    "o_proj": VLLM_LAYER + "self_attn.o_proj.weight",
    "post_attention_norm": VLLM_LAYER + "post_attention_layernorm.weight",
    "gate_up": VLLM_LAYER + "mlp.gate_up_proj.weight",
    "down": VLLM_LAYER + "mlp.down_proj.weight",
}
VLLM_QK_NORM = {
    "q_norm": VLLM_LAYER + "self_attn.q_norm.weight",
    "k_norm": VLLM_LAYER + "self_attn.k_norm.weight",
}
# The ChatLearn-era expert spelling (older vLLM, SGLang); current vLLM nests the two
# under ``mlp.experts.routed_experts.`` (diagnose reads both).
VLLM_ROUTED = {
    "router": VLLM_LAYER + "mlp.gate.weight",
    "experts_w13": VLLM_LAYER + "mlp.experts.w13_weight",
    "experts_w2": VLLM_LAYER + "mlp.experts.w2_weight",
}

# Legacy Megatron (ChatLearn's QWen / QWen2 / Llama trainers), after language_model.
LEGACY_LAYER = "encoder.layers.{i}."
LEGACY_QWEN = {
    "embed": "embedding.word_embeddings.weight",
    "final_norm": "encoder.final_layernorm.weight",
    "lm_head": "output_layer.weight",
    "input_norm": LEGACY_LAYER + "input_layernorm.weight",
    "qkv": LEGACY_LAYER + "self_attention.query_key_value.weight",
    "qkv_bias": LEGACY_LAYER + "self_attention.query_key_value.bias",
    "o_proj": LEGACY_LAYER + "self_attention.dense.weight",
    "post_attention_norm": LEGACY_LAYER + "post_attention_layernorm.weight",
    "gate_up": LEGACY_LAYER + "mlp.dense_h_to_4h.weight",
    "down": LEGACY_LAYER + "mlp.dense_4h_to_h.weight",
    "router": LEGACY_LAYER + "mlp.router.layer.weight",
    "experts_w13": LEGACY_LAYER + "mlp.experts.dense_h_to_4h.weight",
    "experts_w2": LEGACY_LAYER + "mlp.experts.dense_4h_to_h.weight",
    "shared_gate_up": LEGACY_LAYER + "mlp.shared_experts.dense_h_to_4h.weight",
    "shared_down": LEGACY_LAYER + "mlp.shared_experts.dense_4h_to_h.weight",
    "shared_expert_gate": LEGACY_LAYER + "mlp.gate.weight",
}

# Megatron-Core, after the module.module. wrappers.
MCORE_LAYER = "decoder.layers.{i}."
MCORE_DENSE = {
    "embed": "embedding.word_embeddings.weight",
    "final_norm": "decoder.final_layernorm.weight",
    "lm_head": "output_layer.weight",
    "input_norm": MCORE_LAYER + "self_attention.linear_qkv.layer_norm_weight",
    "qkv": MCORE_LAYER + "self_attention.linear_qkv.weight",
    "qkv_bias": MCORE_LAYER + "self_attention.linear_qkv.bias",
    "o_proj": MCORE_LAYER + "self_attention.linear_proj.weight",
    "post_attention_norm": MCORE_LAYER + "mlp.linear_fc1.layer_norm_weight",
    "gate_up": MCORE_LAYER + "mlp.linear_fc1.weight",
    "down": MCORE_LAYER + "mlp.linear_fc2.weight",
}
MCORE_MOE = {
    **{k: v for k, v in MCORE_DENSE.items() if k not in ("gate_up", "down")},
    # An MoE layer has no fused fc1 to carry the norm, so it is its own module.
    "post_attention_norm": MCORE_LAYER + "pre_mlp_layernorm.weight",
    "router": MCORE_LAYER + "mlp.router.weight",
    # SequentialMLP: one module per local expert.
    "experts_w13": MCORE_LAYER + "mlp.experts.local_experts.{j}.linear_fc1.weight",
    "experts_w2": MCORE_LAYER + "mlp.experts.local_experts.{j}.linear_fc2.weight",
}
# TEGroupedMLP: one weight per local expert, numbered after the word.
MCORE_GROUPED_MOE = {
    **MCORE_MOE,
    "experts_w13": MCORE_LAYER + "mlp.experts.linear_fc1.weight{j}",
    "experts_w2": MCORE_LAYER + "mlp.experts.linear_fc2.weight{j}",
}
# q_layernorm / k_layernorm: one [head_dim] norm each, whole on every rank.
MCORE_QK_NORM = {
    "q_norm": MCORE_LAYER + "self_attention.q_layernorm.weight",
    "k_norm": MCORE_LAYER + "self_attention.k_layernorm.weight",
}

# Hugging Face checkpoints: the tensors joined (dim 0, in order) into each global tensor.
HF_LAYER = "model.layers.{i}."
HF_DENSE = {
    "embed": ("model.embed_tokens.weight",),
    "final_norm": ("model.norm.weight",),
    "lm_head": ("lm_head.weight",),
    "input_norm": (HF_LAYER + "input_layernorm.weight",),
    "post_attention_norm": (HF_LAYER + "post_attention_layernorm.weight",),
    "qkv": tuple(HF_LAYER + f"self_attn.{p}_proj.weight" for p in "qkv"),
    "qkv_bias": tuple(HF_LAYER + f"self_attn.{p}_proj.bias" for p in "qkv"),
    "o_proj": (HF_LAYER + "self_attn.o_proj.weight",),
    "gate_up": (HF_LAYER + "mlp.gate_proj.weight", HF_LAYER + "mlp.up_proj.weight"),
    "down": (HF_LAYER + "mlp.down_proj.weight",),
}
HF_QK_NORM = {
    "q_norm": (HF_LAYER + "self_attn.q_norm.weight",),
    "k_norm": (HF_LAYER + "self_attn.k_norm.weight",),
}
HF_ROUTED = {
    "router": (HF_LAYER + "mlp.gate.weight",),
    "experts_w13": (
        HF_LAYER + "mlp.experts.{e}.gate_proj.weight",
        HF_LAYER + "mlp.experts.{e}.up_proj.weight",
    ),
    "experts_w2": (HF_LAYER + "mlp.experts.{e}.down_proj.weight",),
}

# DeepSeek-style MoE: dense MLPs in the first layers (below first_k_dense_replace), a
# router bias, and shared experts beside the routed ones; per side.
MCORE_SHARED = {
    "gate_up": MCORE_DENSE["gate_up"],
    "down": MCORE_DENSE["down"],
    # A buffer, not a parameter: a sync that walks named_parameters() never sends it.
    "router_bias": MCORE_LAYER + "mlp.router.expert_bias",
    "shared_gate_up": MCORE_LAYER + "mlp.shared_experts.linear_fc1.weight",
    "shared_down": MCORE_LAYER + "mlp.shared_experts.linear_fc2.weight",
}
# Megatron-Core fuses the pre-MLP norm into a dense layer's fc1 (TELayerNormColumnParallel).
MCORE_DENSE_LAYER = {"post_attention_norm": MCORE_DENSE["post_attention_norm"]}
VLLM_SHARED = {
    "router_bias": VLLM_LAYER + "mlp.gate.e_score_correction_bias",
    "shared_gate_up": VLLM_LAYER + "mlp.shared_experts.gate_up_proj.weight",
    "shared_down": VLLM_LAYER + "mlp.shared_experts.down_proj.weight",
}
HF_SHARED = {
    "router_bias": (HF_LAYER + "mlp.gate.e_score_correction_bias",),
    "shared_gate_up": (
        HF_LAYER + "mlp.shared_experts.gate_proj.weight",
        HF_LAYER + "mlp.shared_experts.up_proj.weight",
    ),
    "shared_down": (HF_LAYER + "mlp.shared_experts.down_proj.weight",),
}


# The multi-token-prediction layer of DeepSeek-V3 and GLM-4.5 (num_nextn_predict_layers),
# the same on each side for both. Checkpoint: model.layers.{N + k}. holds a whole decoder
# layer plus enorm, hnorm, eh_proj [H, 2H] (input [embedding; hidden]), shared_head.norm,
# shared_head.head (and a copy of embed_tokens, the model's own, left out here).
# vLLM's draft models (deepseek_mtp.py, glm4_moe_mtp.py): the layer's modules under
# model.layers.{N + k}.mtp_block., eh_proj a plain nn.Linear (whole on every rank),
# shared_head.head a ParallelLMHead (vocab rows), the norms RMSNorm (whole).
# Megatron-Core (transformer/multi_token_prediction.py): mtp.layers.{k}. with enorm, hnorm,
# eh_proj (column-parallel, gather_output=False: rows of the output split over tp),
# transformer_layer (named mtp_model_layer in newer releases) and final_layernorm; the
# output layer (and embedding) are the main model's.
MTP = MtpLayout(
    block_src=(MCORE_LAYER, "mtp.layers.{i}.transformer_layer."),
    block_dst=(VLLM_LAYER, VLLM_LAYER + "mtp_block."),
    src_names={
        "mtp_enorm": "mtp.layers.{i}.enorm.weight",
        "mtp_hnorm": "mtp.layers.{i}.hnorm.weight",
        "mtp_eh_proj": "mtp.layers.{i}.eh_proj.weight",
        "mtp_norm": "mtp.layers.{i}.final_layernorm.weight",
        "mtp_head": MCORE_DENSE["lm_head"],
    },
    dst_names={
        "mtp_enorm": VLLM_LAYER + "enorm.weight",
        "mtp_hnorm": VLLM_LAYER + "hnorm.weight",
        "mtp_eh_proj": VLLM_LAYER + "eh_proj.weight",
        "mtp_norm": VLLM_LAYER + "shared_head.norm.weight",
        "mtp_head": VLLM_LAYER + "shared_head.head.weight",
    },
    hf_names={
        "mtp_enorm": (HF_LAYER + "enorm.weight",),
        "mtp_hnorm": (HF_LAYER + "hnorm.weight",),
        "mtp_eh_proj": (HF_LAYER + "eh_proj.weight",),
        "mtp_norm": (HF_LAYER + "shared_head.norm.weight",),
        "mtp_head": (HF_LAYER + "shared_head.head.weight",),
    },
    notes=(
        "vLLM deepseek_mtp.py / glm4_moe_mtp.py (DeepSeekMTP, Glm4MoeMTP: mtp_block, eh_proj "
        "nn.Linear, SharedHead with a ParallelLMHead); SGLang deepseek_nextn.py (model.decoder, "
        "model.eh_proj, the target's lm_head and embedding); Megatron-Core "
        "MultiTokenPredictionLayer (eh_proj ColumnParallelLinear, gather_output=False)."
    ),
)


def without(table: dict, *kinds: str) -> dict:
    """``table`` less ``kinds`` (an MoE layer has no dense MLP).

    >>> sorted(without({"a": 1, "b": 2, "c": 3}, "b"))
    ['a', 'c']
    """
    return {k: v for k, v in table.items() if k not in kinds}
