"""The model families, once: every table keyed by family or architecture derives from here.

A family fixes the trainer's parameter names and conventions (``syncviz.oracle.families``
holds the layout facts of each); this registry holds what the rest of the package
switches on: the Hugging Face architecture a family's vLLM model reports, the
``model_type`` that names it when a config.json has no ``architectures`` list, how its
config.json is read (which layout keys it reads, and what they mean), the synchronizer
classes chosen for it, which trainer (legacy Megatron or Megatron-Core) it comes from,
and how that trainer shards routed experts.

>>> from syncviz.families import FAMILY, family_of_architecture, is_hep
>>> FAMILY["qwen2-moe"].architecture, is_hep("qwen2-moe"), is_hep("mixtral")
('Qwen2MoeForCausalLM', True, False)
>>> family_of_architecture("LlamaForCausalLM")
'llama-mcore'
>>> sorted(FAMILY["qwen3"].reads)
['attention_bias', 'head_dim']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

ExpertLayout = Literal["none", "hep", "sequential"]
Trainer = Literal["legacy", "mcore"]

LAYOUT_KEYS: Mapping[str, str] = MappingProxyType(
    {
        "head_dim": "the attention head size",
        "kv_channels": "the attention head size",
        "attention_bias": "q/k/v biases",
        "qkv_bias": "q/k/v biases",
        "mlp_bias": "MLP biases",
        "num_experts": "routed experts",
        "num_local_experts": "routed experts",
        "n_routed_experts": "routed experts",
        "moe_intermediate_size": "each routed expert's FFN size",
        "shared_expert_intermediate_size": "a shared expert",
        "n_shared_experts": "shared experts",
        "decoder_sparse_step": "which layers are MoE",
        "mlp_only_layers": "which layers are dense",
        "first_k_dense_replace": "dense first layers",
        "moe_layer_freq": "which layers are MoE",
        "interleave_moe_layer_step": "which layers are MoE",
        "q_lora_rank": "MLA's low-rank query projection",
        "kv_lora_rank": "MLA's low-rank key/value projection",
        "qk_rope_head_dim": "MLA's rotary head part",
        "qk_nope_head_dim": "MLA's non-rotary head part",
        "v_head_dim": "MLA's value head size",
        "use_qk_norm": "q/k norms",
        "num_nextn_predict_layers": "a multi-token-prediction layer",
    }
)
"""config.json keys that change the parameter layout, and what each adds: the one list.

A key a config sets (to a value other than its inactive one) and the chosen family does
not read is refused at config loading (``syncviz.spec``), so a model is never laid out
without the parameters that key brings.
"""

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
        "deepseek_v3": "DeepSeek-V3 (MLA)",
        "kimi_k2": "Kimi-K2 (MLA)",
        "glm4_moe": "GLM-4.5 MoE",
        "gpt_oss": "gpt-oss",
        "gemma3": "Gemma-3",
        "gemma3_text": "Gemma-3",
        "llama4": "Llama-4",
        "llama4_text": "Llama-4",
    }
)
"""``model_type`` values of models whose layout syncviz does not model yet."""


@dataclass(frozen=True)
class FamilyInfo:
    """What one family is called outside syncviz, how its config.json reads, who serves it.

    ``chatlearn`` / ``corrected`` name classes in ``syncviz.sync.megatron_vllm`` and
    ``syncviz.sync.corrected`` ("" where the original has none). ``hf_default`` marks
    the family a plain checkpoint of that architecture is read as. ``trainer`` is the
    Megatron the trainer names come from (legacy ``language_model.encoder`` or
    Megatron-Core ``decoder``).

    Reading config.json: ``qkv_bias`` is a constant or the key of a JSON flag
    (``qkv_bias_default`` when absent); ``qk_norm`` says the attention has per-head q/k
    norms; ``experts_keys`` are the keys that may give the routed-expert count (first
    present wins; none: a dense family); ``moe_ffn_key`` the key of each expert's FFN
    size; ``shared_expert`` whether ``shared_expert_intermediate_size`` is read (with
    its gate); ``sparse_step`` whether ``decoder_sparse_step`` / ``mlp_only_layers`` are
    read; ``fused_ffn`` that ``intermediate_size`` holds both gate and up halves;
    ``head_dim_key`` the key of an explicit head size; ``mha_only`` that K/V heads
    always equal the query heads. :attr:`reads` follows from these.
    """

    name: str
    architecture: str
    model_type: str
    chatlearn: str
    corrected: str
    experts: ExpertLayout = "none"
    hf_default: bool = True
    trainer: Trainer = "mcore"
    qkv_bias: bool | str = False
    qkv_bias_default: bool = False
    qk_norm: bool = False
    experts_keys: tuple[str, ...] = ()
    moe_ffn_key: str = "moe_intermediate_size"
    shared_expert: bool = False
    sparse_step: bool = False
    fused_ffn: bool = False
    head_dim_key: str = "head_dim"
    mha_only: bool = False

    @property
    def is_moe(self) -> bool:
        return bool(self.experts_keys)

    @property
    def reads(self) -> frozenset[str]:
        """The layout keys (:data:`LAYOUT_KEYS`) this family's config reader reads."""
        keys = {self.head_dim_key}
        if isinstance(self.qkv_bias, str):
            keys.add(self.qkv_bias)
        keys.update(self.experts_keys)
        if self.is_moe and self.moe_ffn_key in LAYOUT_KEYS:
            keys.add(self.moe_ffn_key)
        if self.shared_expert:
            keys.add("shared_expert_intermediate_size")
        if self.sparse_step:
            keys.update(("decoder_sparse_step", "mlp_only_layers"))
        return frozenset(keys)

    @property
    def layout_signature(self) -> tuple[object, ...]:
        """What fixes the parameter set: two families with the same signature lay out alike."""
        return (self.qk_norm, self.is_moe, self.shared_expert, self.fused_ffn, self.mha_only)


