"""Rules of the attention-sink models' kinds (gpt-oss): biases, sinks, interleaved experts.

Which families have these kinds is data (``bias_kinds``, ``dst_expert_fc1`` and
``dst_kv_replicated`` of their family files); the rules here read only the spec. Trainer
(Megatron-Core): ``linear_proj.bias`` and ``router.bias`` whole on every rank; the
softmax offset (the sinks) split by query heads like Q; each local expert's fc1 bias
``[gate_r; up_r]`` like its weight, its fc2 bias whole on every rank. vLLM: o_proj and
router biases replicated; sinks heads ``r*h/d ..``; each expert's w13 weight and bias
rows interleaved ``g0, u0, g1, u1, ...`` (the ``r``-th share of each half); w2_bias whole
on tp 0 and zeros elsewhere (padding, id -1: it is added once after the all-reduce).

>>> from syncviz.spec import ModelSpec
>>> spec = ModelSpec("t", "gpt-oss", 1, 4, 4, 2, 4, 64, head_dim=2, num_experts=2,
...                  moe_ffn_hidden_size=4)
>>> [m.ids().tolist() for m in biased_dest_maps("sinks", spec, 2)]
[[0, 1], [2, 3]]
>>> biased_dest_maps("experts_w13_bias", spec, 2)[1].ids()[0].tolist()  # g2 u2 g3 u3
[2, 6, 3, 7]
>>> biased_dest_maps("experts_w2_bias", spec, 2)[1].ids().tolist()  # zeros on tp 1
[[-1, -1, -1, -1], [-1, -1, -1, -1]]
"""

from __future__ import annotations

from syncviz.errors import SyncvizError
from syncviz.oracle.blocks import global_shape
from syncviz.oracle.families import Conventions
from syncviz.oracle.index import Box, Pad, boxes_map, whole_map
from syncviz.oracle.slicing import rows_map
from syncviz.parallel import Parallel
from syncviz.provenance import RegionMap
from syncviz.spec import ModelSpec

BIASED_KINDS = frozenset(
    {"o_proj_bias", "sinks", "router_bias", "experts_w13_bias", "experts_w2_bias"}
)
"""The kinds whose rules live here (shapes and blocks: ``syncviz.oracle.blocks``)."""

_WHOLE = frozenset({"o_proj_bias", "router_bias"})

SourcePiece = tuple[int, int | None, RegionMap, int | None]
"""(tp, ep or None, index map, local expert or None) of one trainer tensor."""


def biased_source_maps(
    kind: str, spec: ModelSpec, conv: Conventions, src: Parallel
) -> list[SourcePiece]:
    """Every trainer tensor of ``kind`` on one pipeline stage.

    >>> from syncviz.oracle.families import conventions
    >>> spec = ModelSpec("t", "gpt-oss", 1, 4, 4, 2, 4, 64, head_dim=2, num_experts=2,
    ...                  moe_ffn_hidden_size=4)
    >>> [(t, m.ids().tolist()) for t, _, m, _ in
    ...  biased_source_maps("sinks", spec, conventions("gpt-oss"), Parallel(tp=2))]
    [(0, [0, 1]), (1, [2, 3])]
    """
    shape = global_shape(kind, spec)
    s = src.tp
    if kind in _WHOLE:
        return [(r, None, whole_map(shape), None) for r in range(s)]
    if kind == "sinks":
        per = spec.num_attention_heads // s
        return [(r, None, rows_map(shape, [(r * per, (r + 1) * per)]), None) for r in range(s)]
    if conv.expert_layout != "sequential":
        raise SyncvizError(
            f"{kind} is laid out for Megatron-Core per-expert tensors only, not"
            f" {conv.expert_layout!r} experts",
            fix="declare experts='sequential' in the family file",
        )
    n_experts, inter, hidden = spec.num_experts, spec.moe_ffn_hidden_size, spec.hidden_size
    per_rank, width = n_experts // src.ep, inter // s
    out: list[SourcePiece] = []
    for q in range(src.ep):
        for t in range(s):
            for j in range(per_rank):
                e = q * per_rank + j
                if kind == "experts_w13_bias":
                    base = {"gate": 0, "up": inter}
                    pieces = [
                        Box((e, base[h] + t * width), (e + 1, base[h] + (t + 1) * width))
                        for h in conv.expert_fc1_halves
                    ]
                    local: tuple[int, ...] = (2 * width,)
                else:  # fc2's bias: whole on every tp rank (row-parallel layers add it once)
                    pieces = [Box((e, 0), (e + 1, hidden))]
                    local = (hidden,)
                out.append((t, q, boxes_map(shape, local, pieces), j))
    return out


def biased_dest_maps(kind: str, spec: ModelSpec, d: int) -> list[RegionMap]:
    """What each of the ``d`` vLLM ranks holds of ``kind``."""
    shape = global_shape(kind, spec)
    if kind in _WHOLE:
        return [whole_map(shape) for _ in range(d)]
    if kind == "sinks":
        per = spec.num_attention_heads // d
        return [rows_map(shape, [(r * per, (r + 1) * per)]) for r in range(d)]
    if kind == "experts_w2_bias":
        # Held on TP rank 0 only: the other ranks hold zeros (ids -1), as vLLM's loader
        # writes them, so the bias is added once after the row-parallel all-reduce.
        zeros = boxes_map(shape, shape, [Pad(shape[0] * shape[1])])
        return [whole_map(shape) if r == 0 else zeros for r in range(d)]
    return [expert_fc1_map(shape, spec, d, r) for r in range(d)]


def expert_fc1_map(
    shape: tuple[int, ...], spec: ModelSpec, d: int, r: int, experts: list[int] | None = None
) -> RegionMap:
    """vLLM rank ``r``'s w13 weight ``[E, 2I/d, H]`` or w13 bias ``[E, 2I/d]`` of a global
    ``[gate; up]`` per expert: the rank's share of each half, ``[gate; up]`` or interleaved
    (``g0, u0, g1, u1, ...``) as the family says; of the ``experts`` it holds, in that order
    (default: all).

    >>> spec = ModelSpec("t", "gpt-oss", 1, 4, 4, 2, 4, 64, head_dim=2, num_experts=1,
    ...                  moe_ffn_hidden_size=4)
    >>> expert_fc1_map((1, 8, 4), spec, 2, 0).ids()[0, :, 0].floor_divide(4).tolist()
    [0, 4, 1, 5]
    """
    held = list(range(shape[0])) if experts is None else experts
    inter = spec.moe_ffn_hidden_size
    width = inter // d
    rest = shape[2:]

    def rows(e: int, a: int, b: int) -> Box:
        return Box((e, a) + (0,) * len(rest), (e + 1, b, *rest))

    if spec.interleaved_experts:
        pieces = [
            rows(e, lo + c, lo + c + 1)
            for e in held
            for c in range(r * width, (r + 1) * width)
            for lo in (0, inter)
        ]
    else:
        pieces = [rows(e, lo + r * width, lo + (r + 1) * width) for e in held for lo in (0, inter)]
    return boxes_map(shape, (len(held), 2 * width, *rest), pieces)
