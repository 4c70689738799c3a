"""Hugging Face checkpoint names of each family, per parameter kind: the one statement.

For each kind, the checkpoint tensors that make the oracle's global tensor and how they
join: concatenated on dim 0 in the listed order (fused QKV ``[Q; K; V]``, gate/up
``[gate; up]``), or, for routed experts (``{e}``), per expert then stacked. ``{i}`` is the
layer. Diagnose reads checkpoints with these names, and its fixtures write them.

>>> HF_NAMES["qwen3"]["q_norm"]
('model.layers.{i}.self_attn.q_norm.weight',)
>>> HF_NAMES["qwen3-moe"]["experts_w13"][1]
'model.layers.{i}.mlp.experts.{e}.up_proj.weight'
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

Names = Mapping[str, tuple[str, ...]]

_L = "model.layers.{i}."
_DENSE: Names = {
    "embed": ("model.embed_tokens.weight",),
    "final_norm": ("model.norm.weight",),
    "lm_head": ("lm_head.weight",),
    "input_norm": (_L + "input_layernorm.weight",),
    "post_attention_norm": (_L + "post_attention_layernorm.weight",),
    "qkv": tuple(_L + f"self_attn.{p}_proj.weight" for p in "qkv"),
    "qkv_bias": tuple(_L + f"self_attn.{p}_proj.bias" for p in "qkv"),
    "o_proj": (_L + "self_attn.o_proj.weight",),
    "gate_up": (_L + "mlp.gate_proj.weight", _L + "mlp.up_proj.weight"),
    "down": (_L + "mlp.down_proj.weight",),
}
_ROUTED = {
    "router": (_L + "mlp.gate.weight",),
    "experts_w13": (
        _L + "mlp.experts.{e}.gate_proj.weight",
        _L + "mlp.experts.{e}.up_proj.weight",
    ),
    "experts_w2": (_L + "mlp.experts.{e}.down_proj.weight",),
}
_QWEN2_MOE: Names = {
    **_DENSE,
    **_ROUTED,
    "shared_gate_up": (
        _L + "mlp.shared_expert.gate_proj.weight",
        _L + "mlp.shared_expert.up_proj.weight",
    ),
    "shared_down": (_L + "mlp.shared_expert.down_proj.weight",),
    "shared_expert_gate": (_L + "mlp.shared_expert_gate.weight",),
}
_QWEN3: Names = {
    **_DENSE,
    "q_norm": (_L + "self_attn.q_norm.weight",),
    "k_norm": (_L + "self_attn.k_norm.weight",),
}
_QWEN3_MOE: Names = {
    **{k: v for k, v in _QWEN3.items() if k not in ("gate_up", "down")},
    **_ROUTED,
}
_MIXTRAL: Names = {
    **_DENSE,
    "router": (_L + "block_sparse_moe.gate.weight",),
    # w1 is the gate (SiLU'd) projection, w3 the up projection, w2 the down projection.
    "experts_w13": (
        _L + "block_sparse_moe.experts.{e}.w1.weight",
        _L + "block_sparse_moe.experts.{e}.w3.weight",
    ),
    "experts_w2": (_L + "block_sparse_moe.experts.{e}.w2.weight",),
}
_QWEN_V1: Names = {
    "embed": ("transformer.wte.weight",),
    "final_norm": ("transformer.ln_f.weight",),
    "lm_head": ("lm_head.weight",),
    "input_norm": ("transformer.h.{i}.ln_1.weight",),
    "post_attention_norm": ("transformer.h.{i}.ln_2.weight",),
    "qkv": ("transformer.h.{i}.attn.c_attn.weight",),  # already [Q; K; V]
    "qkv_bias": ("transformer.h.{i}.attn.c_attn.bias",),
    "o_proj": ("transformer.h.{i}.attn.c_proj.weight",),
    # QWen v1: w2 is the SiLU-gated half, w1 the up half; vLLM fuses [w2; w1].
    "gate_up": ("transformer.h.{i}.mlp.w2.weight", "transformer.h.{i}.mlp.w1.weight"),
    "down": ("transformer.h.{i}.mlp.c_proj.weight",),
}

HF_NAMES: Mapping[str, Names] = MappingProxyType(
    {
        "llama-mcore": _DENSE,
        "llama-legacy": _DENSE,
        "mistral": _DENSE,
        "qwen2": _DENSE,
        "qwen2-moe": _QWEN2_MOE,
        "qwen3": _QWEN3,
        "qwen3-moe": _QWEN3_MOE,
        "mixtral": _MIXTRAL,
        "qwen-v1": _QWEN_V1,
    }
)
"""Hugging Face checkpoint names per family and parameter kind."""
