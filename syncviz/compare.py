"""The one comparison: a tensor's map of ids against the oracle's, region by region.

Every destination tensor and the oracle's expectation are
:class:`~syncviz.provenance.RegionMap` of model-wide ids, so the comparison
(:func:`compare_maps`) overlays their regions (a handful each) and never reads an
element: a whole model at real sizes is compared in milliseconds, with exact
counts of wrong elements. :func:`wrong_columns` finds the wrong
columns of a row-parallel shard; :func:`element_status` is the same verdict per
element, for the pictures.

>>> want = RegionMap.affine((4, 3), 0, (3, 1))
>>> got = RegionMap.cat([want.slice(0, 2, 4), want.slice(0, 0, 2)], 0)  # halves swapped
>>> diff = compare_maps(got, want)
>>> diff.wrong, diff.unwritten, diff.wrong_rows
(12, 0, [(0, 4)])
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from syncviz.geometry import meetings
from syncviz.provenance import Region as MapRegion
from syncviz.provenance import RegionMap, row_major
from syncviz.provenance.regions import ReshapedMap
from syncviz.run.values import FOREIGN_ID, UNWRITTEN_ID

# ---------------------------------------------------------------- per element

RIGHT, WRONG, NOT_WRITTEN, NOT_OURS = 0, 1, 2, 3
"""Verdicts of :func:`element_status`; the checker counts WRONG and NOT_OURS as wrong."""


def element_status(actual: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """Is each element right? The checker's verdict per element (int64, codes above).

    >>> element_status(torch.tensor([0.0, 5.0, -2.0, -3.0, -1.0]),
    ...                torch.tensor([0, 4, 2, 3, -1])).tolist()
    [0, 1, 2, 3, 0]
    """
    got = actual.to(torch.int64)
    out = torch.where(got == expected, RIGHT, WRONG)
    out = torch.where(got == int(UNWRITTEN_ID), NOT_WRITTEN, out)
    return torch.where(got == int(FOREIGN_ID), NOT_OURS, out)


def true_runs(flags: torch.Tensor, split: torch.Tensor | None) -> list[tuple[int, int]]:
    """Runs [a, b) where ``flags`` is true, cut where ``split`` changes.

    >>> flags = torch.tensor([True, True, False, True, True, True])
    >>> true_runs(flags, None), true_runs(flags, torch.tensor([0, 0, 0, 0, 1, 1]))
    ([(0, 2), (3, 6)], [(0, 2), (3, 4), (4, 6)])
    """
    runs: list[tuple[int, int]] = []
    keys = split.tolist() if split is not None else None
    for i in torch.nonzero(flags).flatten().tolist():
        same = keys is None or (i > 0 and keys[i] == keys[i - 1])
        if runs and runs[-1][1] == i and same:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


# ---------------------------------------------------------------- map against map


@dataclass
class MapDiff:
    """Where two maps differ: elements never written, elements wrong, wrong dim-0 runs.

    ``wrong`` counts the elements whose ids differ, exactly, whatever the dims the
    blocks differ along. ``id_ranges`` are the (lowest, highest) ids held by the
    wrong blocks.
    """

    unwritten: int = 0
    wrong: int = 0
    wrong_rows: list[tuple[int, int]] = field(default_factory=list)
    id_ranges: list[tuple[float, float]] = field(default_factory=list)


EQUAL_SCAN = 2**22  # candidate points scanned at once when counting equal elements


def compare_maps(actual: RegionMap, expected: RegionMap) -> MapDiff:
    """Overlay ``actual`` on ``expected`` (same shape) and collect the differences.

    A lazy reshape (:class:`~syncviz.provenance.regions.ReshapedMap`) is compared in
    the finest shape both maps refine to, where neither side fragments.

    >>> want = RegionMap.affine((4, 4), 0, (4, 1))
    >>> got = RegionMap.cat([want.slice(1, 2, 4), want.slice(1, 0, 2)], 1)  # columns swapped
    >>> diff = compare_maps(got, want)
    >>> diff.wrong, diff.wrong_rows
    (16, [(0, 4)])
    >>> half = RegionMap.affine((64, 8), 0, (16, 1)).reshape((128, 4))  # lazy: 1 segment
    >>> diff = compare_maps(half, RegionMap.affine((128, 4), 0, (8, 1)))
    >>> type(half).__name__, diff.wrong, diff.wrong_rows[:2], len(diff.wrong_rows)
    ('ReshapedMap', 256, [(1, 2), (3, 4)], 64)
    """
    shape = expected.shape
    a, b, row_shape = _common_view(actual, expected)
    diff = MapDiff()
    rows: list[tuple[int, int]] = []
    for ra, rb, lo, hi in meetings(a.regions, b.regions):
        _compare_piece(ra, rb, lo, hi, row_shape, diff, rows)
    diff.wrong_rows = _merge_runs(rows) if shape else ([(0, 1)] if diff.wrong else [])
    return diff


def _common_view(actual: RegionMap, expected: RegionMap):
    """Both maps in one shape, and the leading dims of it that index ``expected``'s rows.

    Plain maps are compared as they are. A lazy reshape is seen in the finest
    shape that refines both its segment's shape and the tensor's: getting there
    only splits dims, so no side fragments.
    """
    shape = expected.shape
    plain = (actual, expected, shape[:1])
    lazy = [m for m in (actual, expected) if isinstance(m, ReshapedMap)]
    if not lazy or not shape:
        return plain
    if any(len(m.segments) != 1 for m in lazy):
        return plain
    shapes = [m.segments[0].shape for m in lazy] + [shape]
    common = _refinement(shapes)
    if common is None:
        return plain
    views = [
        (m.segments[0] if isinstance(m, ReshapedMap) else m)._reshape_eager(common)
        for m in (actual, expected)
    ]
    inner = math.prod(shape[1:])
    k = len(common) - sum(1 for j in range(len(common)) if math.prod(common[j:]) <= inner)
    return views[0], views[1], common[:k]


def _refinement(shapes: Sequence[tuple[int, ...]]) -> tuple[int, ...] | None:
    """The coarsest shape whose dims split every one of ``shapes`` (same numel), or None.

    >>> _refinement([(2048, 2048), (4096, 1024)])
    (2048, 2, 1024)
    >>> _refinement([(3, 4), (2, 6)]) is None
    True
    """
    cuts = {math.prod(s[j:]) for s in shapes for j in range(len(s) + 1)}
    ordered = sorted(cuts)
    if ordered[0] == 0:
        return None
    out = []
    for small, big in itertools.pairwise(ordered):
        if big % small:
            return None
        out.append(big // small)
    return tuple(reversed(out))


def _compare_piece(
    a: MapRegion, b: MapRegion, lo, hi, row_shape, diff: MapDiff, rows: list
) -> None:
    extents = [y - x for x, y in zip(lo, hi, strict=True)]
    numel = math.prod(extents)
    va, vb = a.value_at(lo), b.value_at(lo)
    if a.is_constant and va == UNWRITTEN_ID:
        diff.unwritten += numel
        return
    moving = [d for d, n in enumerate(extents) if n > 1]
    deltas = {d: a.strides[d] - b.strides[d] for d in moving}
    if va == vb and not any(deltas.values()):
        return
    k = len(row_shape)
    equal = _equal_count(vb - va, [(extents[d], deltas[d]) for d in moving if deltas[d]])
    equal *= math.prod(extents[d] for d in moving if not deltas[d])
    if equal == numel:
        return
    diff.wrong += numel - equal
    right_rows: list[int] = []
    if equal and not any(deltas[d] for d in moving if d >= k):  # whole rows may agree
        # (a row dim of extent 1 does not move: it has no delta)
        row_terms = [(lo[d], extents[d], deltas.get(d, 0), d) for d in range(k)]
        right_rows = _right_rows(vb - va, row_terms, row_shape)
    rows.extend(_cut(_box_rows(lo[:k], hi[:k], row_shape), right_rows))
    if not a.is_constant or va >= 0:
        low = va + sum(min(0, a.strides[d] * (extents[d] - 1)) for d in moving)
        high = va + sum(max(0, a.strides[d] * (extents[d] - 1)) for d in moving)
        diff.id_ranges.append((low, high))


def _equal_count(target: float, terms: list[tuple[int, int]]) -> int:
    """How many ``0 <= x_i < n_i`` solve ``sum(x_i * d_i) == target`` (terms ``(n_i, d_i)``).

    >>> _equal_count(0, [(4, 3), (3, -4)])  # (0, 0) and (4k, 3k) leave the box but (0, 0)
    1
    >>> _equal_count(6, [(4, 1), (4, 2)])  # (0, 3), (2, 2)
    2
    """
    if not terms:
        return int(target == 0)
    if target != int(target):
        return 0
    target = int(target)
    terms = sorted(terms)
    (n_last, d_last), rest = terms[-1], terms[:-1]
    if not rest:
        q, r = divmod(target, d_last)
        return int(r == 0 and 0 <= q < n_last)
    count = 0
    head, tail = rest[:1], rest[1:]
    scan = math.prod(n for n, _ in tail)
    partial = torch.zeros(1, dtype=torch.int64)
    for n, d in tail:  # every combination of the tail dims, as one vector
        partial = (partial[:, None] + torch.arange(n, dtype=torch.int64)[None, :] * d).reshape(-1)
    n0, d0 = head[0]
    step = max(1, EQUAL_SCAN // max(1, scan))
    for x0 in range(0, n0, step):
        xs = torch.arange(x0, min(n0, x0 + step), dtype=torch.int64)
        left = target - (xs[:, None] * d0 + partial[None, :])
        ok = (left % d_last == 0) & (left // d_last >= 0) & (left // d_last < n_last)
        count += int(ok.sum())
    return count


def _right_rows(target, terms, row_shape) -> list[int]:
    """Rows (flat over the row dims) of a piece whose every element agrees."""
    moving = sorted(n for _, n, d, _ in terms if n > 1 and d)
    if math.prod(moving[:-1]) > EQUAL_SCAN or target != int(target):
        return []
    weights = [math.prod(row_shape[j + 1 :]) for j in range(len(row_shape))]
    free = [t for t in terms if not (t[1] > 1 and t[2])]  # coords that any value solves
    fixed = sorted((t for t in terms if t[1] > 1 and t[2]), key=lambda t: t[1])  # solve the longest
    out = []
    ranges = [range(n) for _, n, _, _ in fixed[:-1]]
    for xs in itertools.product(*ranges):
        left = int(target) - sum(x * t[2] for x, t in zip(xs, fixed, strict=False))
        if fixed:
            n, d = fixed[-1][1], fixed[-1][2]
            q, r = divmod(left, d)
            if r or not 0 <= q < n:
                continue
            coords = {t[3]: t[0] + x for x, t in zip((*xs, q), fixed, strict=True)}
        elif left:
            continue
        else:
            coords = {}
        for ys in itertools.product(*(range(t[0], t[0] + t[1]) for t in free)):
            coords.update({t[3]: y for y, t in zip(ys, free, strict=True)})
            out.append(sum(coords[j] * weights[j] for j in range(len(row_shape))))
    return sorted(out)


def _box_rows(lo, hi, row_shape) -> list[tuple[int, int]]:
    """Runs of rows (flat over the row dims) that the box ``lo..hi`` covers."""
    if not row_shape:
        return [(0, 1)]
    weights = [math.prod(row_shape[j + 1 :]) for j in range(len(row_shape))]
    m = len(row_shape) - 1
    while m > 0 and lo[m] == 0 and hi[m] == row_shape[m]:
        m -= 1  # dims after m are whole: one run per value of the dims before m
    out = []
    for xs in itertools.product(*(range(a, b) for a, b in zip(lo[:m], hi[:m], strict=True))):
        base = sum(x * w for x, w in zip(xs, weights, strict=False))
        out.append((base + lo[m] * weights[m], base + hi[m] * weights[m]))
    return out


def _cut(runs: list[tuple[int, int]], points: list[int]) -> list[tuple[int, int]]:
    """``runs`` without the rows ``points`` (sorted)."""
    if not points:
        return runs
    out = []
    for a, b in runs:
        for p in points:
            if a <= p < b:
                if a < p:
                    out.append((a, p))
                a = p + 1
        if a < b:
            out.append((a, b))
    return out


def _merge_runs(runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(runs):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def wrong_columns(
    got: RegionMap, expected: RegionMap, *, unwritten: bool = False
) -> list[tuple[int, int]]:
    """Runs ``[a, b)`` of the columns of a 2-D map where any element differs from
    ``expected``'s (never-written elements aside, as they are counted apart, unless
    ``unwritten``), from the boxes where their regions meet (a lazy reshape seen in the
    shape :func:`compare_maps` compares it in, unfragmented): in each, the two differ by
    one affine function, and a column is right where it is zero down every row.

    >>> want = RegionMap.affine((4, 4), 0, (4, 1))
    >>> got = RegionMap.cat([want.slice(1, 0, 2), want.slice(1, 3, 4), want.slice(1, 2, 3)], 1)
    >>> wrong_columns(got, want)  # columns 2 and 3 swapped
    [(2, 4)]
    >>> wrong_columns(RegionMap.affine((4, 4), 0, (1, 4)), want)  # transposed: the diagonal
    [(0, 4)]
    """
    a, b, rows = _common_view(got, expected)  # a lazy reshape is seen unfragmented
    if a is got and len(b.regions) == 1:  # a plain map against one region: all at once
        return _wrong_columns_of_one(got, b.regions[0], unwritten)
    k = len(rows)
    inner = a.shape[k:]  # the columns, split as the common shape splits them
    steps = row_major(inner)
    wrong = torch.zeros(math.prod(inner), dtype=torch.bool)
    for ra, rb, lo, hi in meetings(a.regions, b.regions):
        va, vb = ra.value_at(lo), rb.value_at(lo)
        ext = [y - x for x, y in zip(lo, hi, strict=True)]
        delta = [
            sa - sb if n > 1 else 0 for sa, sb, n in zip(ra.strides, rb.strides, ext, strict=True)
        ]
        columns = torch.zeros((1,), dtype=torch.int64)  # the box's columns, and the gap there
        gap = torch.full((1,), int(va - vb), dtype=torch.int64)
        for d in range(k, len(ext)):
            at = torch.arange(ext[d], dtype=torch.int64)
            columns = (columns[:, None] + (at + lo[d]) * steps[d - k]).reshape(-1)
            gap = (gap[:, None] + at * delta[d]).reshape(-1)
        if ra.is_constant and va == UNWRITTEN_ID:
            wrong[columns] |= unwritten
        elif any(delta[:k]):  # rows move apart: no column agrees down every row
            wrong[columns] = True
        else:
            wrong[columns] |= gap != 0
    return [(x, y + 1) for x, y in _true_spans(wrong)]


def _true_spans(flags: torch.Tensor) -> list[tuple[int, int]]:
    """First and last index of each run of true ``flags``."""
    idx = torch.nonzero(flags).reshape(-1)
    if not idx.numel():
        return []
    cut = torch.nonzero(idx[1:] - idx[:-1] > 1).reshape(-1)
    firsts = torch.cat([idx[:1], idx[cut + 1]]).tolist()
    lasts = torch.cat([idx[cut], idx[-1:]]).tolist()
    return list(zip(firsts, lasts, strict=True))


def _wrong_columns_of_one(
    got: RegionMap, want: MapRegion, unwritten: bool
) -> list[tuple[int, int]]:
    """:func:`wrong_columns` against one region covering the map (a row-parallel shard's
    expected ids), every region of ``got`` at once (a real-size one has thousands)."""
    regions = got.regions
    if not regions:
        return []
    start = torch.tensor([r.start for r in regions], dtype=torch.int64)
    stop = torch.tensor([r.stop for r in regions], dtype=torch.int64)
    strides = torch.tensor([r.strides for r in regions], dtype=torch.int64)
    va = torch.tensor([r.offset for r in regions], dtype=torch.float64).to(torch.int64)
    ext = stop - start
    vb = int(want.offset) + start[:, 0] * want.strides[0] + start[:, 1] * want.strides[1]
    down = torch.where(ext[:, 0] > 1, strides[:, 0] - want.strides[0], 0)
    across = torch.where(ext[:, 1] > 1, strides[:, 1] - want.strides[1], 0)
    never = (strides == 0).all(1) & (va == int(UNWRITTEN_ID))
    wrong = (down != 0) | (across != 0) | (va != vb)
    # Where only the step along a row differs, the two agree down at most one column: j.
    gap, safe = vb - va, torch.where(across != 0, across, 1)
    j = torch.div(gap, safe, rounding_mode="floor")
    lone = (down == 0) & (across != 0) & (j * across == gap) & (j >= 0) & (j < ext[:, 1])
    keep = (wrong & ~never) | (never & unwritten)
    runs: list[tuple[int, int]] = []
    picked = torch.nonzero(keep).reshape(-1)
    columns = torch.stack([start[picked, 1], stop[picked, 1], lone[picked].long(), j[picked]])
    for c0, c1, one, at in columns.t().tolist():
        if one:
            runs += [(x, y) for x, y in ((c0, c0 + at), (c0 + at + 1, c1)) if x < y]
        else:
            runs.append((c0, c1))
    return _merge_runs(runs)
