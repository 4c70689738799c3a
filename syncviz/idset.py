"""The ids a compact map holds, as a set of sorted disjoint intervals, and questions on it.

A replayed step of a symbolic run is a :class:`~syncviz.provenance.RegionMap`
of ids. Which blocks it carries, which trainer cells it read and which vLLM
cells hold its data are questions on the *set* of its ids, whatever their
order: an :class:`IdSet` answers them at the cost of the map's runs of
consecutive ids (a row of a weight, a whole head), never of its elements.

>>> from syncviz.provenance import RegionMap
>>> m = RegionMap.affine((4, 6), 0, (6, 1)).slice(1, 2, 4)  # columns 2-3 of ids 0..23
>>> s = IdSet.of([m])
>>> s.lo.tolist(), s.hi.tolist()
([2, 8, 14, 20], [4, 10, 16, 22])
>>> s.contains(torch.tensor([3, 4, 20])).tolist()
[True, False, True]
>>> s.minus(IdSet.of([m.slice(0, 0, 2)])).lo.tolist()
[14, 20]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from syncviz.errors import SyncvizError
from syncviz.provenance import Region, RegionMap

MAX_INTERVALS = 1 << 24  # runs of consecutive ids one set may hold before it is refused


class IdSet:
    """Non-negative ids as sorted, disjoint, non-touching half-open intervals ``[lo, hi)``."""

    __slots__ = ("hi", "lo")

    def __init__(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        self.lo, self.hi = lo, hi

    @classmethod
    def of(cls, maps: Sequence[RegionMap]) -> IdSet:
        """The non-negative ids of ``maps`` (markers below 0 left out)."""
        los, his = [], []
        for m in maps:
            for r in m.regions:
                got = _runs(r)
                if got is not None:
                    los.append(got[0])
                    his.append(got[0] + got[1])
        return _merged(los, his)

    @classmethod
    def from_ids(cls, ids: torch.Tensor) -> IdSet:
        """The non-negative ids of a materialized tensor.

        >>> IdSet.from_ids(torch.tensor([5, 1, 2, -1, 3])).hi.tolist()
        [4, 6]
        """
        flat = ids.reshape(-1).to(torch.int64)
        flat = flat[flat >= 0]
        return _merged([flat], [flat + 1])

    @property
    def empty(self) -> bool:
        return not self.lo.numel()

    @property
    def count(self) -> int:
        """How many ids it holds."""
        return int((self.hi - self.lo).sum())

    def contains(self, points: torch.Tensor) -> torch.Tensor:
        """Per id of ``points`` (any shape): is it in the set."""
        x = points.to(torch.int64)
        if self.empty:
            return torch.zeros(x.shape, dtype=torch.bool)
        i = torch.searchsorted(self.lo, x.reshape(-1), right=True) - 1
        inside = (i >= 0) & (x.reshape(-1) < self.hi[i.clamp(min=0)])
        return inside.reshape(x.shape)

    def meets(self, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """Per query interval ``[lo, hi)`` (non-empty): does it hold an id of the set."""
        if self.empty:
            return torch.zeros(lo.shape, dtype=torch.bool)
        flat_lo, flat_hi = lo.reshape(-1), hi.reshape(-1)
        j = torch.searchsorted(self.hi, flat_lo, right=True)  # first interval ending after lo
        found = j < self.lo.numel()
        hit = found & (self.lo[j.clamp(max=self.lo.numel() - 1)] < flat_hi)
        return hit.reshape(lo.shape)

    def minus(self, other: IdSet) -> IdSet:
        """The ids of this set that ``other`` lacks."""
        if self.empty or other.empty:
            return self
        cuts = torch.unique(torch.cat([self.lo, self.hi, other.lo, other.hi]))
        lo, hi = cuts[:-1], cuts[1:]
        keep = self.contains(lo) & ~other.contains(lo)
        return _merged([lo[keep]], [hi[keep]])

    def covers(self, other: IdSet) -> bool:
        """Every id of ``other`` is in this set."""
        return other.minus(self).empty


def _runs(r: Region) -> tuple[torch.Tensor, int] | None:
    """The ids of one region as runs of consecutive ids: their starts, and one length."""
    if r.numel == 0:
        return None
    dims = [(abs(s), n) for s, n in zip(r.strides, r.extents, strict=True) if s and n > 1]
    low = r.offset + sum(s * (n - 1) for s, n in zip(r.strides, r.extents, strict=True) if s < 0)
    if not dims:
        if r.offset < 0:
            return None  # a marker: padding, unwritten, another parameter's
        return torch.tensor([int(r.offset)], dtype=torch.int64), 1
    high = r.offset + sum(s * (n - 1) for s, n in zip(r.strides, r.extents, strict=True) if s > 0)
    if high < 0:
        return None  # markers only (a run of padding next to unwritten)
    if low < 0 and r.numel <= MAX_INTERVALS:  # markers and ids in one region: read it
        values = r.values().reshape(-1).to(torch.int64)
        values = values[values >= 0]
        return values, 1
    if low < 0:
        raise SyncvizError(
            f"a map region starting at id {r.offset} runs below 0",
            fix="report a bug: provenance ids are never negative",
        )
    dims.sort()
    run = 1
    while dims and dims[0][0] == run:  # the innermost dims that step by one id in a row
        run *= dims.pop(0)[1]
    count = math.prod(n for _, n in dims)
    if count > MAX_INTERVALS:
        raise SyncvizError(
            f"a map region of {r.numel} ids breaks into {count} runs (limit {MAX_INTERVALS})",
            fix="use the materialized provenance (--scaled) for this parameter",
        )
    starts = torch.tensor([int(low)], dtype=torch.int64)
    for s, n in dims:
        starts = (starts[:, None] + torch.arange(n, dtype=torch.int64)[None, :] * s).reshape(-1)
    return starts, run


def _merged(los: list[torch.Tensor], his: list[torch.Tensor]) -> IdSet:
    if not los:
        empty = torch.zeros(0, dtype=torch.int64)
        return IdSet(empty, empty.clone())
    lo, hi = torch.cat(los), torch.cat(his)
    if not lo.numel():
        return IdSet(lo, hi)
    lo, order = torch.sort(lo)
    hi = hi[order]
    reach = torch.cummax(hi, 0).values
    new = torch.ones(lo.shape, dtype=torch.bool)
    new[1:] = lo[1:] > reach[:-1]  # a gap before it: a new interval starts
    group = torch.cumsum(new, 0) - 1
    out_hi = torch.zeros(int(group[-1]) + 1, dtype=torch.int64)
    out_hi.scatter_reduce_(0, group, hi, reduce="amax", include_self=False)
    return IdSet(lo[new], out_hi)


def cells_meeting(grid: RegionMap, cell: tuple[int, int], ids: IdSet) -> torch.Tensor:
    """Per cell (``cell`` elements) of a 2-D map: does any of its elements hold an id of
    ``ids``; from the map's regions, row by row (or column by column) of each region.

    >>> m = RegionMap.affine((4, 6), 0, (6, 1))
    >>> cells_meeting(m, (2, 3), IdSet.from_ids(torch.tensor([4, 23]))).tolist()
    [[False, True], [False, True]]
    """
    rows, cols = grid.shape
    rs, cs = cell
    nr, nc = math.ceil(rows / rs), math.ceil(cols / cs)
    out = torch.zeros((nr, nc), dtype=torch.bool)
    if ids.empty:
        return out
    for r in grid.regions:
        (r0, c0), (r1, c1), v, (sr, sc) = r.start, r.stop, int(r.offset), r.strides
        if r.is_constant:
            if v >= 0 and bool(ids.contains(torch.tensor([v]))[0]):
                out[r0 // rs : (r1 - 1) // rs + 1, c0 // cs : (c1 - 1) // cs + 1] = True
            continue
        if sc not in (0, 1) and sr in (0, 1):  # columns run in consecutive ids: go by column
            _meet(out.t(), (c0, c1, r0, r1), v, sc, sr, (cs, rs), ids)
        else:
            _meet(out, (r0, r1, c0, c1), v, sr, sc, (rs, cs), ids)
    return out


def _meet(out, box, v, s_outer, s_inner, cell, ids: IdSet) -> None:
    """Mark into ``out`` the cells of one region that meet ``ids``: per outer line of the
    box and per cell along it, the ids there (one run when ``s_inner`` is 0 or 1, else
    every element)."""
    a0, a1, b0, b1 = box
    ca, cb = cell
    lines = torch.arange(a0, a1, dtype=torch.int64)
    j = torch.arange(b0 // cb, (b1 - 1) // cb + 1, dtype=torch.int64)
    seg_lo = torch.clamp(j * cb, min=b0)
    seg_hi = torch.clamp((j + 1) * cb, max=b1)
    base = v + (lines - a0)[:, None] * s_outer
    if s_inner in (0, 1):
        lo = base + (seg_lo - b0)[None, :] * s_inner
        hi = lo + (seg_hi - seg_lo)[None, :] * s_inner + (1 - s_inner)
        hit = ids.meets(lo, hi)
    else:
        if (a1 - a0) * (b1 - b0) > MAX_INTERVALS:
            raise SyncvizError(
                f"a map region of {(a1 - a0) * (b1 - b0)} ids steps by {s_inner} both ways",
                fix="use the materialized provenance (--scaled) for this parameter",
            )
        k = torch.arange(b0, b1, dtype=torch.int64)
        each = ids.contains(base + (k - b0)[None, :] * s_inner)  # [lines, elements]
        cols = (k // cb - j[0]).expand(a1 - a0, -1)
        hit = (
            torch.zeros((a1 - a0, j.numel()), dtype=torch.int64).scatter_add_(
                1, cols, each.to(torch.int64)
            )
            > 0
        )
    marked = torch.zeros((out.shape[0], j.numel()), dtype=torch.int64)
    marked.index_add_(0, lines // ca, hit.to(torch.int64))
    out[:, j[0] : j[-1] + 1] |= marked > 0
