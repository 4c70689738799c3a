"""What each trainer (Megatron) rank holds of one parameter kind.

Pure layout rules (LAYOUTS.md, "Source"); everything family-specific comes
from a :class:`~syncviz.oracle.families.Conventions` record. The result does
not depend on the layer, so it is computed once per kind and reused.

>>> from syncviz.spec import ModelSpec
>>> from syncviz.parallel import Parallel
>>> from syncviz.oracle.families import conventions
>>> spec = ModelSpec("tiny", "llama-mcore", 2, 8, 4, 2, 4, 70)
>>> [t.index.ids()[:, 0].floor_divide(8).tolist() for t in
...  source_tensors("gate_up", spec, conventions("llama-mcore"), Parallel(tp=2))]
[[0, 1, 4, 5], [2, 3, 6, 7]]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from syncviz.constants import VLLM_VOCAB_PADDING
from syncviz.oracle.biased import BIASED_KINDS, biased_source_maps
from syncviz.oracle.blocks import MLA_HEAD_KINDS, global_shape
from syncviz.oracle.families import Conventions
from syncviz.oracle.index import Box, boxes_map, whole_map
from syncviz.oracle.slicing import clip_segments, cols_map, padded_rows_map, round_up, rows_map
from syncviz.parallel import Parallel
from syncviz.provenance import RegionMap
from syncviz.spec import ModelSpec

REPLICATED_KINDS = frozenset(
    {
        "input_norm",
        "post_attention_norm",
        "final_norm",
        "router",
        "shared_expert_gate",
        "q_norm",
        "k_norm",
        "attn_out_norm",
        "ffn_out_norm",
    }
) | frozenset({"kv_a", "q_a_norm", "kv_a_norm", "router_bias"})
"""Kinds every TP rank holds whole (on both sides); the second set is MLA's and the
router bias."""

MTP_NORM_KINDS = frozenset({"mtp_enorm", "mtp_hnorm", "mtp_norm"})
"""A multi-token-prediction layer's norms: whole on every rank, on both sides."""

VOCAB_KINDS = frozenset({"embed", "lm_head", "mtp_head"})
"""Vocab rows split over ranks, padded (the MTP head is the trainer's output layer)."""

COLUMN_KINDS = frozenset({"o_proj", "down", "shared_down"})
"""Row-parallel weights: each rank holds a slice of the input (column) dim."""

EXPERT_KINDS = frozenset({"experts_w13", "experts_w2"})


@dataclass(frozen=True, slots=True)
class RankTensor:
    """One tensor held by a trainer rank, before names and stages are attached.

    ``ep`` is None for a tensor every expert-parallel rank holds (dense
    parameters are replicated over the data-parallel ranks that ep is carved
    from). ``tensor`` selects the name template; ``local_expert`` fills ``{j}``.
    """

    tp: int
    ep: int | None
    index: RegionMap
    tensor: int = 0
    local_expert: int | None = None


def qkv_head_rows(
    spec: ModelSpec,
) -> tuple[list[tuple[int, int]], list[tuple[int, int]], list[tuple[int, int]]]:
    """Global row ranges of every Q head, K head and V head."""
    hd, nh, ng = spec.head_dim, spec.num_attention_heads, spec.num_query_groups
    q = [(h * hd, (h + 1) * hd) for h in range(nh)]
    k = [((nh + g) * hd, (nh + g + 1) * hd) for g in range(ng)]
    v = [((nh + ng + g) * hd, (nh + ng + g + 1) * hd) for g in range(ng)]
    return q, k, v


def _qkv_src_rows(spec: ModelSpec, layout: str, s: int, r: int) -> list[tuple[int, int]]:
    q, k, v = qkv_head_rows(spec)
    nh, ng = spec.num_attention_heads, spec.num_query_groups
    if layout == "separate":
        qs, gs = nh // s, ng // s
        return q[r * qs : (r + 1) * qs] + k[r * gs : (r + 1) * gs] + v[r * gs : (r + 1) * gs]
    nq = nh // ng
    grouped: list[tuple[int, int]] = []
    for g in range(ng):
        grouped += [*q[g * nq : (g + 1) * nq], k[g], v[g]]
    per_rank = (nh + 2 * ng) * spec.head_dim // s
    return clip_segments(grouped, r * per_rank, (r + 1) * per_rank)


def _halves_rows(
    halves: tuple[str, ...], full: int, part: int, parts: int
) -> list[tuple[int, int]]:
    """Row ranges of the TP-sharded halves of a fused [gate; up] weight, in ``halves`` order."""
    width = full // parts
    base = {"gate": 0, "up": full}
    return [(base[h] + part * width, base[h] + (part + 1) * width) for h in halves]


def _fc1_size(kind: str, spec: ModelSpec) -> int:
    return spec.shared_expert_ffn_hidden_size if kind.startswith("shared") else spec.ffn_hidden_size