_QWEN_LEGACY = "MegatronVllmQWen2Sync"
_MCORE_CORRECTED = "CorrectedMegatronVllmMCoreSync"

_ALL = (
    # A plain Llama checkpoint is trained with Megatron-Core today, hence the default.
    FamilyInfo("llama-legacy", "LlamaForCausalLM", "llama", "MegatronVllmLlamaSync",
               "CorrectedMegatronVllmLlamaSync", hf_default=False, trainer="legacy",
               qkv_bias="attention_bias"),
    FamilyInfo("llama-mcore", "LlamaForCausalLM", "llama", "MegatronVllmLlamaSync",
               "CorrectedMegatronVllmLlamaSync", qkv_bias="attention_bias"),
    FamilyInfo("qwen2", "Qwen2ForCausalLM", "qwen2", _QWEN_LEGACY,
               "CorrectedMegatronVllmQWen2Sync", trainer="legacy", qkv_bias=True),
    # ChatLearn's Qwen-MoE trainer ("HEP") shards whole routed experts over ep * tp ranks.
    FamilyInfo("qwen2-moe", "Qwen2MoeForCausalLM", "qwen2_moe", _QWEN_LEGACY,
               "CorrectedMegatronVllmQWen2Sync", experts="hep", trainer="legacy",
               qkv_bias="qkv_bias", qkv_bias_default=True, experts_keys=("num_experts",),
               shared_expert=True, sparse_step=True),
    # The original has no Mixtral synchronizer.
    FamilyInfo("mixtral", "MixtralForCausalLM", "mixtral", "",
               "CorrectedMegatronVllmMixtralSync", experts="sequential",
               experts_keys=("num_local_experts", "num_experts"),
               moe_ffn_key="intermediate_size"),
    # QWen v1: intermediate_size holds w1 + w2, kv_channels is the head size, no GQA.
    FamilyInfo("qwen-v1", "QWenLMHeadModel", "qwen", "MegatronVllmQWenSync",
               "CorrectedMegatronVllmQWenSync", trainer="legacy", qkv_bias=True,
               fused_ffn=True, head_dim_key="kv_channels", mha_only=True),
    # Mistral (v0.1-v0.3) has Llama's layout and names; vLLM's Mistral class is Llama's.
    # The original has no Mistral synchronizer (it switches on the architecture).
    FamilyInfo("mistral", "MistralForCausalLM", "mistral", "", _MCORE_CORRECTED,
               qkv_bias="attention_bias"),
    # Qwen3: per-head q_norm / k_norm, explicit head_dim, no qkv bias by default.
    # The original has no Qwen3 synchronizer.
    FamilyInfo("qwen3", "Qwen3ForCausalLM", "qwen3", "", _MCORE_CORRECTED,
               qkv_bias="attention_bias", qk_norm=True),
    # Qwen3-MoE: Qwen3 attention, routed experts without a shared expert, Megatron-Core
    # grouped experts on the trainer (per-expert tensors, experts split by ep).
    FamilyInfo("qwen3-moe", "Qwen3MoeForCausalLM", "qwen3_moe", "", _MCORE_CORRECTED,
               experts="sequential", qkv_bias="attention_bias", qk_norm=True,
               experts_keys=("num_experts",), sparse_step=True),
)  # fmt: skip

FAMILY: Mapping[str, FamilyInfo] = MappingProxyType({f.name: f for f in _ALL})
"""Family name -> its facts."""

FAMILY_NAMES: tuple[str, ...] = tuple(FAMILY)
"""Every family name, in registry order."""

HEP_FAMILIES = frozenset(f.name for f in _ALL if f.experts == "hep")

ARCHITECTURE_FAMILY: Mapping[str, str] = MappingProxyType(
    {f.architecture: f.name for f in _ALL if f.hf_default}
)
"""Hugging Face ``architectures`` entry -> the family it is read as."""

MODEL_TYPE_ARCHITECTURE: Mapping[str, str] = MappingProxyType(
    {f.model_type: f.architecture for f in _ALL if f.hf_default}
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
    return [f.name for f in _ALL if key in f.reads]


def classes_by_architecture(kind: Literal["chatlearn", "corrected"]) -> dict[str, str]:
    """Architecture -> class name of that kind, for the families that have one.

    >>> classes_by_architecture("chatlearn")["Qwen2MoeForCausalLM"]
    'MegatronVllmQWen2Sync'
    >>> "MixtralForCausalLM" in classes_by_architecture("chatlearn")
    False
    """
    found: dict[str, str] = {}
    for info in _ALL:
        name = getattr(info, kind)
        if name and info.architecture not in found:
            found[info.architecture] = name
    return found
