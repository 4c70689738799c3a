"""Piecewise-affine maps: the values of a tensor as a few boxes, each an affine function.

A :class:`RegionMap` describes a tensor of shape ``shape`` as regions that
partition it. A region is a box ``start <= coords < stop`` of the tensor whose
value at ``coords`` is ``offset + sum((coords - start) * strides)``. Provenance
ids of a trainer shard are one region (row-major strides of the global tensor,
restricted to the shard's box); padding, "unwritten" and zeros are regions with
all strides 0. Every data-moving op (slicing, select, permute, expand, cat,
reshape, index_select, repeat) maps regions to regions without looking at a
single element, so real sizes cost what their structure costs, not their numel.

>>> m = RegionMap.affine((4, 6), offset=0, strides=(6, 1))  # ids of a [4, 6] tensor
>>> cols = m.slice(1, 2, 4)  # columns 2-3
>>> cols.materialize().tolist()
[[2.0, 3.0], [8.0, 9.0], [14.0, 15.0], [20.0, 21.0]]
>>> cols.permute((1, 0)).reshape((8,)).materialize().tolist()
[2.0, 8.0, 14.0, 20.0, 3.0, 9.0, 15.0, 21.0]
>>> len(RegionMap.cat([cols, m.slice(1, 4, 6)], 1).regions)  # columns 2-5 again: one box
1
"""

from __future__ import annotations

import math
import operator
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NamedTuple

import torch

from syncviz.errors import SyncvizError
from syncviz.geometry import unravel
from syncviz.provenance.collector import gc_paused
from syncviz.provenance.periodic import period_candidates, stack_rows

# A map with more regions than this has fragmented: callers materialize or give up.
MAX_REGIONS = 65_536
# A flat map joined of this many regions or more is tried as rows of a period (_folded):
# the first FOLD_TRIES region starts are tried, and one that folds FOLD_GAIN times is kept.
FOLD_MIN, FOLD_TRIES, FOLD_GAIN = 64, 8, 8


class Region(NamedTuple):
    """Box ``start <= c < stop`` whose value at ``c`` is ``offset + sum((c - start) * strides)``.

    Strides of dims with extent 1 are kept at 0, so equal regions compare equal. A named
    tuple (immutable, compared and hashed by its fields): a real-size map is made of many
    thousands, and a tuple is made in half the time of a frozen dataclass.

    >>> Region((0, 2), (2, 4), 2, (6, 1)).numel
    4
    """

    start: tuple[int, ...]
    stop: tuple[int, ...]
    offset: float
    strides: tuple[int, ...]

    @property
    def extents(self) -> tuple[int, ...]:
        return tuple(map(operator.sub, self.stop, self.start))

    @property
    def numel(self) -> int:
        return math.prod(self.extents)

    def value_at(self, coords: Sequence[int]) -> float:
        """The value at ``coords`` (inside the box)."""
        steps = zip(coords, self.start, self.strides, strict=True)
        return self.offset + sum((c - a) * s for c, a, s in steps)

    @property
    def is_constant(self) -> bool:
        return not any(self.strides)

    def values(self) -> torch.Tensor:
        """This region's values as a float64 tensor of its extents."""
        out = torch.full(self.extents, float(self.offset), dtype=torch.float64)
        for d, (n, s) in enumerate(zip(self.extents, self.strides, strict=True)):
            if s and n > 1:
                shape = [1] * len(self.extents)
                shape[d] = n
                out = out + (torch.arange(n, dtype=torch.float64) * s).view(shape)
        return out


def canonical_region(start, stop, offset, strides) -> Region:
    """A region with the strides of extent-1 dims zeroed (the canonical form).

    >>> canonical_region((0, 2), (4, 3), 10, (8, 1)).strides
    (8, 0)
    """
    if len(strides) == 2:  # the common case, spelled out: real-size maps make many thousands
        (a0, a1), (b0, b1), (s0, s1) = start, stop, strides
        strides = (s0 if b0 - a0 > 1 else 0, s1 if b1 - a1 > 1 else 0)
        return Region(tuple(start), tuple(stop), offset, strides)
    strides = tuple(s if b - a > 1 else 0 for a, b, s in zip(start, stop, strides, strict=True))
    return Region(tuple(start), tuple(stop), offset, strides)


