"""Hugging Face checkpoint names of each family, per parameter kind (from the family files).

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

import re
from collections.abc import Iterable, Mapping

from syncviz.families.registry import derived

HF_NAMES: Mapping[str, Mapping[str, tuple[str, ...]]] = derived(
    lambda infos: {info.name: info.hf_names for info in infos}
)
"""Hugging Face checkpoint names per family and parameter kind."""


def _pattern(template: str) -> re.Pattern[str]:
    return re.compile(re.escape(template).replace(r"\{i\}", r"\d+").replace(r"\{e\}", r"\d+"))


_PATTERNS: Mapping[str, list[re.Pattern[str]]] = derived(
    lambda infos: {
        info.name: [_pattern(t) for templates in info.hf_names.values() for t in templates]
        for info in infos
    }
)


def foreign_tensor(family: str, names: Iterable[str]) -> tuple[str, str] | None:
    """A checkpoint tensor ``family`` does not read but another family does, and that family.

    A checkpoint whose config was relabelled (Qwen3's as Llama) still holds the
    tensors of its own layout; laying it out as the label says would drop them.

    >>> foreign_tensor("llama-mcore", ["model.layers.3.self_attn.q_norm.weight"])
    ('model.layers.3.self_attn.q_norm.weight', 'qwen3')
    >>> foreign_tensor("qwen3", ["model.layers.3.self_attn.q_norm.weight"]) is None
    True
    """
    own = _PATTERNS[family]
    for name in names:
        if any(p.fullmatch(name) for p in own):
            continue
        for other, patterns in _PATTERNS.items():
            if other != family and any(p.fullmatch(name) for p in patterns):
                return name, other
    return None
