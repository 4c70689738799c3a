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
from syncviz.geometry import row_major
from syncviz.provenance import Region, RegionMap
from syncviz.ragged import ragged, rect_cells

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
        return merge_ranges(los, his)

    @classmethod
    def from_ids(cls, ids: torch.Tensor) -> IdSet:
        """The non-negative ids of a materialized tensor.

        >>> IdSet.from_ids(torch.tensor([5, 1, 2, -1, 3])).hi.tolist()
        [4, 6]
        """
        flat = ids.reshape(-1).to(torch.int64)
        flat = flat[flat >= 0]
        return merge_ranges([flat], [flat + 1])

    @classmethod
    def of_box(cls, start: Sequence[int], stop: Sequence[int], shape: Sequence[int]) -> IdSet:
        """The row-major ids of the box ``start <= c < stop`` of a tensor of ``shape``: one
        interval per line of its last dim (fewer where lines join).

        >>> s = IdSet.of_box((1, 0), (3, 2), (4, 4))  # rows 1-2, columns 0-1
        >>> s.lo.tolist(), s.hi.tolist()
        ([4, 8], [6, 10])
        """
        lead = list(zip(start[:-1], stop[:-1], row_major(shape)[:-1], strict=True))
        first = sum(a * st for a, _, st in lead)
        starts = _grid(first, [(z - a, st) for a, z, st in lead])
        return merge_ranges([starts + start[-1]], [starts + stop[-1]])

    @property
    def empty(self) -> bool:
        return not self.lo.numel()

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
        return self.meets_inside(lo, hi)[0]

    def meets_inside(self, lo: torch.Tensor, hi: torch.Tensor):
        """Per query interval ``[lo, hi)`` (non-empty): does it hold an id of the set, and
        does it lie inside one of the set's intervals.

        >>> s = IdSet.from_ids(torch.tensor([2, 3, 4, 9]))  # [2, 5) and [9, 10)
        >>> lo, hi = torch.tensor([0, 2, 4, 5]), torch.tensor([2, 5, 10, 9])
        >>> [x.tolist() for x in s.meets_inside(lo, hi)]
        [[False, True, True, False], [False, True, False, False]]
        """
        if self.empty:
            none = torch.zeros(lo.shape, dtype=torch.bool)
            return none, none
        first = torch.searchsorted(self.hi, lo.reshape(-1), right=True)  # first ending after lo
        past = torch.searchsorted(self.lo, hi.reshape(-1))  # intervals starting before hi
        at = first.clamp(max=len(self.lo) - 1)
        meets = past > first
        inside = meets & (self.lo[at] <= lo.reshape(-1)) & (self.hi[at] >= hi.reshape(-1))
        return meets.view(lo.shape), inside.view(lo.shape)

    def minus(self, other: IdSet) -> IdSet:
        """The ids of this set that ``other`` lacks."""
        if self.empty or other.empty:
            return self
        cuts = torch.unique(torch.cat([self.lo, self.hi, other.lo, other.hi]))
        lo, hi = cuts[:-1], cuts[1:]
        keep = self.contains(lo) & ~other.contains(lo)
        return merge_ranges([lo[keep]], [hi[keep]])

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
    return _grid(int(low), [(n, s) for s, n in dims]), run


def _grid(first: int, dims: list[tuple[int, int]]) -> torch.Tensor:
    """``first + sum(i * step)`` for every ``0 <= i < count`` of each ``(count, step)``."""
    starts = torch.tensor([first], dtype=torch.int64)
    for n, step in dims:
        starts = (starts[:, None] + torch.arange(n, dtype=torch.int64)[None, :] * step).reshape(-1)
    return starts


def merge_ranges(los: list[torch.Tensor], his: list[torch.Tensor]) -> IdSet:
    """The id set of the half-open ranges ``[lo, hi)`` given in pieces, overlapping or not.

    >>> s = merge_ranges([torch.tensor([5, 0])], [torch.tensor([9, 3])])
    >>> s.lo.tolist(), s.hi.tolist()
    ([0, 5], [3, 9])
    """
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
    ``ids``; from the map's regions, box by box along rows (or along columns where those
    run in consecutive ids), all boxes at once.

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
    by_row: list[tuple[int, ...]] = []  # (a0, a1, b0, b1, first id, outer step, inner step)
    by_col: list[tuple[int, ...]] = []
    for r in grid.regions:
        (r0, c0), (r1, c1), v, (sr, sc) = r.start, r.stop, int(r.offset), r.strides
        if r.is_constant and v < 0:
            continue  # a marker holds no id
        if sc not in (0, 1) and sr in (0, 1):  # columns run in consecutive ids: go by column
            by_col.append((c0, c1, r0, r1, v, sc, sr))
        elif sc in (0, 1):
            by_row.append((r0, r1, c0, c1, v, sr, sc))
        else:
            _meet_each(out, (r0, r1, c0, c1), v, sr, sc, (rs, cs), ids)
    _meet_lines(out, by_row, (rs, cs), ids)
    _meet_lines(out.t(), by_col, (cs, rs), ids)
    return out