class RegionMap:
    """The values of a tensor of ``shape`` as regions that partition it (see module doc).

    >>> RegionMap.constant((2, 3), -2.0).materialize().tolist()
    [[-2.0, -2.0, -2.0], [-2.0, -2.0, -2.0]]
    """

    __slots__ = ("regions", "shape")

    def __init__(self, shape: Sequence[int], regions: Sequence[Region], *, merge=True) -> None:
        self.shape = tuple(map(int, shape))
        self.regions: tuple[Region, ...] = tuple(_coalesce(regions) if merge else regions)

    # ------------------------------------------------------------ construction

    @classmethod
    def affine(cls, shape: Sequence[int], offset: float, strides: Sequence[int]) -> RegionMap:
        """One region over the whole of ``shape``."""
        shape = tuple(shape)
        if math.prod(shape) == 0:
            return cls(shape, [])
        return cls(shape, [canonical_region((0,) * len(shape), shape, offset, tuple(strides))])

    @classmethod
    def constant(cls, shape: Sequence[int], value: float) -> RegionMap:
        return cls.affine(shape, value, (0,) * len(shape))

    @classmethod
    def from_values(cls, values: torch.Tensor) -> RegionMap:
        """The compact form of a real tensor of values (runs along its last dim).

        >>> RegionMap.from_values(torch.tensor([[0.0, 1, 2], [3, 4, 5]])).regions
        (Region(start=(0, 0), stop=(2, 3), offset=0.0, strides=(3, 1)),)
        """
        shape = tuple(values.shape)
        if values.dim() == 0:
            return cls.constant((), float(values))
        rows = values.detach().to(torch.float64).reshape(-1, shape[-1]) if values.numel() else None
        if rows is None:
            return cls(shape, [])
        outer = shape[:-1]
        regions = []
        flat = rows.tolist()
        for i, row in enumerate(flat):
            coords = unravel(i, outer)
            j = 0
            while j < len(row):
                k = j + 1
                step = row[k] - row[j] if k < len(row) else 0.0
                if step != int(step):
                    step = 0.0
                while k < len(row) and row[k] - row[k - 1] == step:
                    k += 1
                start = (*coords, j)
                stop = (*(c + 1 for c in coords), k)
                regions.append(
                    canonical_region(start, stop, row[j], (0,) * len(outer) + (int(step),))
                )
                j = k
        return cls(shape, regions)

    # ------------------------------------------------------------ reading

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def materialize(self) -> torch.Tensor:
        """Every value, as a float64 tensor of ``shape`` (allocates numel elements)."""
        out = torch.empty(self.shape, dtype=torch.float64)
        for r in self.regions:
            out[tuple(slice(a, b) for a, b in zip(r.start, r.stop, strict=True))] = r.values()
        return out

    def ids(self) -> torch.Tensor:
        """Every value as an int64 tensor of ``shape``: the ids a map of ids holds (and
        its negative markers), materialized.

        >>> RegionMap.affine((2, 2), 4, (2, 1)).ids().tolist()
        [[4, 5], [6, 7]]
        """
        return self.materialize().to(torch.int64)

    def shifted(self, k: int) -> RegionMap:
        """Every id (a value >= 0) moved by ``k``; negative values (markers) kept: a
        parameter's local ids made model-wide (``k`` its first id).

        >>> m = RegionMap.cat([RegionMap.affine((2,), 0, (1,)), RegionMap.constant((1,), -1.0)], 0)
        >>> m.shifted(100).materialize().tolist()
        [100.0, 101.0, -1.0]
        """
        if not k:
            return self
        regions: list[Region] = []
        for r in self.regions:
            lows = sum(min(0, s * (n - 1)) for s, n in zip(r.strides, r.extents, strict=True))
            if r.offset + lows >= 0:
                regions.append(Region(r.start, r.stop, r.offset + k, r.strides))
            elif r.is_constant:
                regions.append(r)
            else:  # a marker joined to ids (a 1-wide box): element by element
                values = r.values()
                values = torch.where(values >= 0, values + k, values)
                for p in RegionMap.from_values(values).regions:
                    start = tuple(map(operator.add, p.start, r.start))
                    stop = tuple(map(operator.add, p.stop, r.start))
                    regions.append(Region(start, stop, p.offset, p.strides))
        return RegionMap(self.shape, regions, merge=False)

    @property
    def size_hint(self) -> int:
        """How many regions describe this map (without building a lazy form's regions)."""
        return len(self.regions)

    @property
    def segments(self) -> tuple[RegionMap, ...]:
        """The maps laid end to end (row-major) that make this one: itself here, a lazy
        reshape's parts in :class:`ReshapedMap` (read without building its regions).

        >>> m = RegionMap.affine((4, 6), 0, (6, 1))
        >>> m.segments == (m,), len(m.slice(1, 2, 4).reshape((8,)).segments)
        (True, 1)
        """
        return (self,)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RegionMap):
            return NotImplemented
        return self.shape == other.shape and sorted(self.regions, key=_key) == sorted(
            other.regions, key=_key
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RegionMap(shape={self.shape}, regions={len(self.regions)})"

    # ------------------------------------------------------------ view-like ops

    def take(self, dim: int, start: int, step: int, count: int) -> RegionMap:
        """Indices ``start, start + step, ...`` (``count`` of them) along ``dim``; any step."""
        shape = list(self.shape)
        shape[dim] = count
        out = []
        for r in self.regions:
            a, b = r.start[dim], r.stop[dim]
            if count == 0:
                break
            if step == 0:
                if not a <= start < b:
                    continue
                j0, j1, new_stride = 0, count, 0
            elif step > 0:
                j0 = max(0, -((start - a) // step))  # ceil((a - start) / step)
                j1 = min(count, -((start - b) // step))
                new_stride = r.strides[dim] * step
            else:
                j0 = max(0, (start - b) // -step + 1)
                j1 = min(count, (start - a) // -step + 1)
                new_stride = r.strides[dim] * step
            if j0 >= j1:
                continue
            first = start + j0 * step
            offset = r.offset + (first - a) * r.strides[dim]
            out.append(
                canonical_region(
                    _put(r.start, dim, j0),
                    _put(r.stop, dim, j1),
                    offset,
                    _put(r.strides, dim, new_stride),
                )
            )
        return RegionMap(shape, out)

    def slice(self, dim: int, start: int, stop: int, step: int = 1) -> RegionMap:
        """``[start:stop:step]`` along ``dim`` (bounds already clamped by the caller)."""
        return self.take(dim, start, step, len(range(start, stop, step)))

    def select(self, dim: int, index: int) -> RegionMap:
        return self.take(dim, index, 1, 1).squeeze(dim)

    def squeeze(self, dim: int) -> RegionMap:
        """Drop ``dim`` (its size must be 1)."""
        shape = self.shape[:dim] + self.shape[dim + 1 :]
        regions = [
            Region(_drop(r.start, dim), _drop(r.stop, dim), r.offset, _drop(r.strides, dim))
            for r in self.regions
        ]
        return RegionMap(shape, regions, merge=False)

    def unsqueeze(self, dim: int) -> RegionMap:
        shape = (*self.shape[:dim], 1, *self.shape[dim:])
        regions = [
            Region(_ins(r.start, dim, 0), _ins(r.stop, dim, 1), r.offset, _ins(r.strides, dim, 0))
            for r in self.regions
        ]
        return RegionMap(shape, regions, merge=False)

    def permute(self, dims: Sequence[int]) -> RegionMap:
        shape = tuple(self.shape[d] for d in dims)
        regions = [
            Region(
                tuple(r.start[d] for d in dims),
                tuple(r.stop[d] for d in dims),
                r.offset,
                tuple(r.strides[d] for d in dims),
            )
            for r in self.regions
        ]
        return RegionMap(shape, regions)

    def expand(self, shape: Sequence[int]) -> RegionMap:
        """Broadcast to ``shape`` (new leading dims, size-1 dims repeated with stride 0)."""
        shape = tuple(shape)
        if shape == self.shape:
            return self
        m: RegionMap = self
        while len(m.shape) < len(shape):
            m = m.unsqueeze(0)
        regions = []
        for r in m.regions:
            start, stop = list(r.start), list(r.stop)
            for d, n in enumerate(shape):
                if m.shape[d] == 1 and n != 1:
                    start[d], stop[d] = 0, n
            regions.append(Region(tuple(start), tuple(stop), r.offset, r.strides))
        return RegionMap(shape, regions)

    @staticmethod
    def cat(maps: Sequence[RegionMap], dim: int) -> RegionMap:
        """Maps laid end to end along ``dim`` (all other sizes equal); a flat result of
        many regions that repeat with a period is kept as rows of it (:func:`_folded`)."""
        if dim == 0 and any(isinstance(m, ReshapedMap) for m in maps):
            shape = (sum(m.shape[0] for m in maps), *maps[0].shape[1:])
            return ReshapedMap(maps, shape).simplified()
        joined = _joined(maps, dim)
        if len(joined.shape) == 1 and len(joined.regions) >= FOLD_MIN:
            return _folded(joined)
        return joined

    def repeat(self, repeats: Sequence[int]) -> RegionMap:
        """``Tensor.repeat``: tile the map ``repeats[i]`` times along dim ``i``."""
        m: RegionMap = self
        while len(m.shape) < len(repeats):
            m = m.unsqueeze(0)
        for d, times in enumerate(repeats):
            if times != 1:
                m = RegionMap.cat([m] * times, d)
        return m

    def index_select(self, dim: int, index: Sequence[int]) -> RegionMap:
        """Rows ``index`` along ``dim``; runs of evenly spaced indices stay one region each."""
        index = [i + self.shape[dim] if i < 0 else i for i in index]
        parts, i = [], 0
        while i < len(index):
            j = i + 1
            step = index[j] - index[i] if j < len(index) else 1
            while j < len(index) and index[j] - index[j - 1] == step:
                j += 1
            parts.append(self.take(dim, index[i], step, j - i))
            i = j
        if not parts:
            return self.take(dim, 0, 1, 0)
        return RegionMap.cat(parts, dim)

    def reshape(self, shape: Sequence[int]) -> RegionMap:
        """The same values in row-major order, seen with another shape.

        Dims are grouped as ``torch.view`` groups them; each group is merged to
        one dim and split again. A region that does not span whole rows of a
        merge splits into one region per row (this is where maps fragment).
        """
        shape = tuple(shape)
        if shape == self.shape:
            return self
        if _unit_dims_only(self.shape, shape) and type(self) is RegionMap:
            return self._reshape_units(shape)
        try:
            return self._reshape_eager(shape, limit=4 * self.size_hint + 16)
        except _TooMany:  # kept lazy: slicing rows or viewing it back costs nothing
            return ReshapedMap((self,), shape)

    def _reshape_eager(self, shape: tuple[int, ...], limit: int | None = None) -> RegionMap:
        if math.prod(shape) != self.numel:
            raise SyncvizError(f"cannot reshape {self.shape} to {shape}", fix="keep numel equal")
        if shape == self.shape:
            return self
        if self.numel == 0:
            return RegionMap(shape, [])
        m: RegionMap = self
        # Work group by group from the last dim backwards so earlier dims keep their index.
        groups = _groups(self.shape, shape)
        for (o0, o1), (n0, n1) in reversed(groups):
            for _ in range(o1 - o0 - 1):
                m = m._merge(o0, limit)
            if o1 == o0:  # a new size-1 dim
                m = m.unsqueeze(o0)
                continue
            if n1 == n0:  # an old size-1 dim that goes away
                m = m.squeeze(o0)
                continue
            for k in range(n0, n1 - 1):
                rest = math.prod(shape[k + 1 : n1])
                m = m._split(o0 + k - n0, shape[k], rest)
                if limit is not None and len(m.regions) > limit:
                    raise _TooMany
        return RegionMap(shape, m.regions)

    def _reshape_units(self, shape: tuple[int, ...]) -> RegionMap:
        """``shape`` differs from this map's only by size-1 dims: each region keeps its
        coordinates along the other dims (what :meth:`_reshape_eager` gives, made directly:
        an oracle's map is built of many thousands of small boxes viewed flat this way)."""
        keep = [d for d, n in enumerate(self.shape) if n != 1]
        put = [d for d, n in enumerate(shape) if n != 1]
        zero, one = (0,) * len(shape), (1,) * len(shape)
        regions = []
        for r in self.regions:
            start, stop, strides = list(zero), list(one), list(zero)
            for a, b in zip(keep, put, strict=True):
                start[b], stop[b], strides[b] = r.start[a], r.stop[a], r.strides[a]
            regions.append(Region(tuple(start), tuple(stop), r.offset, tuple(strides)))
        return RegionMap(shape, regions)

    def _merge(self, d: int, limit: int | None = None) -> RegionMap:
        """Merge dims ``d`` and ``d + 1`` into one."""
        big = self.shape[d + 1]
        shape = (*self.shape[:d], self.shape[d] * big, *self.shape[d + 2 :])
        out = []
        for r in self.regions:
            (a0, b0), (a1, b1) = (r.start[d], r.stop[d]), (r.start[d + 1], r.stop[d + 1])
            sa, sb = r.strides[d], r.strides[d + 1]
            full = a1 == 0 and b1 == big
            if b0 - a0 == 1:  # one row: its columns sit side by side
                lo, hi, stride = a0 * big + a1, a0 * big + b1, sb
            elif full and (big == 1 or sa == big * sb):  # whole rows that continue each other
                lo, hi, stride = a0 * big, b0 * big, sb if big > 1 else sa
            else:
                lo = hi = stride = None
            if lo is not None:
                out.append(
                    canonical_region(
                        (*r.start[:d], lo, *r.start[d + 2 :]),
                        (*r.stop[:d], hi, *r.stop[d + 2 :]),
                        r.offset,
                        (*r.strides[:d], stride, *r.strides[d + 2 :]),
                    )
                )
                continue
            if limit is not None and len(out) + b0 - a0 > limit:
                raise _TooMany
            # One region per row of the merge, made directly (at real sizes thousands): the
            # other dims keep their (canonical) strides, the merged one has extent b1 - a1.
            head, tail = r.start[:d], r.start[d + 2 :]
            head_stop, tail_stop = r.stop[:d], r.stop[d + 2 :]
            strides = (*r.strides[:d], sb if b1 - a1 > 1 else 0, *r.strides[d + 2 :])
            out.extend(
                Region(
                    (*head, k * big + a1, *tail),
                    (*head_stop, k * big + b1, *tail_stop),
                    r.offset + (k - a0) * sa,
                    strides,
                )
                for k in range(a0, b0)
            )
        return RegionMap(shape, out, merge=False)

    def _split(self, d: int, outer: int, inner: int) -> RegionMap:
        """Split dim ``d`` (size ``outer * inner``) into ``(outer, inner)``."""
        shape = (*self.shape[:d], outer, inner, *self.shape[d + 1 :])
        out = []
        for r in self.regions:
            lo, hi, s = r.start[d], r.stop[d], r.strides[d]

            def piece(row0, row1, col0, col1, offset, r=r, s=s):
                out.append(
                    canonical_region(
                        (*r.start[:d], row0, col0, *r.start[d + 1 :]),
                        (*r.stop[:d], row1, col1, *r.stop[d + 1 :]),
                        offset,
                        (*r.strides[:d], inner * s, s, *r.strides[d + 1 :]),
                    )
                )

            pos = lo
            if pos % inner:  # partial first row
                row = pos // inner
                end = min(hi, (row + 1) * inner)
                piece(row, row + 1, pos % inner, end - row * inner, r.offset)
                pos = end
            full_rows = (hi - pos) // inner
            if full_rows:
                row = pos // inner
                piece(row, row + full_rows, 0, inner, r.offset + (pos - lo) * s)
                pos += full_rows * inner
            if pos < hi:  # partial last row
                row = pos // inner
                piece(row, row + 1, 0, hi - pos, r.offset + (pos - lo) * s)
        return RegionMap(shape, out, merge=False)

    # ------------------------------------------------------------ writing

    def write(self, box: tuple[tuple[int, ...], tuple[int, ...]], regions: Sequence[Region]):
        """This map with the box ``(start, stop)`` replaced by ``regions`` (own coords)."""
        lo, hi = box
        kept: list[Region] = []
        for r in self.regions:
            if any(
                a >= h or b <= low for a, b, low, h in zip(r.start, r.stop, lo, hi, strict=True)
            ):
                kept.append(r)
                continue
            kept.extend(_subtract(r, lo, hi))
        return RegionMap(self.shape, [*kept, *regions])


def runs(x: torch.Tensor, joins: torch.Tensor) -> tuple[list[int], list[int], list[float]]:
    """Cut 1-d ``x`` into runs of one step each: starts, stops and steps.

    ``joins[k]`` says whether elements ``k`` and ``k + 1`` may share a run at all;
    a run takes every next element while the step stays the same (greedy, so the
    cuts are those a reader would make). Only the runs are visited in Python.

    >>> runs(torch.tensor([0.0, 1, 2, 7, 7, -1]), torch.ones(5, dtype=torch.bool))
    ([0, 3, 5], [3, 5, 6], [1.0, 0.0, 0.0])
    """
    n = x.numel()
    if n == 0:
        return [], [], []
    d = x[1:] - x[:-1]
    same = joins[:-1] & joins[1:] & (d[:-1] == d[1:])
    ends = torch.nonzero(~same).flatten().tolist() + ([n - 2] if n > 1 else [])
    joinable = joins[torch.tensor(ends, dtype=torch.long)].tolist() if n > 1 else []
    starts, stops = [], []
    j, b = 0, 0
    while j < n:
        while b < len(ends) and ends[b] < j:
            b += 1
        stop = ends[b] + 2 if b < len(ends) and joinable[b] else j + 1
        starts.append(j)
        stops.append(stop)
        j = stop
    first = torch.tensor(starts, dtype=torch.long)
    steps = d[first.clamp(max=n - 2)] if n > 1 else torch.zeros(1, dtype=x.dtype)
    long = torch.tensor(stops, dtype=torch.long) - first > 1
    return starts, stops, torch.where(long, steps, 0).tolist()


def ids_map(values: torch.Tensor) -> RegionMap:
    """A real tensor of ids as a map: runs of one step in row-major order, cut into boxes.

    How buffers that had to be real (Ray's collectives, random weights) join the
    result, whose tensors are maps only.

    >>> ids_map(torch.tensor([[4.0, 5, 6], [7, -2, -2]])).materialize().tolist()
    [[4.0, 5.0, 6.0], [7.0, -2.0, -2.0]]
    """
    shape = tuple(values.shape)
    x = values.detach().reshape(-1).to(torch.float64)
    d = x[1:] - x[:-1]
    starts, stops, steps = runs(x, torch.isfinite(d) & (d == d.round()))
    offsets = x[torch.tensor(starts, dtype=torch.long)].tolist() if starts else []
    regions = [
        Region((a,), (b,), v, (int(s),))
        for a, b, v, s in zip(starts, stops, offsets, steps, strict=True)
    ]
    return RegionMap((x.numel(),), regions).reshape(shape)


class _TooMany(Exception):
    """A reshape would need more regions than its caller allows."""


class ReshapedMap(RegionMap):
    """Maps of any shape laid end to end in row-major order, then seen as ``shape``.

    Some views fragment a box: flattening a block of columns costs one region per
    row, and so does viewing two stacked column slices ``[2, h, w]`` as ``[h, 2w]``.
    Kept lazy, they cost one segment each, and a synchronizer's usual next steps
    (cutting rows or flat ranges at tensor boundaries, cat along dim 0, viewing a
    piece back to its shape) stay exact and cheap. Any other op reads the eager
    form (:attr:`regions`).

    >>> cols = RegionMap.affine((64, 4), 0, (10, 1))  # 4 of 10 columns, 64 rows
    >>> flat = cols.reshape((256,))
    >>> type(flat).__name__, flat.size_hint, len(flat.regions)
    ('ReshapedMap', 1, 64)
    >>> flat.take(0, 16, 1, 16).reshape((4, 4)).regions
    (Region(start=(0, 0), stop=(4, 4), offset=40, strides=(10, 1)),)
    """

    __slots__ = ("_eager", "segments")

    def __init__(self, segments: Sequence[RegionMap], shape: Sequence[int]) -> None:
        flat: list[RegionMap] = []
        for m in segments:
            flat.extend(m.segments)
        self.segments = tuple(m for m in flat if m.numel)
        self.shape = tuple(shape)
        if sum(m.numel for m in self.segments) != math.prod(self.shape):
            raise SyncvizError(f"segments do not fill shape {self.shape}", fix="report a bug")
        self._eager: RegionMap | None = None

    def __reduce__(self):
        # A copy (pickled to a Ray worker with the plan's layout) carries the segments
        # only: the eager form is a cache, and ``regions`` has no setter to restore it by.
        return ReshapedMap, (self.segments, self.shape)

    @property
    def regions(self) -> tuple[Region, ...]:  # type: ignore[override]
        if self._eager is None:
            self._eager = _eager_form(self)
        return self._eager.regions

    def _eager_uncached(self) -> RegionMap:
        """The eager form, worked out region by region (see :func:`_eager_form`)."""
        parts = [m._reshape_eager((m.numel,)) for m in self.segments]
        if not parts:
            return RegionMap((0,), [])._reshape_eager(self.shape)
        # One part is in its compact form already; several are joined, never folded.
        flat = parts[0] if len(parts) == 1 else _joined(parts, 0)
        return flat._reshape_eager(self.shape)

    @property
    def size_hint(self) -> int:
        return sum(m.size_hint for m in self.segments)

    def _plain(self) -> RegionMap:
        return RegionMap(self.shape, self.regions, merge=False)

    def shifted(self, k: int) -> RegionMap:
        if not k:
            return self
        return ReshapedMap([m.shifted(k) for m in self.segments], self.shape)

    def simplified(self) -> RegionMap:
        """An eager form when it is as compact as this one, else this map."""
        if len(self.segments) == 1 and self.segments[0].shape == self.shape:
            return self.segments[0]
        inner = math.prod(self.shape[1:])
        if not self.shape or not inner or any(m.numel % inner for m in self.segments):
            return self
        rows = []
        for m in self.segments:
            try:
                rows.append(m._reshape_eager((m.numel // inner, *self.shape[1:]), limit=16))
            except _TooMany:
                return self
        return RegionMap.cat(rows, 0)

    def materialize(self) -> torch.Tensor:
        if not self.segments:
            return torch.empty(self.shape, dtype=torch.float64)
        return torch.cat([m.materialize().reshape(-1) for m in self.segments]).view(self.shape)

    def take(self, dim: int, start: int, step: int, count: int) -> RegionMap:
        if dim != 0 or step != 1 or count == 0:
            return self._plain().take(dim, start, step, count)
        row = math.prod(self.shape[1:])
        lo, hi = start * row, (start + count) * row
        out, pos = [], 0
        for m in self.segments:
            a, b = max(lo, pos) - pos, min(hi, pos + m.numel) - pos
            pos += m.numel
            if a >= b:
                continue
            if a == 0 and b == m.numel:
                out.append(m)
            else:
                out.extend(_flat_range(m, a, b))
        return ReshapedMap(out, (count, *self.shape[1:])).simplified()

    def reshape(self, shape: Sequence[int]) -> RegionMap:
        shape = tuple(shape)
        if shape == self.shape:
            return self
        return ReshapedMap(self.segments, shape).simplified()

    def expand(self, shape: Sequence[int]) -> RegionMap:
        if tuple(shape) == self.shape:
            return self
        return self._plain().expand(shape)


EAGER_KEPT = 32  # eager forms of lazy maps remembered by their shape (see _eager_form)
# Exact integers only: an offset beyond this could round when shifted.
_SHIFTABLE = 1 << 52
_eager_forms: OrderedDict[tuple, tuple[int, tuple[Region, ...]]] = OrderedDict()


def _eager_form(m: ReshapedMap) -> RegionMap:
    """``m``'s eager form; a map that is another one's ids shifted by a constant reuses
    that one's regions, shifted.

    Every vLLM rank of a row-parallel weight holds its shard through the same views,
    so the ranks' lazy maps differ by a constant only; at real sizes each eager form
    is thousands of regions (a row cut in two per row). Every step of the eager form
    (merging and splitting dims, joining neighbours) moves offsets by integers and
    compares them only by their differences, so shifting every input offset by ``k``
    shifts every output offset by ``k`` and changes nothing else: the shifted copy is
    exactly what working it out again would give. Offsets must be exact integers
    (Python ints, or floats holding integers below 2**52), so that shifting rounds
    nothing, and each keeps its type (an int stays an int, a float a float).

    >>> a = RegionMap.affine((64, 4), 0, (10, 1)).reshape((256,))
    >>> b = RegionMap.affine((64, 4), 5000, (10, 1)).reshape((256,))
    >>> [r.offset for r in a.regions[:2]], [r.offset for r in b.regions[:2]]
    ([0, 10], [5000, 5010])
    >>> b.regions == b._eager_uncached().regions
    True
    """
    key, base = _shape_key(m)
    if key is None:
        return m._eager_uncached()
    hit = _eager_forms.get(key)
    if hit is None:
        eager = m._eager_uncached()
        _eager_forms[key] = (base, eager.regions)
        while len(_eager_forms) > EAGER_KEPT:
            _eager_forms.popitem(last=False)
        return eager
    _eager_forms.move_to_end(key)
    was, regions = hit
    k = base - was
    if k:  # made as tuples (each Region's fields in order): this runs on thousands
        new = tuple.__new__
        regions = tuple([new(Region, (r[0], r[1], r[2] + k, r[3])) for r in regions])
    return RegionMap(m.shape, regions, merge=False)


@contextmanager
def map_work() -> Iterator[None]:
    """Work on region maps (a picture, a journey, a replay): one torch thread and Python's
    cycle collector paused inside, both as they were after.

    Its tensors are small (a picture's cells, a map's boxes: 10^3-10^5 elements), too
    small for intra-op threads to pay: on a busy machine a split op waits for a thread that
    is not scheduled. And a real-size map makes some 10^5 short-lived objects (regions,
    their tuples), which set off hundreds of collector runs, each walking every object of
    the process (torch's, a notebook's); they hold no cycles, reference counts free them
    (cycles made inside are collected by the collector's next run). On the shared 2-core
    machine (load 8-10) the llama3-70b tp8 -> tp16 opening took 4.5-5.7 s of CPU with two
    torch threads and the collector on, 1.6 s on one thread, and 1.2 s on one thread with
    the collector paused (benchmarks/bench_explorer.py); a first journey there (o_proj,
    fresh process) 0.75 s of CPU with the collector on, 0.33 s with it paused.

    >>> import gc
    >>> with map_work():
    ...     gc.isenabled(), torch.get_num_threads()
    (False, 1)
    """
    before = torch.get_num_threads()
    if before != 1:
        torch.set_num_threads(1)
    try:
        with gc_paused():
            yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def forget_eager_forms() -> None:
    """Forget the eager forms kept by :func:`_eager_form` (a benchmark's cold start)."""
    _eager_forms.clear()


def _shape_key(m: ReshapedMap) -> tuple[tuple | None, int]:
    """What ``m``'s eager form follows from, its offsets taken from the first one's (an
    int), with each offset's type; None when an offset is not an exact integer."""
    base = None
    segments = []
    for seg in m.segments:
        regions = []
        for r in seg.regions:
            x = r.offset
            kind = type(x)
            if kind is not int and not (kind is float and x.is_integer()):
                return None, 0
            if not -_SHIFTABLE < x < _SHIFTABLE:
                return None, 0
            if base is None:
                base = int(x)
            regions.append((r.start, r.stop, r.strides, kind, int(x) - base))
        segments.append((type(seg), seg.shape, tuple(regions)))
    return (m.shape, tuple(segments)), base or 0


def _joined(maps: Sequence[RegionMap], dim: int) -> RegionMap:
    """Maps laid end to end along ``dim``, as one map of their regions (never lazy)."""
    shape = list(maps[0].shape)
    shift, regions = 0, []
    for m in maps:
        for r in m.regions:
            regions.append(
                Region(
                    _put(r.start, dim, r.start[dim] + shift),
                    _put(r.stop, dim, r.stop[dim] + shift),
                    r.offset,
                    r.strides,
                )
            )
        shift += m.shape[dim]
    shape[dim] = shift
    return RegionMap(shape, regions)


def _folded(m: RegionMap) -> RegionMap:
    """A flat map of many regions that repeat with a period, kept lazy as rows of that
    period (a :class:`ReshapedMap` of one 2-D segment); else ``m``.

    Interleaved rows are the case (:mod:`syncviz.provenance.periodic`): read flat, each
    expert's w13 rows of an attention-sink model are one region per row, stacked as rows
    of two (a gate row beside its up row) one region per half and run of experts. The
    period tried is where each of the first ``FOLD_TRIES`` regions starts; the first that
    folds the regions ``FOLD_GAIN`` times over is kept.

    >>> rows = [RegionMap.affine((4,), k * 4 + half * 100, (1,)) for k in range(32)
    ...         for half in (0, 1)]  # 32 gate rows of 4 interleaved with 32 up rows
    >>> flat = RegionMap.cat(rows, 0)
    >>> type(flat).__name__, [(s.shape, len(s.regions)) for s in flat.segments]
    ('ReshapedMap', [((32, 8), 2)])
    >>> flat.segments[0].regions[1]
    Region(start=(0, 4), stop=(32, 8), offset=100, strides=(4, 1))
    >>> torch.equal(flat.materialize(), RegionMap((256,), flat.regions).materialize())
    True
    """
    total = m.shape[0]
    runs = sorted((r.start[0], r.stop[0], r.offset, r.strides[0]) for r in m.regions)
    most = len(runs) // FOLD_GAIN
    for width in period_candidates(runs, total, FOLD_TRIES):
        boxes = stack_rows(runs, width, most)
        if boxes is not None:
            regions = [
                canonical_region((r0, c0), (r1, c1), offset, (step, stride))
                for r0, r1, c0, c1, offset, step, stride in boxes
            ]
            return ReshapedMap((RegionMap((total // width, width), regions),), m.shape)
    return m


def _flat_range(m: RegionMap, a: int, b: int) -> list[RegionMap]:
    """Elements ``a..b-1`` of ``m`` in row-major order, as maps laid end to end.

    Cut into a partial first row, whole rows and a partial last row (recursively),
    so nothing is flattened: a few maps per dim, however many rows.

    >>> m = RegionMap.affine((4, 8), 0, (16, 1))  # every other row of a [8, 8]
    >>> [p.shape for p in _flat_range(m, 5, 29)]
    [(3,), (2, 8), (5,)]
    >>> torch.equal(torch.cat([p.materialize().reshape(-1) for p in _flat_range(m, 5, 29)]),
    ...             m.materialize().reshape(-1)[5:29])
    True
    """
    if a == 0 and b == m.numel:
        return [m]
    if len(m.shape) <= 1:
        return [m.reshape((m.numel,)).take(0, a, 1, b - a)]
    inner = math.prod(m.shape[1:])
    out: list[RegionMap] = []
    if a % inner:
        row = a // inner
        end = min(b, (row + 1) * inner)
        out += _flat_range(m.select(0, row), a - row * inner, end - row * inner)
        a = end
    full = (b - a) // inner
    if full:
        out.append(m.take(0, a // inner, 1, full))
        a += full * inner
    if a < b:
        out += _flat_range(m.select(0, a // inner), 0, b - a)
    return out


def _unit_dims_only(old: tuple[int, ...], new: tuple[int, ...]) -> bool:
    """Whether ``old`` and ``new`` list the same sizes once their size-1 dims are dropped.

    >>> _unit_dims_only((1, 1, 8), (8,)), _unit_dims_only((2, 4), (8,))
    (True, False)
    """
    return [n for n in old if n != 1] == [n for n in new if n != 1]


def _key(r: Region) -> tuple:
    return (r.start, r.stop, r.offset, r.strides)


def _put(t: tuple, i: int, v) -> tuple:
    return (*t[:i], v, *t[i + 1 :])


def _drop(t: tuple, i: int) -> tuple:
    return t[:i] + t[i + 1 :]


def _ins(t: tuple, i: int, v) -> tuple:
    return (*t[:i], v, *t[i:])


def _groups(old: tuple[int, ...], new: tuple[int, ...]) -> list[tuple[tuple, tuple]]:
    """Pair runs of old dims with runs of new dims of equal product (as ``view`` does).

    Size-1 dims form groups of their own so they never force a merge.
    """
    groups = []
    i = j = 0
    while i < len(old) or j < len(new):
        if j < len(new) and new[j] == 1 and (i >= len(old) or old[i] != 1):
            groups.append(((i, i), (j, j + 1)))
            j += 1
            continue
        if i < len(old) and old[i] == 1 and (j >= len(new) or new[j] != 1):
            groups.append(((i, i + 1), (j, j)))
            i += 1
            continue
        i0, j0 = i, j
        po, pn = old[i], new[j]
        i, j = i + 1, j + 1
        while po != pn:
            if po < pn:
                po *= old[i]
                i += 1
            else:
                pn *= new[j]
                j += 1
        groups.append(((i0, i), (j0, j)))
    return groups


def _subtract(r: Region, lo: Sequence[int], hi: Sequence[int]) -> list[Region]:
    """The parts of ``r`` outside the box ``lo..hi`` (at most two per dim)."""
    out = []
    start, stop = list(r.start), list(r.stop)
    for d in range(len(start)):
        if start[d] < lo[d]:
            cut = list(stop)
            cut[d] = lo[d]
            out.append(_shifted(r, tuple(start), tuple(cut)))
            start[d] = lo[d]
        if stop[d] > hi[d]:
            cut = list(start)
            cut[d] = hi[d]
            out.append(_shifted(r, tuple(cut), tuple(stop)))
            stop[d] = hi[d]
    return out


def _shifted(r: Region, start: tuple[int, ...], stop: tuple[int, ...]) -> Region:
    """The sub-box ``start..stop`` of ``r``, with its offset moved to the new start."""
    offset = r.offset + sum(
        (a - a0) * s for a, a0, s in zip(start, r.start, r.strides, strict=True)
    )
    return canonical_region(start, stop, offset, r.strides)


def _coalesce(regions: Sequence[Region]) -> list[Region]:
    """Merge neighbours that continue one affine function (a cheap canonical form).

    Passes over the dims, last first, until one pass joins nothing: each sorts the
    regions by where they sit apart from dim ``d`` (then by their start along it) and
    joins each to the one before it where they meet along ``d``.
    """
    out = [r for r in regions if all(map(operator.lt, r.start, r.stop))]  # non-empty ones
    if len(out) < 2:
        return out
    ndim = len(out[0].start)
    changed = True
    while changed and len(out) > 1:
        changed = False
        for d in reversed(range(ndim)):
            keyed = _sorted_apart_from(out, d, ndim)
            merged = [keyed[0]]
            for k, r in keyed[1:]:
                pk, p = merged[-1]
                if pk[:-1] == k[:-1] and p.stop[d] == k[-1]:
                    m = _join(p, r, d)
                    if m is not None:
                        merged[-1] = (pk, m)
                        changed = True
                        continue
                merged.append((k, r))
            out = [r for _, r in merged]
        if ndim == 1:  # one sorted pass has joined every run: no other dim to reopen it
            break
    return out


def _sorted_apart_from(regions: list[Region], d: int, ndim: int) -> list[tuple[tuple, Region]]:
    """``regions`` keyed and sorted by (start, stop, strides of every dim but ``d``, then
    the start along ``d``): regions that may join along ``d`` have keys equal but the last
    and sort next to each other. Keys are flat tuples, spelled out for 1 and 2 dims (at
    real sizes this runs on thousands of regions)."""
    if ndim == 1:
        return sorted(((r.start[0],), r) for r in regions)
    if ndim == 2:
        o = 1 - d  # the other dim
        return sorted(((r.start[o], r.stop[o], r.strides[o], r.start[d]), r) for r in regions)
    e = d + 1
    return sorted(
        (
            (
                *r.start[:d],
                *r.start[e:],
                *r.stop[:d],
                *r.stop[e:],
                *r.strides[:d],
                *r.strides[e:],
                r.start[d],
            ),
            r,
        )
        for r in regions
    )


def _join(a: Region, b: Region, d: int) -> Region | None:
    """``a`` followed by ``b`` along ``d`` (equal elsewhere) as one region, or None."""
    ea, eb = a.stop[d] - a.start[d], b.stop[d] - b.start[d]
    step, rem = divmod(b.offset - a.offset, ea)
    if rem:
        return None
    if (ea > 1 and a.strides[d] != step) or (eb > 1 and b.strides[d] != step):
        return None
    return canonical_region(
        a.start, _put(a.stop, d, b.stop[d]), a.offset, _put(a.strides, d, int(step))
    )
