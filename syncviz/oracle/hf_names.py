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

import torch

from syncviz.families.registry import derived

HF_NAMES: Mapping[str, Mapping[str, tuple[str, ...]]] = derived(
    lambda infos: {
        info.name: {**info.hf_names, **(info.mtp.hf_names if info.mtp else {})} for info in infos
    }
)
"""Hugging Face checkpoint names per family and parameter kind (a multi-token-prediction
layer's own kinds included; its decoder layer is named as any layer, ``{i}`` = its index)."""


HF_FUSED_EXPERTS: Mapping[str, bool] = derived(
    lambda infos: {info.name: True for info in infos if info.hf_fused_experts}
)
"""Families whose checkpoints keep a layer's experts as fused 3-D tensors (one name, no
``{e}``): ``gate_up_proj`` [E, H, 2I] with gate/up interleaved columns (g0, u0, g1, ...),
``gate_up_proj_bias`` [E, 2I] likewise, ``down_proj`` [E, I, H], ``down_proj_bias`` [E, H]."""


def fused_expert_shape(kind: str, global_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The fused checkpoint tensor's shape for ``kind`` of oracle shape ``global_shape``.

    >>> fused_expert_shape("experts_w13", (4, 16, 8)), fused_expert_shape("experts_w2", (4, 8, 6))
    ((4, 8, 16), (4, 6, 8))
    """
    if kind in ("experts_w13", "experts_w2"):  # stored [E, in, out]: the weight transposed
        return (global_shape[0], global_shape[2], global_shape[1])
    return global_shape


def from_fused_experts(kind: str, tensor: torch.Tensor) -> torch.Tensor:
    """A fused checkpoint tensor as the oracle's global tensor: transposed to [E, out, in],
    and an fc1's interleaved gate/up rows (g0, u0, g1, ...) put back as [gate; up].

    >>> gate_up = torch.tensor([[[0.0, 10, 1, 11]]])  # [E 1, H 1, 2I 4]: g0 u0 g1 u1
    >>> from_fused_experts("experts_w13", gate_up).flatten().tolist()
    [0.0, 1.0, 10.0, 11.0]
    """
    if kind in ("experts_w13", "experts_w2"):
        tensor = tensor.transpose(1, 2)
    if kind in ("experts_w13", "experts_w13_bias"):
        tensor = torch.cat([tensor[:, 0::2], tensor[:, 1::2]], dim=1)
    return tensor.contiguous()


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
