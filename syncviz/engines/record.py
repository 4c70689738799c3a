"""What an engine file declares: :class:`EngineInfo`, the destination side as data.

An engine file (``syncviz/engines/<engine>.py``) holds one ``EngineInfo``: the name it
is printed under, how its parameter names differ from the names a family file writes
(vLLM's, the project's reference spelling), the spellings of routed experts its dumps
may use, how it pads the vocabulary, whether attention may be sharded over fewer ranks
than ``--dst-tp`` (SGLang's DP attention) and how it is dumped. Nothing else names an
engine.

>>> from syncviz.engines import ENGINE
>>> ENGINE["sglang"].display, ENGINE["vllm"].display
('SGLang', 'vLLM')
>>> ENGINE["sglang"].dst_name("model.model.layers.{i}.self_attn.fused_qkv_a_proj.weight")
'model.model.layers.{i}.self_attn.fused_qkv_a_proj_with_mqa.weight'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

ROUTED_SPELLING = ".experts."
"""How the family files spell routed experts (``mlp.experts.w13_weight``)."""


@dataclass(frozen=True)
class EngineInfo:
    """One inference engine, as syncviz needs to know it.

    ``renames`` are ``(reference, engine)`` substrings replaced in the family's
    destination names (which are written in vLLM's spelling). ``expert_spellings`` are
    the infixes a dump of this engine may use for routed experts in place of
    :data:`ROUTED_SPELLING` (diagnose reads each). ``vocab_padding``: the vocabulary is
    padded to a multiple of it before being split over ranks. ``dp_attention``: whether
    attention may be sharded over ``tp / dp_attention`` ranks (rank r holding attention
    shard ``r % (tp / dp_attention)``); ``dp_attention_embed`` how the embedding is held
    then (``"replicated"``: whole on every rank). ``dump`` names the syncviz function
    that writes a rank's dump; ``parallel_state`` the engine module that tells a worker
    its TP/PP ranks; ``expert_count`` the attribute of its MoE layer giving the experts a
    rank holds. ``mtp_renames`` are ``(pattern, replacement)`` regular expressions that
    respell a multi-token-prediction layer's names (``{i}`` or a number for the layer);
    ``mtp_own_head`` whether the engine's MTP draft model loads a head of its own (else it
    uses the target's ``lm_head``); ``mtp_max_layers`` how many MTP layers it loads
    (0: any). ``source`` says where the facts come from.
    """

    name: str
    display: str
    renames: tuple[tuple[str, str], ...] = ()
    expert_spellings: tuple[str, ...] = (ROUTED_SPELLING,)
    vocab_padding: int = 64
    dp_attention: bool = False
    dp_attention_embed: str = "tp"
    dump: str = "save_vllm_rank"
    parallel_state: str = "vllm.distributed.parallel_state"
    expert_count: str = "local_num_experts"
    mtp_renames: tuple[tuple[str, str], ...] = ()
    mtp_own_head: bool = True
    mtp_max_layers: int = 0
    source: str = field(default="", compare=False)

    def dst_name(self, template: str) -> str:
        """A family's destination name template, spelled as this engine spells it."""
        for old, new in self.renames:
            template = template.replace(old, new)
        for pattern, new in self.mtp_renames:
            template = re.sub(pattern, new, template)
        return template

    def dst_names(self, names: Mapping[str, str]) -> dict[str, str]:
        """A family's whole destination name table, spelled as this engine spells it."""
        return {kind: self.dst_name(t) for kind, t in names.items()}

    def canonical_name(self, name: str) -> str:
        """A name from this engine's dump with its routed experts spelled one way
        (:data:`ROUTED_SPELLING`), as the layout names them.

        >>> from syncviz.engines import ENGINE
        >>> ENGINE["vllm"].canonical_name("model.layers.0.mlp.experts.routed_experts.w2_weight")
        'model.layers.0.mlp.experts.w2_weight'
        """
        for spelling in self.expert_spellings:
            name = name.replace(spelling, ROUTED_SPELLING)
        return name
