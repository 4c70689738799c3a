"""What each destination (inference engine) rank must hold of one parameter kind.

The rules of LAYOUTS.md, "Destination": QKVParallelLinear (K/V heads
replicated when the TP size exceeds the K/V head count),
MergedColumnParallelLinear, RowParallelLinear, VocabParallelEmbedding
(vocab padded to a multiple of 64), FusedMoE without expert parallel, or with it
(whole experts per rank, see :func:`experts_of_rank`). Identical for every family;
only the names differ (see families.py). The destination's engine and sizes
(``Parallel``: ``ep``, ``expert_placement``, ``dp_attention``) say the rest.

>>> from syncviz.spec import ModelSpec
>>> spec = ModelSpec("tiny", "llama-mcore", 2, 8, 4, 2, 4, 70)
>>> [m.ids()[:, 0].floor_divide(8).tolist() for m in dest_maps("qkv", spec, 4)]
[[0, 1, 8, 9, 12, 13], [2, 3, 8, 9, 12, 13], [4, 5, 10, 11, 14, 15], [6, 7, 10, 11, 14, 15]]
"""

from __future__ import annotations

from syncviz.engines import engine
from syncviz.oracle.biased import BIASED_KINDS, biased_dest_maps, expert_fc1_map
from syncviz.oracle.blocks import MLA_HEAD_KINDS, global_shape
from syncviz.oracle.index import Box, boxes_map, whole_map
from syncviz.oracle.slicing import cols_map, padded_rows_map, round_up, rows_map
from syncviz.oracle.source import (
    COLUMN_KINDS,
    MTP_NORM_KINDS,
    REPLICATED_KINDS,
    VOCAB_KINDS,
    head_rows_map,
    qkv_head_rows,
)
from syncviz.parallel import Parallel
from syncviz.provenance import RegionMap
from syncviz.spec import ModelSpec

ATTENTION_KINDS = frozenset({"qkv", "qkv_bias", "o_proj"})
"""Kinds sharded over the attention ranks (``tp / dp_attention`` under DP attention)."""


def kv_heads_of_rank(spec: ModelSpec, d: int, r: int) -> range:
    """K/V heads vLLM rank ``r`` of ``d`` holds; one replicated head when d > ng.

    >>> from syncviz.spec import ModelSpec
    >>> spec = ModelSpec("t", "llama-mcore", 1, 8, 4, 2, 4, 64)
    >>> [list(kv_heads_of_rank(spec, 4, r)) for r in range(4)]
    [[0], [0], [1], [1]]
    """
    ng = spec.num_query_groups
    if d <= ng:
        per = ng // d
        return range(r * per, (r + 1) * per)
    head = r // (d // ng)
    return range(head, head + 1)


def experts_of_rank(experts: int, ep: int, rank: int, placement: str = "linear") -> list[int]:
    """The (global) experts destination EP rank ``rank`` of ``ep`` holds, in local order.

    ``linear``: contiguous, the first ``experts mod ep`` ranks one more; ``round_robin``:
    ``rank, rank + ep, ...`` (vLLM's placements).

    >>> [experts_of_rank(6, 4, r) for r in range(4)]
    [[0, 1], [2, 3], [4], [5]]
    >>> [experts_of_rank(6, 4, r, "round_robin") for r in range(4)]
    [[0, 4], [1, 5], [2], [3]]
    """
    if placement == "round_robin":
        return list(range(rank, experts, ep))
    base, extra = divmod(experts, ep)
    start = rank * base + min(rank, extra)
    return list(range(start, start + base + (rank < extra)))


