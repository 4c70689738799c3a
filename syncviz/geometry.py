"""Row-major geometry of a tensor's coordinates, written once: strides, a flat position's
coordinates, and where two boxes meet. Plain integers, no torch: the oracle's boxes, the
provenance maps, the checker and the pictures all count positions this way.

>>> row_major((2, 3, 4))
(12, 4, 1)
>>> unravel(23, (2, 3, 4))
(1, 2, 3)
>>> intersection((0, 2), (4, 6), (2, 0), (8, 3))
((2, 2), (4, 3))
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

from syncviz.errors import SyncvizError

A = TypeVar("A")
B = TypeVar("B")


def row_major(shape: Sequence[int]) -> tuple[int, ...]:
    """Row-major strides of ``shape``, in elements.

    >>> row_major((5,)), row_major(())
    ((1,), ())
    """
    out, step = [], 1
    for n in reversed(shape):
        out.append(step)
        step *= n
    return tuple(reversed(out))


def unravel(flat: int, shape: Sequence[int], *, check: bool = False) -> tuple[int, ...]:
    """Coordinates of a row-major flat position. What lies beyond the outermost dim is
    dropped, unless ``check``: then a position outside ``shape`` is an error.

    >>> unravel(5, (2, 3)), unravel(7, (2, 3))
    ((1, 2), (0, 1))
    >>> unravel(7, (2, 3), check=True)
    Traceback (most recent call last):
    ...
    syncviz.errors.SyncvizError: flat index is outside shape (2, 3)
    """
    coords = []
    for n in reversed(shape):
        flat, rem = divmod(flat, n)
        coords.append(rem)
    if check and flat:
        raise SyncvizError(f"flat index is outside shape {tuple(shape)}")
    return tuple(reversed(coords))


def intersection(
    start_a: Sequence[int], stop_a: Sequence[int], start_b: Sequence[int], stop_b: Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """The box where boxes ``[start_a, stop_a)`` and ``[start_b, stop_b)`` meet, as
    (start, stop); None when they share no element.

    >>> intersection((0,), (4,), (4,), (8,)) is None
    True
    """
    lo = tuple(max(a, b) for a, b in zip(start_a, start_b, strict=True))
    hi = tuple(min(a, b) for a, b in zip(stop_a, stop_b, strict=True))
    if any(x >= y for x, y in zip(lo, hi, strict=True)):
        return None
    return lo, hi


def overlap(
    start_a: Sequence[int], stop_a: Sequence[int], start_b: Sequence[int], stop_b: Sequence[int]
) -> int:
    """How many elements two boxes share.

    >>> overlap((0, 0), (4, 4), (2, 3), (6, 8))
    2
    """
    met = intersection(start_a, stop_a, start_b, stop_b)
    return 0 if met is None else math.prod(b - a for a, b in zip(*met, strict=True))


def meetings(
    a: Iterable[A], b: Iterable[B]
) -> Iterator[tuple[A, B, tuple[int, ...], tuple[int, ...]]]:
    """Each pair of boxes, one from ``a`` and one from ``b`` (anything with ``start`` and
    ``stop``), that share elements, with the box they share: (x, y, start, stop).

    >>> from syncviz.oracle.index import Box
    >>> found = meetings([Box((0,), (4,))], [Box((2,), (6,)), Box((5,), (8,))])
    >>> [(y.start, lo, hi) for _, y, lo, hi in found]
    [((2,), (2,), (4,))]
    """
    b = list(b)
    for x in a:
        for y in b:
            met = intersection(x.start, x.stop, y.start, y.stop)  # type: ignore[attr-defined]
            if met is not None:
                yield x, y, met[0], met[1]
