"""The model families, once: every table keyed by family or architecture derives from here.

A family fixes the trainer's parameter names and conventions (``syncviz.oracle.families``
holds the layout facts of each); this registry holds what the rest of the package
switches on: the Hugging Face architecture a family's vLLM model reports, the
``model_type`` that names it when a config.json has no ``architectures`` list, the
synchronizer classes chosen for it, and how its trainer shards routed experts.

>>> from syncviz.families import FAMILY, family_of_architecture, is_hep
>>> FAMILY["qwen2-moe"].architecture, is_hep("qwen2-moe"), is_hep("mixtral")
('Qwen2MoeForCausalLM', True, False)
>>> family_of_architecture("LlamaForCausalLM")
'llama-mcore'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

ExpertLayout = Literal["none", "hep", "sequential"]


@dataclass(frozen=True)
class FamilyInfo:
    """What one family is called outside syncviz, and which synchronizers serve it.

    ``chatlearn`` / ``corrected`` name classes in ``syncviz.sync.megatron_vllm`` and
    ``syncviz.sync.corrected`` ("" where the original has none). ``hf_default`` marks
    the family a plain checkpoint of that architecture is read as.
    """

    name: str
    architecture: str
    model_type: str
    chatlearn: str
    corrected: str
    experts: ExpertLayout = "none"
    hf_default: bool = True


_ALL = (
    # A plain Llama checkpoint is trained with Megatron-Core today, hence the default.
    FamilyInfo("llama-legacy", "LlamaForCausalLM", "llama", "MegatronVllmLlamaSync",
               "CorrectedMegatronVllmLlamaSync", hf_default=False),
    FamilyInfo("llama-mcore", "LlamaForCausalLM", "llama", "MegatronVllmLlamaSync",
               "CorrectedMegatronVllmLlamaSync"),
    FamilyInfo("qwen2", "Qwen2ForCausalLM", "qwen2", "MegatronVllmQWen2Sync",
               "CorrectedMegatronVllmQWen2Sync"),
    # ChatLearn's Qwen-MoE trainer ("HEP") shards whole routed experts over ep * tp ranks.
    FamilyInfo("qwen2-moe", "Qwen2MoeForCausalLM", "qwen2_moe", "MegatronVllmQWen2Sync",
               "CorrectedMegatronVllmQWen2Sync", experts="hep"),
    # The original has no Mixtral synchronizer.
    FamilyInfo("mixtral", "MixtralForCausalLM", "mixtral", "",
               "CorrectedMegatronVllmMixtralSync", experts="sequential"),
    FamilyInfo("qwen-v1", "QWenLMHeadModel", "qwen", "MegatronVllmQWenSync",
               "CorrectedMegatronVllmQWenSync"),
)  # fmt: skip

FAMILY: Mapping[str, FamilyInfo] = MappingProxyType({f.name: f for f in _ALL})
"""Family name -> its facts."""

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