def source_tensors(
    kind: str, spec: ModelSpec, conv: Conventions, src: Parallel
) -> list[RankTensor]:
    """Every tensor of ``kind`` on one pipeline stage's trainer ranks."""
    shape = global_shape(kind, spec)
    s = src.tp
    if kind in BIASED_KINDS:  # attention-sink models' biases and sinks (oracle.biased)
        return [
            RankTensor(tp, ep, index, local_expert=j)
            for tp, ep, index, j in biased_source_maps(kind, spec, conv, src)
        ]
    if kind in EXPERT_KINDS:
        return _expert_tensors(kind, spec, conv, src)
    if kind in MLA_HEAD_KINDS or kind == "fused_qkv_a":
        return _mla_tensors(kind, spec, src)
    out: list[RankTensor] = []
    for r in range(s):
        if kind in REPLICATED_KINDS or kind in MTP_NORM_KINDS:
            out.append(RankTensor(r, None, whole_map(shape)))
        elif kind == "mtp_eh_proj":  # ColumnParallelLinear: output rows split over tp
            out.append(RankTensor(r, None, head_rows_map(shape, r, s)))
        elif kind in ("qkv", "qkv_bias"):
            out.append(
                RankTensor(r, None, rows_map(shape, _qkv_src_rows(spec, conv.qkv_layout, s, r)))
            )
        elif kind in COLUMN_KINDS:
            out.append(RankTensor(r, None, cols_map(shape, r, s)))  # type: ignore[arg-type]
        elif kind in ("gate_up", "shared_gate_up"):
            full = _fc1_size(kind, spec)
            for t, halves in enumerate(conv.fc1_halves):
                rows = _halves_rows(halves, full, r, s)
                out.append(RankTensor(r, None, rows_map(shape, rows), tensor=t))
        elif kind in VOCAB_KINDS:
            padded = src_padded_vocab(spec.vocab_size, conv.src_vocab_divisible_by, s)
            out.append(RankTensor(r, None, padded_rows_map(shape, padded, r, s)))
        else:  # pragma: no cover - every kind is listed above
            raise AssertionError(kind)
    return out


def src_padded_vocab(vocab: int, divisible_by: int | None, s: int) -> int:
    """The trainer's padded vocab: a multiple of ``divisible_by * s``, or of lcm(64, s).

    >>> src_padded_vocab(151936, 128, 2), src_padded_vocab(151936, None, 2)
    (152064, 151936)
    """
    step = divisible_by * s if divisible_by else math.lcm(VLLM_VOCAB_PADDING, s)
    return round_up(vocab, step)


def _expert_tensors(
    kind: str, spec: ModelSpec, conv: Conventions, src: Parallel
) -> list[RankTensor]:
    shape = global_shape(kind, spec)
    n_experts, inter, hidden = spec.num_experts, spec.moe_ffn_hidden_size, spec.hidden_size
    out: list[RankTensor] = []
    if conv.expert_layout == "hep":
        per_rank = n_experts // (src.tp * src.ep)
        for q in range(src.ep):
            for t in range(src.tp):
                first = (q * src.tp + t) * per_rank
                experts = range(first, first + per_rank)
                if kind == "experts_w13":
                    base = {"gate": 0, "up": inter}
                    pieces = [
                        Box((e, base[h], 0), (e + 1, base[h] + inter, hidden))
                        for e in experts
                        for h in conv.expert_fc1_halves
                    ]
                    local = (per_rank * 2 * inter, hidden)
                else:
                    # fc2 is stored [E_local*I, H]: vLLM's w2 [E, H, I] with its last dims swapped.
                    pieces = [Box((first, 0, 0), (first + per_rank, hidden, inter), (0, 2, 1))]
                    local = (per_rank * inter, hidden)
                out.append(RankTensor(t, q, boxes_map(shape, local, pieces)))
        return out
    # Megatron-Core SequentialMLP: experts split over ep, each TP-sharded like a dense MLP.
    per_rank, width = n_experts // src.ep, inter // src.tp
    for q in range(src.ep):
        for t in range(src.tp):
            for j in range(per_rank):
                e = q * per_rank + j
                if kind == "experts_w13":
                    base = {"gate": 0, "up": inter}
                    pieces = [
                        Box((e, base[h] + t * width, 0), (e + 1, base[h] + (t + 1) * width, hidden))
                        for h in conv.expert_fc1_halves
                    ]
                    local = (2 * width, hidden)
                else:
                    pieces = [Box((e, 0, t * width), (e + 1, hidden, (t + 1) * width))]
                    local = (hidden, width)
                out.append(RankTensor(t, q, boxes_map(shape, local, pieces), local_expert=j))
    return out


def head_rows_map(shape: tuple[int, ...], part: int, parts: int) -> RegionMap:
    """Rank ``part`` of ``parts`` of an MLA up projection: its heads' rows, in order.

    Each head's parts (nope/rope, k_nope/v) stay together, so a rank's heads are one
    contiguous run of rows; both sides cut by heads alike.
    """
    rows = shape[0] // parts
    return rows_map(shape, [(part * rows, (part + 1) * rows)])


def _mla_tensors(kind: str, spec: ModelSpec, src: Parallel) -> list[RankTensor]:
    """Megatron-Core MLA: up projections column-parallel by heads; the two down projections
    whole on every rank (tensor 0 ``linear_q_down_proj`` = vLLM's rows of ``q_a``,
    tensor 1 ``linear_kv_down_proj`` = the rest of ``fused_qkv_a``)."""
    shape = global_shape(kind, spec)
    out: list[RankTensor] = []
    for r in range(src.tp):
        if kind in MLA_HEAD_KINDS:
            out.append(RankTensor(r, None, head_rows_map(shape, r, src.tp)))
            continue
        q_rows = spec.q_lora_rank
        out.append(RankTensor(r, None, rows_map(shape, [(0, q_rows)]), tensor=0))
        out.append(RankTensor(r, None, rows_map(shape, [(q_rows, shape[0])]), tensor=1))
    return out
