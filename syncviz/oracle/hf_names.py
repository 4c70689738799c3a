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

from collections.abc import Mapping
from types import MappingProxyType

from syncviz.families import FAMILY

HF_NAMES: Mapping[str, Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {name: info.hf_names for name, info in FAMILY.items()}
)
"""Hugging Face checkpoint names per family and parameter kind."""
