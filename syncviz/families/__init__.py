"""The model families, once: one file each, and this registry; every table derives from here.

A family file (``syncviz/families/<family>.py``) declares one
:class:`~syncviz.families.record.FamilyInfo`: the Hugging Face architecture its vLLM model
reports, the ``model_type`` that names it when a config.json has no ``architectures``
list, how its config.json is read (which layout keys it reads, and what they mean), its
parameter names (trainer, vLLM, Hugging Face), its trainer conventions, the synchronizer
classes chosen for it, its presets and a tiny spec. This registry lists the files and
answers questions across them. No other module names a family. A family of one's own (a
file, or a record built in a notebook) joins later through
``syncviz.family_file.load_family`` / ``register_family``, which check it first; every
table here and elsewhere follows (:mod:`syncviz.families.registry`).

>>> from syncviz.families import FAMILY, family_of_architecture, is_hep
>>> FAMILY["qwen2-moe"].architecture, is_hep("qwen2-moe"), is_hep("mixtral")
('Qwen2MoeForCausalLM', True, False)
>>> family_of_architecture("LlamaForCausalLM")
'llama-mcore'
>>> sorted(FAMILY["qwen3"].reads)
['attention_bias', 'head_dim']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Literal

from syncviz.families import (
    deepseek_v3,
    gemma3,
    glm4_moe,
    gpt_oss,
    llama_legacy,
    llama_mcore,
    mistral,
    mixtral,
    qwen2,
    qwen2_moe,
    qwen3,
    qwen3_moe,
    qwen_v1,
)
from syncviz.families.record import LAYOUT_KEYS, ExpertLayout, FamilyInfo, Preset
from syncviz.families.registry import FAMILY, FamilyNames, add_built_in, derived, unregister

__all__ = [
    "ARCHITECTURE_FAMILY",
    "FAMILY",
    "FAMILY_NAMES",
    "INACTIVE_VALUES",
    "KEY_OWNERS",
    "LAYOUT_KEYS",
    "MODEL_TYPE_ARCHITECTURE",
    "UNSUPPORTED_MODEL_TYPES",
    "ExpertLayout",
    "FamilyInfo",
    "Preset",
    "classes_by_architecture",
    "family_of_architecture",
    "is_hep",
    "readers_of",
    "unregister",
]

INACTIVE_VALUES: Mapping[str, object] = MappingProxyType(
    {"decoder_sparse_step": 1, "moe_layer_freq": 1, "interleave_moe_layer_step": 1}
)
"""Layout keys whose value other than null/false/0/[] still means "nothing added"."""

KEY_OWNERS: Mapping[str, str] = MappingProxyType(
    {
        "q_lora_rank": "DeepSeek-V3 / Kimi-K2 (multi-head latent attention)",
        "kv_lora_rank": "DeepSeek-V2/V3 / Kimi-K2 (multi-head latent attention)",
        "qk_rope_head_dim": "DeepSeek-V2/V3 (multi-head latent attention)",
        "qk_nope_head_dim": "DeepSeek-V2/V3 (multi-head latent attention)",
        "v_head_dim": "DeepSeek-V2/V3 (multi-head latent attention)",
        "n_routed_experts": "DeepSeek-V2/V3 / GLM-4.5 (routed and shared experts)",
        "n_shared_experts": "DeepSeek-V2/V3 / GLM-4.5 (routed and shared experts)",
        "first_k_dense_replace": "DeepSeek-V3 / GLM-4.5 (dense first layers)",
        "use_qk_norm": "GLM-4.5 (optional q/k norms)",
        "num_nextn_predict_layers": "DeepSeek-V3 / GLM-4.5 (MTP layer)",
        "moe_layer_freq": "DeepSeek-V2 (MoE every few layers)",
        "interleave_moe_layer_step": "Llama-4 (MoE every few layers)",
        "mlp_bias": "models with MLP biases",
    }
)
"""Who reads a layout key that no family here reads (for the refusal's words)."""

UNSUPPORTED_MODEL_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "deepseek_v2": "DeepSeek-V2 (MLA)",
        "llama4": "Llama-4",
        "llama4_text": "Llama-4",
    }
)
"""``model_type`` values of models whose layout syncviz does not model yet."""


# Registry order: the order of every listing (families, architectures, presets).
_ALL: tuple[FamilyInfo, ...] = tuple(
    module.FAMILY
    for module in (
        llama_legacy,
        llama_mcore,
        qwen_v1,
        qwen2,
        qwen2_moe,
        mixtral,
        mistral,
        qwen3,
        qwen3_moe,
        gpt_oss,
        deepseek_v3,
        glm4_moe,
        gemma3,
    )
)
for _info in _ALL:
    add_built_in(_info)

FAMILY_NAMES: Sequence[str] = FamilyNames()
"""Every family name, in registry order (families registered later included)."""

ARCHITECTURE_FAMILY: Mapping[str, str] = derived(
    lambda infos: {
        arch: f.name
        for f in infos
        if f.hf_default
        for arch in (f.architecture, f.wrapper_architecture)
        if arch
    }
)
"""Hugging Face ``architectures`` entry -> the family it is read as (a multimodal wrapper's
included: its ``text_config`` is read)."""

MODEL_TYPE_ARCHITECTURE: Mapping[str, str] = derived(
    lambda infos: (
        {
            t: f.architecture
            for f in infos
            if f.hf_default
            for t in (f.model_type, *f.also_model_types)
        }
        | {f.wrapper_model_type: f.wrapper_architecture for f in infos if f.wrapper_model_type}
    )
)
"""config.json ``model_type`` -> architecture (used when ``architectures`` is missing)."""


def is_hep(family: str) -> bool:
    """Whether ``family``'s trainer shards whole routed experts over ep * tp ranks."""
    info = FAMILY.get(family)
    return info is not None and info.experts == "hep"


def family_of_architecture(architecture: str) -> str:
    """The family a checkpoint of ``architecture`` is read as (KeyError if none)."""
    return ARCHITECTURE_FAMILY[architecture]


def readers_of(key: str) -> list[str]:
    """The families whose config reader reads layout key ``key``.

    >>> readers_of("shared_expert_intermediate_size")
    ['qwen2-moe']
    """
    return [f.name for f in FAMILY.values() if key in f.reads]


def classes_by_architecture(kind: Literal["chatlearn", "corrected"]) -> dict[str, str]:
    """Architecture -> class name of that kind, for the families that have one.

    >>> classes_by_architecture("chatlearn")["Qwen2MoeForCausalLM"]
    'MegatronVllmQWen2Sync'
    >>> "MixtralForCausalLM" in classes_by_architecture("chatlearn")
    False
    """
    found: dict[str, str] = {}
    for info in FAMILY.values():
        name = getattr(info, kind)
        if name and info.architecture not in found:
            found[info.architecture] = name
    return found
