"""Name tables several family files share: vLLM's, the trainers', Hugging Face's.

Keys are parameter kinds (``syncviz.oracle.blocks.KINDS``); ``{i}`` is the layer index
(stage-local for the trainer, as Megatron numbers layers inside a pipeline stage;
global for vLLM), ``{j}`` a local expert, ``{e}`` an expert. Trainer names leave out
the trainer's prefix (``syncviz.families.record.TRAINER_PREFIX``). Each name is written
once: vLLM's follow from the checkpoint's (:func:`vllm_names`: vLLM keeps its module
names but for the tensors it stacks), the two trainers' dense layers stand side by side,
and an MLP's tensors are named by its module (:func:`hf_mlp`; Megatron's fc1 and fc2).

>>> VLLM_DENSE["qkv"]
'model.model.layers.{i}.self_attn.qkv_proj.weight'
>>> MCORE_DENSE["post_attention_norm"]
'decoder.layers.{i}.mlp.linear_fc1.layer_norm_weight'
"""

from __future__ import annotations

from collections.abc import Mapping

from syncviz.errors import SyncvizError
from syncviz.families.record import MtpLayout

# Hugging Face checkpoints: the tensors joined (dim 0, in order) into each global tensor.
HF_LAYER = "model.layers.{i}."


def hf_mlp(module: str, gate_up: str, down: str) -> dict[str, tuple[str, ...]]:
    """The kinds ``gate_up`` and ``down`` of a gated MLP at ``module`` in a checkpoint:
    ``gate_proj`` and ``up_proj`` joined, ``down_proj``.

    >>> hf_mlp("mlp.", "gate_up", "down")["gate_up"]
    ('mlp.gate_proj.weight', 'mlp.up_proj.weight')
    """
    return {
        gate_up: (module + "gate_proj.weight", module + "up_proj.weight"),
        down: (module + "down_proj.weight",),
    }


HF_DENSE = {
    "embed": ("model.embed_tokens.weight",),
    "final_norm": ("model.norm.weight",),
    "lm_head": ("lm_head.weight",),
    "input_norm": (HF_LAYER + "input_layernorm.weight",),
    "qkv": tuple(HF_LAYER + f"self_attn.{p}_proj.weight" for p in "qkv"),
    "qkv_bias": tuple(HF_LAYER + f"self_attn.{p}_proj.bias" for p in "qkv"),
    "o_proj": (HF_LAYER + "self_attn.o_proj.weight",),
    "post_attention_norm": (HF_LAYER + "post_attention_layernorm.weight",),
    **hf_mlp(HF_LAYER + "mlp.", "gate_up", "down"),
}
HF_QK_NORM = {
    "q_norm": (HF_LAYER + "self_attn.q_norm.weight",),
    "k_norm": (HF_LAYER + "self_attn.k_norm.weight",),
}
HF_ROUTED = {
    "router": (HF_LAYER + "mlp.gate.weight",),
    **hf_mlp(HF_LAYER + "mlp.experts.{e}.", "experts_w13", "experts_w2"),
}


def vllm_names(hf: Mapping[str, tuple[str, ...]], **own: str) -> dict[str, str]:
    """vLLM's name of each kind of ``hf``: vLLM keeps a checkpoint's module names, under
    its model runner's ``model.``, but for the kinds in ``own``, named by vLLM itself
    (the tensors it stacks into one: q/k/v, gate/up, a layer's experts; a renamed module).

    >>> vllm_names({"embed": ("model.embed_tokens.weight",), "gate_up": ("g", "u")},
    ...            gate_up="model.model.layers.{i}.mlp.gate_up_proj.weight")["embed"]
    'model.model.embed_tokens.weight'
    """
    unknown = sorted(set(own) - set(hf))
    if unknown:
        raise SyncvizError(
            f"vllm_names: own names {unknown} for kinds the checkpoint table lacks",
            fix=f"name only kinds of the table ({', '.join(hf)})",
        )
    out = {}
    for kind, tensors in hf.items():
        if kind not in own and len(tensors) != 1:
            raise SyncvizError(
                f"vllm_names: kind {kind!r} joins {len(tensors)} checkpoint tensors",
                fix=f"give vLLM's stacked parameter as {kind}=...",
            )
        out[kind] = own[kind] if kind in own else "model." + tensors[0]
    return out


VLLM_LAYER = "model.model.layers.{i}."
VLLM_DENSE = vllm_names(
    HF_DENSE,
    qkv=VLLM_LAYER + "self_attn.qkv_proj.weight",
    qkv_bias=VLLM_LAYER + "self_attn.qkv_proj.bias",
    gate_up=VLLM_LAYER + "mlp.gate_up_proj.weight",
)
VLLM_QK_NORM = vllm_names(HF_QK_NORM)
# The ChatLearn-era expert spelling (older vLLM, SGLang); current vLLM nests the two
# under ``mlp.experts.routed_experts.`` (diagnose reads both).
VLLM_ROUTED = vllm_names(
    HF_ROUTED,
    experts_w13=VLLM_LAYER + "mlp.experts.w13_weight",
    experts_w2=VLLM_LAYER + "mlp.experts.w2_weight",
)

