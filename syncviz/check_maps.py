"""Compare a symbolic destination tensor with the oracle's, map against map.

Both sides are :class:`~syncviz.provenance.RegionMap` of model-wide ids, so the
comparison overlays their regions (a handful each) and never reads an element:
a whole model at real sizes is compared in milliseconds. Only the rows that are
wrong are materialized, to describe them in the checker's usual words.

>>> from syncviz.provenance import RegionMap
>>> want = RegionMap.affine((4, 3), 0, (3, 1))
>>> got = RegionMap.cat([want.slice(0, 2, 4), want.slice(0, 0, 2)], 0)  # halves swapped
>>> diff = compare_maps(got, want)
>>> diff.wrong, diff.unwritten, diff.wrong_rows
(12, 0, [(0, 4)])
>>> compare_maps(want, want).wrong
0
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from syncviz.provenance import Region, RegionMap
from syncviz.run.values import UNWRITTEN_ID


@dataclass
class MapDiff:
    """Where two maps differ: elements never written, elements wrong, wrong dim-0 runs.

    ``wrong`` counts the elements of wrong rows in each differing block (exact when
    the blocks differ along dim 0 only, the usual case; an upper bound otherwise).
    ``id_ranges`` are the (lowest, highest) ids held by the wrong blocks.
    """

    unwritten: int = 0
    wrong: int = 0
    wrong_rows: list[tuple[int, int]] = field(default_factory=list)
    id_ranges: list[tuple[float, float]] = field(default_factory=list)


def compare_maps(actual: RegionMap, expected: RegionMap) -> MapDiff:
    """Overlay ``actual`` on ``expected`` (same shape) and collect the differences."""
    diff = MapDiff()
    rows: list[tuple[int, int]] = []
    for a in actual.regions:
        for b in expected.regions:
            lo = tuple(max(x, y) for x, y in zip(a.start, b.start, strict=True))
            hi = tuple(min(x, y) for x, y in zip(a.stop, b.stop, strict=True))
            if any(x >= y for x, y in zip(lo, hi, strict=True)):
                continue
            _compare_piece(a, b, lo, hi, diff, rows)
    diff.wrong_rows = _merge_runs(rows)
    return diff


def _compare_piece(a: Region, b: Region, lo, hi, diff: MapDiff, rows: list) -> None:
    extents = [y - x for x, y in zip(lo, hi, strict=True)]
    numel = math.prod(extents)
    va, vb = a.value_at(lo), b.value_at(lo)
    if a.is_constant and va == UNWRITTEN_ID:
        diff.unwritten += numel
        return
    moving = [d for d, n in enumerate(extents) if n > 1]
    if va == vb and all(a.strides[d] == b.strides[d] for d in moving):
        return
    if not lo:  # a 0-d tensor
        diff.wrong += 1
        rows.append((0, 1))
        return
    n0, per_row = extents[0], numel // extents[0]
    wrong_rows = [(lo[0], hi[0])]
    if all(a.strides[d] == b.strides[d] for d in moving if d > 0):
        # Rows differ by (va - vb) + r * (sa0 - sb0): at most one row agrees entirely.
        step = a.strides[0] - b.strides[0] if n0 > 1 else 0
        if step:
            k, rem = divmod(vb - va, step)
            if not rem and 0 <= k < n0:
                wrong_rows = [(lo[0], lo[0] + int(k)), (lo[0] + int(k) + 1, hi[0])]
    for r0, r1 in wrong_rows:
        if r0 < r1:
            rows.append((r0, r1))
            diff.wrong += (r1 - r0) * per_row
    if not a.is_constant or va >= 0:
        low = va + sum(min(0, a.strides[d] * (extents[d] - 1)) for d in moving)
        high = va + sum(max(0, a.strides[d] * (extents[d] - 1)) for d in moving)
        diff.id_ranges.append((low, high))


def _merge_runs(runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(runs):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out
