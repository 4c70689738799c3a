"""Small helpers that turn row/column/vocab slices into index maps.

>>> from syncviz.oracle.slicing import rows_map
>>> rows_map((8, 2), [(0, 2), (6, 8)]).ids().tolist()
[[0, 1], [2, 3], [12, 13], [14, 15]]
"""

from __future__ import annotations

from collections.abc import Sequence

from syncviz.oracle.index import Box, Pad, boxes_map
from syncviz.provenance import RegionMap


def rows_box(shape: Sequence[int], a: int, b: int) -> Box:
    """Rows ``a .. b-1`` of dim 0, every other dim whole."""
    return Box((a,) + (0,) * (len(shape) - 1), (b, *shape[1:]))


def rows_map(shape: Sequence[int], ranges: Sequence[tuple[int, int]]) -> RegionMap:
    """A local tensor made of the listed row ranges of the global tensor, in order."""
    pieces = [rows_box(shape, a, b) for a, b in ranges if b > a]
    n_rows = sum(b - a for a, b in ranges)
    return boxes_map(shape, (n_rows, *shape[1:]), pieces)


def cols_map(shape: tuple[int, int], part: int, parts: int) -> RegionMap:
    """Column slice ``part`` of ``parts`` (a row-parallel weight's shard)."""
    width = shape[1] // parts
    box = Box((0, part * width), (shape[0], (part + 1) * width))
    return boxes_map(shape, (shape[0], width), [box])


def padded_rows_map(shape: Sequence[int], padded_rows: int, part: int, parts: int) -> RegionMap:
    """Row slice ``part`` of ``parts`` of the tensor padded to ``padded_rows`` rows.

    Rows past the real ``shape[0]`` are padding (id -1).
    """
    per_part = padded_rows // parts
    lo, hi = part * per_part, (part + 1) * per_part
    real_hi = min(hi, shape[0])
    row_numel = 1
    for n in shape[1:]:
        row_numel *= n
    pieces: list[Box | Pad] = []
    if real_hi > lo:
        pieces.append(rows_box(shape, lo, real_hi))
    pad_rows = hi - max(lo, real_hi)
    if pad_rows:
        pieces.append(Pad(pad_rows * row_numel))
    return boxes_map(shape, (per_part, *shape[1:]), pieces)


def round_up(n: int, multiple: int) -> int:
    """``n`` rounded up to a multiple of ``multiple``.

    >>> round_up(70, 64)
    128
    """
    return -(-n // multiple) * multiple


def clip_segments(segments: Sequence[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """The parts of a sequence of row ranges that fall at positions ``lo .. hi-1``.

    Positions count rows along the concatenated segments, not global rows.

    >>> clip_segments([(0, 4), (10, 12)], 2, 5)
    [(2, 4), (10, 11)]
    """
    out, pos = [], 0
    for a, b in segments:
        n = b - a
        start, stop = max(lo, pos), min(hi, pos + n)
        if start < stop:
            out.append((a + start - pos, a + stop - pos))
        pos += n
    return out
