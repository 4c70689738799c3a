"""What each vLLM tensor-parallel rank must hold of one parameter kind.

The rules of LAYOUTS.md, "Destination": QKVParallelLinear (K/V heads
replicated when the TP size exceeds the K/V head count),
MergedColumnParallelLinear, RowParallelLinear, VocabParallelEmbedding
(vocab padded to a multiple of 64), FusedMoE without expert parallel.
Identical for every family; only the names differ (see families.py).

>>> from syncviz.spec import ModelSpec
>>> spec = ModelSpec("tiny", "llama-mcore", 2, 8, 4, 2, 4, 70)
>>> [m.ids()[:, 0].floor_divide(8).tolist() for m in dest_maps("qkv", spec, 4)]
[[0, 1, 8, 9, 12, 13], [2, 3, 8, 9, 12, 13], [4, 5, 10, 11, 14, 15], [6, 7, 10, 11, 14, 15]]
"""

from __future__ import annotations

from syncviz.constants import VLLM_VOCAB_PADDING
from syncviz.oracle.blocks import MLA_HEAD_KINDS, global_shape
from syncviz.oracle.index import Box, IndexMap
from syncviz.oracle.slicing import cols_map, padded_rows_map, round_up, rows_map
from syncviz.oracle.source import COLUMN_KINDS, REPLICATED_KINDS, head_rows_map, qkv_head_rows
from syncviz.spec import ModelSpec


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


def dest_maps(kind: str, spec: ModelSpec, d: int) -> list[IndexMap]:
    """The index map of ``kind`` on each of the ``d`` vLLM TP ranks."""
    shape = global_shape(kind, spec)
    return [_dest_map(kind, spec, shape, d, r) for r in range(d)]


def _dest_map(kind: str, spec: ModelSpec, shape: tuple[int, ...], d: int, r: int) -> IndexMap:
    if kind in REPLICATED_KINDS or kind == "fused_qkv_a":  # fused_qkv_a: MLA's, replicated
        return IndexMap.whole(shape)
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
    if kind in ("embed", "lm_head"):
        padded = round_up(spec.vocab_size, VLLM_VOCAB_PADDING)
        return padded_rows_map(shape, padded, r, d)
    n_experts, inter, hidden = shape[0], spec.moe_ffn_hidden_size, spec.hidden_size
    width = inter // d
    if kind == "experts_w13":
        pieces = [
            Box((e, lo + r * width, 0), (e + 1, lo + (r + 1) * width, hidden))
            for e in range(n_experts)
            for lo in (0, inter)
        ]
        return IndexMap(shape, (n_experts, 2 * width, hidden), pieces)
    if kind == "experts_w2":
        box = Box((0, 0, r * width), (n_experts, hidden, (r + 1) * width))
        return IndexMap(shape, (n_experts, hidden, width), [box])
    raise AssertionError(kind)  # pragma: no cover