LINE_CHUNK = 1 << 20  # (line, cell) pairs asked of an id set at once


def _chunks(counts: torch.Tensor):
    """Index tensors of consecutive rows whose ``counts`` sum to about ``LINE_CHUNK``."""
    chunk_of = torch.div(torch.cumsum(counts, 0) - 1, LINE_CHUNK, rounding_mode="floor")
    for c in torch.unique(chunk_of).tolist():
        yield (chunk_of == c).nonzero().view(-1)


def _meet_lines(out: torch.Tensor, boxes: list[tuple[int, ...]], cell, ids: IdSet) -> None:
    """Mark into ``out`` the cells that boxes meeting ``ids`` touch, for boxes whose ids
    along a line run one by one (inner step 1) or stay put (0), so that a line, and its
    part in each cell, is one run of ids.

    A box whose span of ids misses the set, or lies inside one of its intervals, is
    decided whole; any other is halved along its lines, down to single lines, which are
    asked cell by cell. The work follows the set's boundaries inside the box, not its
    lines."""
    if not boxes:
        return
    ca, cb = cell
    t = torch.tensor(boxes, dtype=torch.int64)  # a0, a1, b0, b1, first id, outer, inner
    lines = []
    while len(t):
        a0, a1, b0, b1, v, outer, inner = t.unbind(1)
        reach = outer * (a1 - a0 - 1)
        width = (b1 - b0) * inner + (1 - inner)  # ids one line spans
        meets, whole = ids.meets_inside(v + reach.clamp(max=0), v + reach.clamp(min=0) + width)
        _mark_boxes(out, t[whole], cell)
        part = meets & ~whole
        one = part & (a1 - a0 == 1)
        lines.append(t[one])
        big = t[part & ~one]
        mid = (big[:, 0] + big[:, 1]) // 2
        low, high = big.clone(), big.clone()
        low[:, 1] = mid
        high[:, 0] = mid
        high[:, 4] += (mid - big[:, 0]) * big[:, 5]
        t = torch.cat([low, high])
    t = torch.cat(lines)
    a0, _, b0, b1, v, _, inner = t.unbind(1)
    j0, j1 = b0 // cb, (b1 - 1) // cb + 1
    for pick in _chunks(j1 - j0):
        which, j = ragged((j1 - j0)[pick])
        box = pick[which]
        j = j0[box] + j
        seg_lo = torch.maximum(j * cb, b0[box])
        seg_hi = torch.minimum((j + 1) * cb, b1[box])
        lo = v[box] + (seg_lo - b0[box]) * inner[box]
        hit = ids.meets(lo, lo + (seg_hi - seg_lo) * inner[box] + (1 - inner[box]))
        out[a0[box][hit] // ca, j[hit]] = True


def _mark_boxes(out: torch.Tensor, t: torch.Tensor, cell) -> None:
    """Mark every cell that boxes (rows ``a0, a1, b0, b1, ...``) touch."""
    if not len(t):
        return
    ca, cb = cell
    i0, i1 = t[:, 0] // ca, (t[:, 1] - 1) // ca + 1
    j0, j1 = t[:, 2] // cb, (t[:, 3] - 1) // cb + 1
    _, i, j = rect_cells(i0, i1, j0, j1)
    out[i, j] = True


def _meet_each(out, box, v, s_outer, s_inner, cell, ids: IdSet) -> None:
    """Mark into ``out`` the cells of one region, stepping by more than one id both
    ways, that meet ``ids``: every element read."""
    a0, a1, b0, b1 = box
    ca, cb = cell
    if (a1 - a0) * (b1 - b0) > MAX_INTERVALS:
        raise SyncvizError(
            f"a map region of {(a1 - a0) * (b1 - b0)} ids steps by {s_inner} both ways",
            fix="use the materialized provenance (--scaled) for this parameter",
        )
    lines = torch.arange(a0, a1, dtype=torch.int64)
    k = torch.arange(b0, b1, dtype=torch.int64)
    each = ids.contains(v + (lines - a0)[:, None] * s_outer + (k - b0)[None, :] * s_inner)
    rows, cols = each.nonzero().unbind(1)
    out[lines[rows] // ca, k[cols] // cb] = True
