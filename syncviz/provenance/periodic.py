"""Flat runs of ids that repeat with a period, stacked as rows of that period.

A flat map whose runs go ``a, b, a, b, ...`` (the w13 rows of experts whose gate and up
rows interleave: gate row, up row, gate row, ...) is one run per row when read flat, yet rows of the
period (a gate row and its up row side by side) continue each other: stacked, they are a
few boxes. A run is ``(start, stop, offset, stride)``: elements ``start..stop-1`` hold
``offset + (i - start) * stride``. A box is ``(row0, row1, col0, col1, offset, row_step,
stride)``: rows ``row0..row1-1``, columns ``col0..col1-1``, the value at ``(i, j)`` is
``offset + (i - row0) * row_step + (j - col0) * stride``. Plain integers, no torch.

>>> gate = [(8 * k, 8 * k + 4, 4 * k, 1) for k in range(3)]  # rows of 4: g0 u0 g1 u1 g2 u2
>>> up = [(8 * k + 4, 8 * k + 8, 100 + 4 * k, 1) for k in range(3)]
>>> stack_rows(sorted(gate + up), width=8, most=2)
[(0, 3, 0, 4, 0, 4, 1), (0, 3, 4, 8, 100, 4, 1)]
>>> stack_rows(sorted(gate + up), width=4, most=2) is None  # rows of 4 alternate: no gain
True
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

Run = tuple[int, int, float, int]
Box = tuple[int, int, int, int, float, int, int]


def period_candidates(runs: Sequence[Run], total: int, tries: int) -> list[int]:
    """Row widths worth trying: where each of the first ``tries`` runs after the first
    starts (a period ends where a run starts again), those that divide ``total``.

    >>> period_candidates([(0, 4, 0, 1), (4, 8, 100, 1), (8, 12, 4, 1)], 16, 8)
    [4, 8]
    """
    out = []
    for run in runs[1:tries]:
        width = run[0]
        if width > 0 and total % width == 0 and width not in out:
            out.append(width)
    return out


def row_pieces(runs: Iterable[Run], width: int) -> Iterable[tuple[int, int, int, int, float, int]]:
    """Each run cut at the row ends of ``width``: ``(row0, row1, col0, col1, offset,
    stride)`` pieces in order; a run over several rows gives a partial first row, one
    piece of whole rows and a partial last row.

    >>> list(row_pieces([(2, 13, 50, 1)], 4))
    [(0, 1, 2, 4, 50, 1), (1, 3, 0, 4, 52, 1), (3, 4, 0, 1, 60, 0)]
    """
    for a, b, offset, stride in runs:
        row = a // width
        col = a - row * width
        if b - row * width <= width:  # inside one row (the common case)
            yield row, row + 1, col, b - row * width, offset, stride if b - a > 1 else 0
            continue
        if col:
            yield row, row + 1, col, width, offset, stride if width - col > 1 else 0
            offset += (width - col) * stride
            row += 1
        last = b // width
        if last > row:
            yield row, last, 0, width, offset, stride if width > 1 else 0
            offset += (last - row) * width * stride
        if b > last * width:
            yield last, last + 1, 0, b - last * width, offset, stride if b - last * width > 1 else 0


def stack_rows(runs: Sequence[Run], width: int, most: int) -> list[Box] | None:
    """``runs`` (sorted by start, covering ``0..n``) as boxes of rows of ``width``: each
    piece stacked on the one right above it that it continues (same columns and stride,
    the offset moved by one step every row); None when that takes more than ``most``.

    One pass in order, with one box open per column span: a periodic map has a few open.

    >>> stack_rows([(0, 12, 0, 1)], width=4, most=1)  # one run over whole rows
    [(0, 3, 0, 4, 0, 4, 1)]
    """
    open_: dict[tuple[int, int, int], list] = {}  # (col0, col1, stride) -> open box
    done: list[Box] = []
    for r0, r1, c0, c1, offset, stride in row_pieces(runs, width):
        key = (c0, c1, stride)
        own = width * stride if r1 - r0 > 1 else None  # whole rows of a flat run
        box = open_.get(key)  # [row0, row1, offset0, offset of its last row, step or None]
        if box is not None and box[1] == r0:
            step = offset - box[3]
            whole = math.isfinite(step) and step == int(step)  # random values never stack
            if whole and box[4] in (None, step) and own in (None, step):
                box[1], box[3], box[4] = r1, offset + (r1 - r0 - 1) * step, int(step)
                continue
        if box is not None:
            done.append(_closed(key, box))
            if len(done) > most:
                return None
        open_[key] = [r0, r1, offset, offset + (r1 - r0 - 1) * (own or 0), own]
    done.extend(_closed(key, box) for key, box in open_.items())
    return None if len(done) > most else done


def _closed(key: tuple[int, int, int], box: list) -> Box:
    c0, c1, stride = key
    row0, row1, offset, _, step = box
    return (row0, row1, c0, c1, offset, int(step or 0) if row1 - row0 > 1 else 0, stride)
