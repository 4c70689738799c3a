"""Source (trainer) and destination (vLLM) conventions of each model family, as data.

The oracle logic never names a family: everything that differs between
families (parameter names, the fused QKV row order, the order of the gate/up
halves, how routed experts are stored) is read from a :class:`Conventions`
record here. Facts behind each choice are in the record's ``notes``.

Name templates: ``{i}`` is the layer index (stage-local for the trainer, as
Megatron numbers layers inside a pipeline stage; global for vLLM), ``{j}`` a
local expert index (Megatron-Core SequentialMLP or TEGroupedMLP).

>>> conv = conventions("qwen2")
>>> conv.fc1_halves
(('up', 'gate'),)
>>> conv.dst_names["qkv"]
'model.model.layers.{i}.self_attn.qkv_proj.weight'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from syncviz.errors import SyncvizError
from syncviz.families import FAMILY, ExpertLayout
from syncviz.spec import FAMILIES

QkvLayout = Literal["grouped", "separate"]


@dataclass(frozen=True)
class Conventions:
    """How one family's trainer holds its parameters and how vLLM names them.

    - ``src_names[kind]``: trainer name templates, one per tensor the trainer
      keeps for that kind on a rank (QWen v1 keeps two for gate/up).
    - ``dst_names[kind]``: the vLLM parameter name template.
    - ``qkv_layout``: ``"grouped"`` is Megatron's per-group row order
      ``[q heads of group g, k_g, v_g]`` for g in groups (for plain multi-head
      attention this is the per-head ``[q_h, k_h, v_h]`` interleave);
      ``"separate"`` is ``[Q; K; V]`` of the rank's own heads.
    - ``fc1_halves``: for each trainer tensor of a fused gate/up (dense and
      shared expert), which TP-sharded halves it holds, in order.
    - ``expert_layout``: ``"hep"`` whole experts spread over ep*tp ranks
      (fc1 ``[E_local*2I, H]``, fc2 ``[E_local*I, H]`` = w2 transposed),
      ``"sequential"`` Megatron-Core per-expert tensors, experts split by ep and
      each expert TP-sharded like a dense MLP; ``expert_fc1_halves`` is the
      order of the two halves inside one expert's fc1.
    - ``src_vocab_divisible_by``: Megatron pads the vocab to a multiple of this
      times the source TP size (``--make-vocab-size-divisible-by``). ``None``
      (the default) means the trainer pads like vLLM, to a multiple of 64 (i.e.
      ``64 / s``): the only setting under which embedding rows line up across
      s and d, so a sync of the embedding can work at all. Set it to 128
      (Megatron's own default) to see what an unaligned trainer does.
    """

    family: str
    src_names: Mapping[str, tuple[str, ...]]
    dst_names: Mapping[str, str]
    qkv_layout: QkvLayout = "grouped"
    fc1_halves: tuple[tuple[str, ...], ...] = (("gate", "up"),)
    expert_layout: ExpertLayout = "none"
    expert_fc1_halves: tuple[str, ...] = ("gate", "up")
    src_vocab_divisible_by: int | None = None
    notes: str = field(default="", compare=False)

    def src_name(self, kind: str, tensor: int = 0, **fields: int) -> str:
        """The trainer name of tensor ``tensor`` of ``kind``."""
        try:
            return self.src_names[kind][tensor].format(**fields)
        except KeyError:
            raise SyncvizError(
                f"family {self.family!r} has no trainer name for {kind!r}",
                fix="add it to syncviz/oracle/families.py",
            ) from None

    def dst_name(self, kind: str, **fields: int) -> str:
        """The vLLM name of ``kind``."""
        try:
            return self.dst_names[kind].format(**fields)
        except KeyError:
            raise SyncvizError(
                f"family {self.family!r} has no vLLM name for {kind!r}",
                fix="add it to syncviz/oracle/families.py",
            ) from None


def _names(
    prefix: str, table: Mapping[str, str | tuple[str, ...]]
) -> Mapping[str, tuple[str, ...]]:
    out = {}
    for kind, value in table.items():
        values = (value,) if isinstance(value, str) else value
        out[kind] = tuple(prefix + v for v in values)
    return MappingProxyType(out)


_VLLM_LAYER = "model.model.layers.{i}."
_VLLM_DENSE = {
    "embed": "model.model.embed_tokens.weight",
    "final_norm": "model.model.norm.weight",
    "lm_head": "model.lm_head.weight",
    "input_norm": _VLLM_LAYER + "input_layernorm.weight",
    "qkv": _VLLM_LAYER + "self_attn.qkv_proj.weight",
    "qkv_bias": _VLLM_LAYER + "self_attn.qkv_proj.bias",
    "o_proj": _VLLM_LAYER + "self_attn.o_proj.weight",
    "post_attention_norm": _VLLM_LAYER + "post_attention_layernorm.weight",
    "gate_up": _VLLM_LAYER + "mlp.gate_up_proj.weight",
    "down": _VLLM_LAYER + "mlp.down_proj.weight",
}
_VLLM_QWEN2_MOE = {
    **_VLLM_DENSE,
    "router": _VLLM_LAYER + "mlp.gate.weight",
    "experts_w13": _VLLM_LAYER + "mlp.experts.w13_weight",
    "experts_w2": _VLLM_LAYER + "mlp.experts.w2_weight",
    "shared_gate_up": _VLLM_LAYER + "mlp.shared_expert.gate_up_proj.weight",
    "shared_down": _VLLM_LAYER + "mlp.shared_expert.down_proj.weight",
    "shared_expert_gate": _VLLM_LAYER + "mlp.shared_expert_gate.weight",
}
_VLLM_MIXTRAL = {
    **_VLLM_DENSE,
    "router": _VLLM_LAYER + "block_sparse_moe.gate.weight",
    "experts_w13": _VLLM_LAYER + "block_sparse_moe.experts.w13_weight",
    "experts_w2": _VLLM_LAYER + "block_sparse_moe.experts.w2_weight",
}
_VLLM_QWEN3 = {
    **_VLLM_DENSE,
    "q_norm": _VLLM_LAYER + "self_attn.q_norm.weight",
    "k_norm": _VLLM_LAYER + "self_attn.k_norm.weight",
}
_VLLM_QWEN3_MOE = {
    **{k: v for k, v in _VLLM_QWEN3.items() if k not in ("gate_up", "down")},
    "router": _VLLM_LAYER + "mlp.gate.weight",
    # The ChatLearn-era spelling (older vLLM, SGLang); current vLLM nests the two under
    # ``mlp.experts.routed_experts.`` (diagnose reads both).
    "experts_w13": _VLLM_LAYER + "mlp.experts.w13_weight",
    "experts_w2": _VLLM_LAYER + "mlp.experts.w2_weight",
}
_VLLM_QWEN_V1 = {
    "embed": "model.transformer.wte.weight",
    "final_norm": "model.transformer.ln_f.weight",
    "lm_head": "model.lm_head.weight",
    "input_norm": "model.transformer.h.{i}.ln_1.weight",
    "qkv": "model.transformer.h.{i}.attn.c_attn.weight",
    "qkv_bias": "model.transformer.h.{i}.attn.c_attn.bias",
    "o_proj": "model.transformer.h.{i}.attn.c_proj.weight",
    "post_attention_norm": "model.transformer.h.{i}.ln_2.weight",
    "gate_up": "model.transformer.h.{i}.mlp.gate_up_proj.weight",
    "down": "model.transformer.h.{i}.mlp.c_proj.weight",
}

# Legacy Megatron (ChatLearn's QWen / QWen2 / Llama trainers): module.module.language_model...
_LEGACY = "module.module.language_model."
_LEGACY_LAYER = "encoder.layers.{i}."
_LEGACY_QWEN = {
    "embed": "embedding.word_embeddings.weight",
    "final_norm": "encoder.final_layernorm.weight",
    "lm_head": "output_layer.weight",
    "input_norm": _LEGACY_LAYER + "input_layernorm.weight",
    "qkv": _LEGACY_LAYER + "self_attention.query_key_value.weight",
    "qkv_bias": _LEGACY_LAYER + "self_attention.query_key_value.bias",
    "o_proj": _LEGACY_LAYER + "self_attention.dense.weight",
    "post_attention_norm": _LEGACY_LAYER + "post_attention_layernorm.weight",
    "gate_up": _LEGACY_LAYER + "mlp.dense_h_to_4h.weight",
    "down": _LEGACY_LAYER + "mlp.dense_4h_to_h.weight",
    "router": _LEGACY_LAYER + "mlp.router.layer.weight",
    "experts_w13": _LEGACY_LAYER + "mlp.experts.dense_h_to_4h.weight",
    "experts_w2": _LEGACY_LAYER + "mlp.experts.dense_4h_to_h.weight",
    "shared_gate_up": _LEGACY_LAYER + "mlp.shared_experts.dense_h_to_4h.weight",
    "shared_down": _LEGACY_LAYER + "mlp.shared_experts.dense_4h_to_h.weight",
    "shared_expert_gate": _LEGACY_LAYER + "mlp.gate.weight",
}
_LEGACY_LLAMA = {
    "embed": "embedding.word_embeddings.weight",
    "final_norm": "encoder.final_norm.weight",
    "lm_head": "output_layer.weight",
    "input_norm": _LEGACY_LAYER + "input_norm.weight",
    "qkv": _LEGACY_LAYER + "self_attention.query_key_value.weight",
    "qkv_bias": _LEGACY_LAYER + "self_attention.query_key_value.bias",
    "o_proj": _LEGACY_LAYER + "self_attention.dense.weight",
    "post_attention_norm": _LEGACY_LAYER + "post_attention_norm.weight",
    "gate_up": _LEGACY_LAYER + "mlp.dense_h_to_4h.weight",
    "down": _LEGACY_LAYER + "mlp.dense_4h_to_h.weight",
}
_MCORE = "module.module."
_MCORE_LAYER = "decoder.layers.{i}."
_MCORE_DENSE = {
    "embed": "embedding.word_embeddings.weight",
    "final_norm": "decoder.final_layernorm.weight",
    "lm_head": "output_layer.weight",
    "input_norm": _MCORE_LAYER + "self_attention.linear_qkv.layer_norm_weight",
    "qkv": _MCORE_LAYER + "self_attention.linear_qkv.weight",
    "qkv_bias": _MCORE_LAYER + "self_attention.linear_qkv.bias",
    "o_proj": _MCORE_LAYER + "self_attention.linear_proj.weight",
    "post_attention_norm": _MCORE_LAYER + "mlp.linear_fc1.layer_norm_weight",
    "gate_up": _MCORE_LAYER + "mlp.linear_fc1.weight",
    "down": _MCORE_LAYER + "mlp.linear_fc2.weight",
}
_MCORE_MOE = {
    **{k: v for k, v in _MCORE_DENSE.items() if k not in ("gate_up", "down")},
    # An MoE layer has no fused fc1 to carry the norm, so it is its own module.
    "post_attention_norm": _MCORE_LAYER + "pre_mlp_layernorm.weight",
    "router": _MCORE_LAYER + "mlp.router.weight",
    "experts_w13": _MCORE_LAYER + "mlp.experts.local_experts.{j}.linear_fc1.weight",
    "experts_w2": _MCORE_LAYER + "mlp.experts.local_experts.{j}.linear_fc2.weight",
}
# Qwen3's per-head norms: Megatron-Core's q_layernorm / k_layernorm, whole on every rank.
_MCORE_QK_NORM = {
    "q_norm": _MCORE_LAYER + "self_attention.q_layernorm.weight",
    "k_norm": _MCORE_LAYER + "self_attention.k_layernorm.weight",
}
# Megatron-Core TEGroupedMLP: one weight per local expert, numbered after the word.
_MCORE_GROUPED_MOE = {
    **_MCORE_MOE,
    "experts_w13": _MCORE_LAYER + "mlp.experts.linear_fc1.weight{j}",
    "experts_w2": _MCORE_LAYER + "mlp.experts.linear_fc2.weight{j}",
}

_QWEN_V1_SRC = {
    **{k: v for k, v in _LEGACY_QWEN.items() if k in _VLLM_QWEN_V1},
    # QWen v1 keeps two tensors: mlp.w1 the up half, mlp.w2 the SiLU-gated half
    # (listed in the trainer's own order, w1 first, as its named_parameters give them).
    "gate_up": (_LEGACY_LAYER + "mlp.w1.weight", _LEGACY_LAYER + "mlp.w2.weight"),
}

FAMILY_CONVENTIONS: Mapping[str, Conventions] = MappingProxyType(
    {
        "llama-legacy": Conventions(
            family="llama-legacy",
            src_names=_names(_LEGACY, _LEGACY_LLAMA),
            dst_names=MappingProxyType(_VLLM_DENSE),
            notes=(
                "Names: golden records of Megatron2LlamaSyncMap. QKV: legacy Megatron keeps "
                "[q_h, k_h, v_h] per head for MHA (checkpoint version >= 2) and the per-group "
                "order with GQA; ChatLearn's fix_qwen_query_key_value_ordering(version 3.0) "
                "turns the MHA interleave into [Q; K; V]. fc1: Megatron swiglu chunks the "
                "local output, so rank r holds [gate_r; up_r]."
            ),
        ),
        "llama-mcore": Conventions(
            family="llama-mcore",
            src_names=_names(_MCORE, _MCORE_DENSE),
            dst_names=MappingProxyType(_VLLM_DENSE),
            notes=(
                "Names: golden records of MCore2LlamaSyncMap. QKV: Megatron-Core linear_qkv "
                "rows are grouped [q.., k_g, v_g] per query group. fc1: [gate_r; up_r]."
            ),
        ),
        "qwen-v1": Conventions(
            family="qwen-v1",
            src_names=_names(_LEGACY, _QWEN_V1_SRC),
            dst_names=MappingProxyType(_VLLM_QWEN_V1),
            fc1_halves=(("up",), ("gate",)),
            notes=(
                "Names: golden records of Megatron2QWenSyncMap (qwen_version 1.0), which "
                "concatenates [mlp.w2; mlp.w1] into gate_up_proj: w2 is the gate (HF QWen: "
                "a1 * silu(a2), a2 = w2(x)), w1 the up half. QKV: MHA, per-head [q, k, v] "
                "as in legacy Megatron."
            ),
        ),
        "qwen2": Conventions(
            family="qwen2",
            src_names=_names(_LEGACY, {k: v for k, v in _LEGACY_QWEN.items() if k in _VLLM_DENSE}),
            dst_names=MappingProxyType(_VLLM_DENSE),
            fc1_halves=(("up", "gate"),),
            notes=(
                "Names: golden records of Megatron2QWenSyncMap (qwen_version 2.0). QKV: "
                "per-group rows (ChatLearn's split_attn_state reads them as [ng, q..+k+v, H]). "
                "fc1: the trainer holds [up_r; gate_r] (ChatLearn's fix_act_ordering swaps the "
                "two halves of mlp.dense_h_to_4h before regrouping)."
            ),
        ),
        "qwen2-moe": Conventions(
            family="qwen2-moe",
            src_names=_names(_LEGACY, _LEGACY_QWEN),
            dst_names=MappingProxyType(_VLLM_QWEN2_MOE),
            fc1_halves=(("up", "gate"),),
            expert_layout=FAMILY["qwen2-moe"].experts,
            expert_fc1_halves=("up", "gate"),
            notes=(
                "As qwen2, plus ChatLearn HEP routed experts: the ep*tp ranks of the "
                "tensor-and-expert group (rank = ep_rank*tp + tp_rank, tp fastest, as in "
                "ChatLearn's HEP test test_hep_eptppp_vllm_tp_dst_ep1_tp4_pp1_src_ep2_tp2_pp2) "
                "each hold E/(ep*tp) whole experts; an expert's fc1 is [up; gate] (golden "
                "record routed-allgather-0001: vLLM gets the trainer's second half first), fc2 "
                "is w2 transposed. Shared-expert fc1 is [up_r; gate_r] "
                "(fix_shared_expert_ordering swaps its halves)."
            ),
        ),
        "mixtral": Conventions(
            family="mixtral",
            src_names=_names(_MCORE, _MCORE_MOE),
            dst_names=MappingProxyType(_VLLM_MIXTRAL),
            expert_layout=FAMILY["mixtral"].experts,
            notes=(
                "Chosen: Megatron-Core MoE with SequentialMLP (mlp.experts.local_experts.{j}), "
                "experts split over ep (rank q holds q*E/ep ..), each expert's fc1 TP-sharded "
                "like a dense fc1 [gate_r; up_r] and fc2 column-sharded; router and "
                "pre_mlp_layernorm whole. vLLM names: MixtralForCausalLM's block_sparse_moe."
            ),
        ),
        "mistral": Conventions(
            family="mistral",
            src_names=_names(_MCORE, _MCORE_DENSE),
            dst_names=MappingProxyType(_VLLM_DENSE),
            notes=(
                "Llama's layout and names (vLLM's MistralForCausalLM is its Llama class); "
                "Megatron-Core trainer as llama-mcore."
            ),
        ),
        "qwen3": Conventions(
            family="qwen3",
            src_names=_names(_MCORE, {**_MCORE_DENSE, **_MCORE_QK_NORM}),
            dst_names=MappingProxyType(_VLLM_QWEN3),
            notes=(
                "Megatron-Core as llama-mcore, plus self_attention.q_layernorm / k_layernorm "
                "([head_dim], whole on every rank; vLLM self_attn.q_norm / k_norm, replicated "
                "and applied per head). head_dim is explicit (kv_channels) and may differ "
                "from hidden/heads."
            ),
        ),
        "qwen3-moe": Conventions(
            family="qwen3-moe",
            src_names=_names(_MCORE, {**_MCORE_GROUPED_MOE, **_MCORE_QK_NORM}),
            dst_names=MappingProxyType(_VLLM_QWEN3_MOE),
            expert_layout=FAMILY["qwen3-moe"].experts,
            notes=(
                "Qwen3 attention; Megatron-Core grouped experts (TEGroupedMLP, "
                "mlp.experts.linear_fc1.weight{j}): rank ep holds experts ep*E/EP + j, each "
                "TP-sharded like a dense fc1 [gate_r; up_r] and fc2 column-sharded (the same "
                "placement as SequentialMLP); router mlp.router.weight [E, H] and "
                "pre_mlp_layernorm whole. No shared expert."
            ),
        ),
    }
)


def conventions(family: str) -> Conventions:
    """The conventions of ``family``."""
    try:
        return FAMILY_CONVENTIONS[family]
    except KeyError:
        raise SyncvizError(
            f"family {family!r} has no layout conventions", fix="use one of " + ", ".join(FAMILIES)
        ) from None