def dest_maps(kind: str, spec: ModelSpec, d: int, dst: Parallel | None = None) -> list[RegionMap]:
    """The index map of ``kind`` on each of the ``d`` destination TP ranks.

    ``dst`` (default ``Parallel(tp=d)``) gives the engine, its expert parallel and its
    DP attention; its ``tp`` must be ``d``.
    """
    dst = dst or Parallel(tp=d)
    shape = global_shape(kind, spec)
    if dst.ep > 1 and kind in _EXPERT_KINDS:
        return [_expert_map(kind, spec, shape, dst, r) for r in range(d)]
    if kind in BIASED_KINDS:  # attention-sink models' biases and sinks (oracle.biased)
        return biased_dest_maps(kind, spec, d)
    if kind == "experts_w13" and spec.interleaved_experts:
        return [expert_fc1_map(shape, spec, d, r) for r in range(d)]
    if kind in ATTENTION_KINDS and dst.attn_tp != d:  # rank r holds attention shard r % attn_tp
        per = [_dest_map(kind, spec, shape, dst.attn_tp, r) for r in range(dst.attn_tp)]
        return [per[r % dst.attn_tp] for r in range(d)]
    info = engine(dst.engine)
    if kind == "embed" and dst.dp_attention > 1 and info.dp_attention_embed == "replicated":
        return [_dest_map(kind, spec, shape, 1, 0, info.vocab_padding)] * d
    return [_dest_map(kind, spec, shape, d, r, info.vocab_padding) for r in range(d)]


# Expert kinds whose experts a destination EP rank holds whole (its biases with them).
_EXPERT_KINDS = frozenset({"experts_w13", "experts_w2", "experts_w13_bias", "experts_w2_bias"})


def _expert_map(
    kind: str, spec: ModelSpec, shape: tuple[int, ...], dst: Parallel, r: int
) -> RegionMap:
    """Whole experts on rank ``r`` (expert TP 1), stacked in the order the rank holds them:
    fc1 rows as the family keeps them at TP 1 (interleaved for gpt-oss), and fc2's bias on
    every rank (expert TP 1 adds each expert's bias once)."""
    held = experts_of_rank(shape[0], dst.ep, r, dst.expert_placement)
    if kind in ("experts_w13", "experts_w13_bias"):
        return expert_fc1_map(shape, spec, 1, 0, experts=held)
    pieces = [Box((e,) + (0,) * (len(shape) - 1), (e + 1, *shape[1:])) for e in held]
    return boxes_map(shape, (len(held), *shape[1:]), pieces)


def _dest_map(
    kind: str, spec: ModelSpec, shape: tuple[int, ...], d: int, r: int, padding: int = 64
) -> RegionMap:
    # fused_qkv_a (MLA's) and the MTP layer's eh_proj (a plain nn.Linear): replicated.
    if kind in REPLICATED_KINDS or kind in MTP_NORM_KINDS or kind in ("fused_qkv_a", "mtp_eh_proj"):
        return whole_map(shape)
    if kind in MLA_HEAD_KINDS:  # ColumnParallelLinear over heads, each head's parts together
        return head_rows_map(shape, r, d)
    if kind in ("qkv", "qkv_bias"):
        q, k, v = qkv_head_rows(spec)
        per_q = spec.num_attention_heads // d
        kv = kv_heads_of_rank(spec, d, r)
        rows = q[r * per_q : (r + 1) * per_q] + [k[g] for g in kv] + [v[g] for g in kv]
        return rows_map(shape, rows)
    if kind in COLUMN_KINDS:
        return cols_map(shape, r, d)  # type: ignore[arg-type]
    if kind in ("gate_up", "shared_gate_up"):
        half = shape[0] // 2
        width = half // d
        return rows_map(
            shape, [(r * width, (r + 1) * width), (half + r * width, half + (r + 1) * width)]
        )
    if kind in VOCAB_KINDS:
        padded = round_up(spec.vocab_size, padding)
        return padded_rows_map(shape, padded, r, d)
    n_experts, inter, hidden = shape[0], spec.moe_ffn_hidden_size, spec.hidden_size
    width = inter // d
    if kind == "experts_w13":
        pieces = [
            Box((e, lo + r * width, 0), (e + 1, lo + (r + 1) * width, hidden))
            for e in range(n_experts)
            for lo in (0, inter)
        ]
        return boxes_map(shape, (n_experts, 2 * width, hidden), pieces)
    if kind == "experts_w2":
        box = Box((0, 0, r * width), (n_experts, hidden, (r + 1) * width))
        return boxes_map(shape, (n_experts, hidden, width), [box])
    raise AssertionError(kind)  # pragma: no cover