# The decoder layer on the two trainers, after each one's layer prefix: (kind, legacy
# Megatron, Megatron-Core). Megatron-Core fuses the norms into the linear layers after them.
LEGACY_LAYER = "encoder.layers.{i}."
MCORE_LAYER = "decoder.layers.{i}."
_TRAINER_LAYER = (
    ("input_norm", "input_layernorm.weight", "self_attention.linear_qkv.layer_norm_weight"),
    ("qkv", "self_attention.query_key_value.weight", "self_attention.linear_qkv.weight"),
    ("qkv_bias", "self_attention.query_key_value.bias", "self_attention.linear_qkv.bias"),
    ("o_proj", "self_attention.dense.weight", "self_attention.linear_proj.weight"),
    ("post_attention_norm", "post_attention_layernorm.weight", "mlp.linear_fc1.layer_norm_weight"),
)
# A Megatron MLP's two linear layers, fc1 ([gate; up]) and fc2 (down), per trainer.
_FC = {
    "legacy": ("dense_h_to_4h.weight", "dense_4h_to_h.weight"),
    "mcore": ("linear_fc1.weight", "linear_fc2.weight"),
}


def _megatron_mlp(trainer: str, module: str, gate_up: str, down: str) -> dict[str, str]:
    """The kinds ``gate_up`` and ``down`` of an MLP at ``module`` on ``trainer``."""
    fc1, fc2 = _FC[trainer]
    return {gate_up: module + fc1, down: module + fc2}


def _trainer_dense(trainer: str, layer: str) -> dict[str, str]:
    """A dense model's names on ``trainer`` whose layers are named ``layer`` (the final
    norm closes the same stack)."""
    side = 1 if trainer == "legacy" else 2
    return {
        "embed": "embedding.word_embeddings.weight",
        "final_norm": layer.removesuffix("layers.{i}.") + "final_layernorm.weight",
        "lm_head": "output_layer.weight",
        **{row[0]: layer + row[side] for row in _TRAINER_LAYER},
        **_megatron_mlp(trainer, layer + "mlp.", "gate_up", "down"),
    }


# Legacy Megatron (ChatLearn's QWen / QWen2 / Llama trainers), after language_model.
LEGACY_DENSE = _trainer_dense("legacy", LEGACY_LAYER)
LEGACY_QWEN = {
    **LEGACY_DENSE,
    "router": LEGACY_LAYER + "mlp.router.layer.weight",
    **_megatron_mlp("legacy", LEGACY_LAYER + "mlp.experts.", "experts_w13", "experts_w2"),
    **_megatron_mlp(
        "legacy", LEGACY_LAYER + "mlp.shared_experts.", "shared_gate_up", "shared_down"
    ),
    "shared_expert_gate": LEGACY_LAYER + "mlp.gate.weight",
}

# Megatron-Core, after the module.module. wrappers.
MCORE_DENSE = _trainer_dense("mcore", MCORE_LAYER)
MCORE_MOE = {
    **{k: v for k, v in MCORE_DENSE.items() if k not in ("gate_up", "down")},
    # An MoE layer has no fused fc1 to carry the norm, so it is its own module.
    "post_attention_norm": MCORE_LAYER + "pre_mlp_layernorm.weight",
    "router": MCORE_LAYER + "mlp.router.weight",
    # SequentialMLP: one module per local expert.
    **_megatron_mlp(
        "mcore", MCORE_LAYER + "mlp.experts.local_experts.{j}.", "experts_w13", "experts_w2"
    ),
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

# DeepSeek-style MoE: dense MLPs in the first layers (below first_k_dense_replace), a
# router bias, and shared experts beside the routed ones; per side.
MCORE_SHARED = {
    "gate_up": MCORE_DENSE["gate_up"],
    "down": MCORE_DENSE["down"],
    # A buffer, not a parameter: a sync that walks named_parameters() never sends it.
    "router_bias": MCORE_LAYER + "mlp.router.expert_bias",
    **_megatron_mlp("mcore", MCORE_LAYER + "mlp.shared_experts.", "shared_gate_up", "shared_down"),
}
# Megatron-Core fuses the pre-MLP norm into a dense layer's fc1 (TELayerNormColumnParallel).
MCORE_DENSE_LAYER = {"post_attention_norm": MCORE_DENSE["post_attention_norm"]}
HF_SHARED = {
    "router_bias": (HF_LAYER + "mlp.gate.e_score_correction_bias",),
    **hf_mlp(HF_LAYER + "mlp.shared_experts.", "shared_gate_up", "shared_down"),
}
VLLM_SHARED = vllm_names(
    HF_SHARED, shared_gate_up=VLLM_LAYER + "mlp.shared_experts.gate_up_proj.weight"
)


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
_MTP_HF = {
    kind: (HF_LAYER + f"{module}.weight",)
    for kind, module in (
        ("mtp_enorm", "enorm"),
        ("mtp_hnorm", "hnorm"),
        ("mtp_eh_proj", "eh_proj"),
        ("mtp_norm", "shared_head.norm"),
        ("mtp_head", "shared_head.head"),
    )
}
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
    dst_names=vllm_names(_MTP_HF),
    hf_names=_MTP_HF,
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
