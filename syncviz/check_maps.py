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

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from syncviz.oracle.index import IndexMap, Pad, Piece, Unknown, affine_pieces, flat_pieces
from syncviz.provenance import Region, RegionMap, row_major
from syncviz.provenance.regions import ReshapedMap
from syncviz.run.values import FOREIGN_ID, PADDING_ID, UNWRITTEN_ID

MAX_PIECES = 250_000  # as IndexMap.from_ids: past this a map is not worth describing
CHUNK_ELEMENTS = 2**16  # an irregular chunk up to this size is read element by element


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


# ------------------------------------------------------------ maps to the oracle's pieces


def map_index(
    region_map: RegionMap, base: int, global_shape: Sequence[int], *, limit: int = MAX_PIECES
) -> IndexMap | None:
    """What ``region_map`` (model-wide ids) holds of the parameter whose ids start at
    ``base``, as the oracle's :class:`~syncviz.oracle.index.IndexMap`, element-free.

    The same index :meth:`IndexMap.from_ids` recovers from the materialized ids read
    back as local ids (:func:`~syncviz.run.values.to_local_ids`), so the checker's
    words for a wrong run cost its regions, not its elements. Ids of other
    parameters and the unwritten marker become :class:`~syncviz.oracle.index.Unknown`.
    None when a region is not one box or flat range of the parameter, or the map
    needs more than ``limit`` pieces (the caller then reads the elements).

    >>> m = RegionMap.affine((4, 3), 100, (6, 1)).slice(1, 0, 2)  # 2 of a row of 6
    >>> map_index(m, 100, (4, 6)).pieces
    (Box(start=(0, 0), stop=(4, 2), order=None),)
    >>> map_index(m.permute((1, 0)), 100, (4, 6)).pieces  # transposed
    (Box(start=(0, 0), stop=(4, 2), order=(1, 0)),)
    >>> pad = RegionMap.constant((1, 2), -1.0)
    >>> map_index(RegionMap.cat([m, pad], 0), 100, (4, 6)).pieces[-1]
    Pad(numel=2)
    """
    global_shape = tuple(global_shape)
    numel = math.prod(global_shape)
    chunks = _chunks(region_map, limit)
    if chunks is None:
        return None
    pieces: list[Piece] = []
    for value, dims in chunks:
        found = _chunk_pieces(value, dims, base, numel, global_shape)
        if found is None:
            return None
        pieces.extend(found)
        if len(pieces) > limit:
            return None
    return IndexMap(global_shape, region_map.shape, pieces)


def _chunk_pieces(value, dims, base, numel, global_shape) -> list[Piece] | None:
    """The pieces of one flat-contiguous chunk: ``value`` at its start, affine ``dims``."""
    count = math.prod(n for n, _ in dims)
    moving = [(n, s) for n, s in dims if n > 1 and s]
    low = value + sum(min(0, s * (n - 1)) for n, s in moving)
    high = value + sum(max(0, s * (n - 1)) for n, s in moving)
    if not moving and (value < base or value >= base + numel):  # a marker, or foreign
        return [Pad(count) if value == PADDING_ID else Unknown(count)]
    if moving and base <= low and high < base + numel and value == int(value):
        found = affine_pieces(int(value) - base, dims, global_shape)
        if found is not None:
            return found
    if count > CHUNK_ELEMENTS:
        return None
    # Irregular (ids that repeat, step back, or leave the parameter): read its elements.
    values = torch.full((1,) * len(dims), float(value), dtype=torch.float64)
    for k, (n, s) in enumerate(dims):
        shape = [1] * len(dims)
        shape[k] = n
        values = values + (torch.arange(n, dtype=torch.float64) * s).view(shape)
    local = values.reshape(-1) - base
    inside = (local >= 0) & (local < numel) & (local == local.round())
    ids = torch.where(inside, local, torch.full_like(local, FOREIGN_ID))
    ids = torch.where(values.reshape(-1) < 0, values.reshape(-1), ids)
    return flat_pieces(ids, global_shape)


def _unravel(flat: int, shape: Sequence[int]) -> tuple[int, ...]:
    coords = []
    for n in reversed(shape):
        flat, rem = divmod(flat, n)
        coords.append(rem)
    return tuple(reversed(coords))


def _chunks(m: RegionMap, limit: int) -> list[tuple[float, list[tuple[int, int]]]] | None:
    """``m``'s values in flat (row-major) order as chunks, each contiguous in ``m``'s
    memory and affine: (value at its start, [(extent, stride)] over its dims). A lazy
    reshape is read segment by segment. None past ``limit`` chunks."""
    segments = m.segments if isinstance(m, ReshapedMap) else (m,)
    out: list[tuple[float, list[tuple[int, int]]]] = []
    for seg in segments:
        found = _plain_chunks(seg, limit - len(out))
        if found is None:
            return None
        out.extend(found)
    return out


def _plain_chunks(m: RegionMap, limit: int) -> list[tuple[float, list[tuple[int, int]]]] | None:
    shape = m.shape
    flat_strides = row_major(shape)
    found: list[tuple[int, float, list[tuple[int, int]]]] = []
    for r in m.regions:
        j = len(shape) - 1
        while j > 0 and r.start[j] == 0 and r.stop[j] == shape[j]:
            j -= 1  # dims after j are whole: the chunk runs on through them
        dims = [(b - a, s) for a, b, s in zip(r.start[j:], r.stop[j:], r.strides[j:], strict=True)]
        head = r.start[j] * flat_strides[j] if shape else 0
        outer = [range(a, b) for a, b in zip(r.start[:j], r.stop[:j], strict=True)]
        if len(found) + math.prod(len(x) for x in outer) > limit:
            return None
        for coords in itertools.product(*outer):
            flat = head + sum(c * f for c, f in zip(coords, flat_strides, strict=False))
            value = r.offset + sum(
                (c - a) * s for c, a, s in zip(coords, r.start, r.strides, strict=False)
            )
            found.append((flat, value, dims))
    found.sort(key=lambda c: c[0])
    return [(value, dims) for _, value, dims in found]
