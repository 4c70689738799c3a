"""Which elements of a global tensor a local tensor holds, kept compact.

A local tensor is described by a list of pieces laid end to end in its flat
(row-major) memory, then viewed to its local shape. A piece is either a
hyper-rectangle of the global tensor (:class:`Box`, optionally read in another
dim order, as for a transposed copy) or padding (:class:`Pad`, id -1). Nothing
is materialized until :meth:`IndexMap.ids` or :meth:`IndexMap.runs` is called.

>>> from syncviz.oracle.index import Box, IndexMap
>>> cols = IndexMap((4, 6), (4, 2), [Box((0, 2), (4, 4))])  # columns 2-3 of a [4, 6] tensor
>>> cols.ids().tolist()
[[2, 3], [8, 9], [14, 15], [20, 21]]
>>> cols.runs()
[(2, 2), (8, 2), (14, 2), (20, 2)]
>>> IndexMap.from_ids(cols.ids(), (4, 6)) == cols
True
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from syncviz import geometry
from syncviz.errors import SyncvizError
from syncviz.geometry import row_major

PAD_ID = -1


def unravel(flat: int, shape: Sequence[int]) -> tuple[int, ...]:
    """Coordinates of a row-major flat position inside ``shape`` (outside: an error).

    >>> unravel(5, (2, 3))
    (1, 2)
    """
    return geometry.unravel(flat, shape, check=True)


@dataclass(frozen=True, slots=True)
class Box:
    """A hyper-rectangle ``start <= coords < stop`` of the global tensor.

    ``order`` lists the global dims from outermost to innermost as the piece is
    laid out in local memory; ``None`` keeps the global order. A transposed copy
    of a 2-D block uses ``order=(1, 0)``.

    >>> b = Box((0, 2), (4, 4))
    >>> b.extents, b.numel
    ((4, 2), 8)
    """

    start: tuple[int, ...]
    stop: tuple[int, ...]
    order: tuple[int, ...] | None = None

    @property
    def ndim(self) -> int:
        return len(self.start)

    @property
    def dims(self) -> tuple[int, ...]:
        """Global dims, outermost first, as laid out locally."""
        return self.order if self.order is not None else tuple(range(self.ndim))

    @property
    def extents(self) -> tuple[int, ...]:
        """Size of the box along each global dim (global dim order)."""
        return tuple(b - a for a, b in zip(self.start, self.stop, strict=True))

    @property
    def numel(self) -> int:
        return math.prod(self.extents)

    @property
    def is_transposed(self) -> bool:
        """True when the non-unit dims are not read in global order."""
        moving = [d for d in self.dims if self.stop[d] - self.start[d] > 1]
        return moving != sorted(moving)

    def moving_dims(self) -> tuple[int, ...]:
        """Dims with extent > 1, outermost first: they alone fix the flat order."""
        return tuple(d for d in self.dims if self.stop[d] - self.start[d] > 1)

    def ids(self, global_shape: Sequence[int]) -> torch.Tensor:
        """Flat ids of the box, in local order."""
        starts, run_len = _box_run_starts(self, global_shape)
        if starts.numel() == 1:
            first = int(starts[0])
            return torch.arange(first, first + run_len, dtype=torch.int64)
        return (starts[:, None] + torch.arange(run_len, dtype=torch.int64)[None, :]).reshape(-1)

    def key(self) -> tuple:
        """Identity up to the order of unit dims (which does not change the ids)."""
        return ("box", self.start, self.stop, self.moving_dims())


@dataclass(frozen=True, slots=True)
class Pad:
    """``numel`` padding elements (id -1): vLLM's vocab padding rows, which must be zero."""

    numel: int

    def key(self) -> tuple:
        return ("pad", self.numel)


@dataclass(frozen=True, slots=True)
class Unknown:
    """``numel`` elements whose values are not ids of this tensor (only from :meth:`from_ids`)."""

    numel: int

    def key(self) -> tuple:
        return ("unknown", self.numel)


Piece = Box | Pad | Unknown


def _merge(a: Piece, b: Piece) -> Piece | None:
    """One piece equal to ``a`` followed by ``b`` in flat order, or None."""
    if isinstance(a, Pad) and isinstance(b, Pad):
        return Pad(a.numel + b.numel)
    if isinstance(a, Unknown) and isinstance(b, Unknown):
        return Unknown(a.numel + b.numel)
    if not (isinstance(a, Box) and isinstance(b, Box)):
        return None
    differ = [d for d in range(a.ndim) if a.start[d] != b.start[d] or a.stop[d] != b.stop[d]]
    if len(differ) != 1:
        return None
    q = differ[0]
    if b.start[q] != a.stop[q]:
        return None
    # Stacking along q keeps flat order only if q is (or becomes) the outermost moving dim.
    rest_a = [d for d in a.moving_dims() if d != q]
    rest_b = [d for d in b.moving_dims() if d != q]
    if rest_a != rest_b:
        return None
    for box in (a, b):
        moving = box.moving_dims()
        if q in moving and moving[0] != q:
            return None
    stop = list(a.stop)
    stop[q] = b.stop[q]
    units = [d for d in range(a.ndim) if d != q and d not in rest_a]
    order = (q, *rest_a, *units)
    return Box(a.start, tuple(stop), None if order == tuple(range(a.ndim)) else order)


def merge_pieces(pieces: Iterable[Piece]) -> list[Piece]:
    """Merge neighbours that form one box (or one padding run)."""
    out: list[Piece] = []
    for piece in pieces:
        out.append(piece)
        # A grown piece may now complete its left neighbour (row 1 finished -> rows 0-1).
        while len(out) >= 2:
            merged = _merge(out[-2], out[-1])
            if merged is None:
                break
            out[-2:] = [merged]
    return out


def _flat_range_boxes(start: int, length: int, shape: Sequence[int]) -> list[Box]:
    """Boxes covering the contiguous flat ids ``start .. start+length-1``."""
    boxes: list[Box] = []
    pos, end = start, start + length
    strides = row_major(shape)
    while pos < end:
        coords = unravel(pos, shape)
        # Largest aligned block starting at pos that fits before end.
        for d in range(len(shape)):
            inner = strides[d]
            if all(c == 0 for c in coords[d + 1 :]):
                take = min(shape[d] - coords[d], (end - pos) // inner)
                if take >= 1:
                    stop = [c + 1 for c in coords[:d]] + [coords[d] + take, *shape[d + 1 :]]
                    boxes.append(Box(coords, tuple(stop)))
                    pos += take * inner
                    break
        else:  # pragma: no cover - the last dim always fits one element
            raise AssertionError("unreachable")
    return merge_pieces(boxes)  # type: ignore[return-value]


def affine_pieces(
    first: int, dims: Sequence[tuple[int, int]], global_shape: Sequence[int]
) -> list[Piece] | None:
    """Pieces for the ids ``first + sum(i_k * stride_k)``, ``0 <= i_k < extent_k``, read
    in row-major order of ``dims`` (``(extent, stride)`` pairs, outermost first).

    These are the pieces :meth:`IndexMap.from_ids` finds for the same ids, built
    without the ids: one box (read in another dim order where the strides say so)
    or the boxes of one flat range. None when the ids are not of that form (they
    step backwards, repeat, wrap inside a dim, or leave the tensor): the caller
    then reads the ids themselves.

    >>> affine_pieces(2, [(4, 6), (2, 1)], (4, 6))  # columns 2-3 of a [4, 6] tensor
    [Box(start=(0, 2), stop=(4, 4), order=None)]
    >>> affine_pieces(1, [(2, 1), (3, 6)], (4, 6))  # the same block, transposed
    [Box(start=(0, 1), stop=(3, 3), order=(1, 0))]
    >>> affine_pieces(4, [(5, 1)], (4, 6))  # a flat range across a row end
    [Box(start=(0, 4), stop=(1, 6), order=None), Box(start=(1, 0), stop=(2, 3), order=None)]
    >>> affine_pieces(0, [(3, -6)], (4, 6)) is None
    True
    """
    shape = tuple(global_shape)
    merged: list[tuple[int, int]] = []  # neighbours that continue each other become one
    for extent, stride in dims:
        if extent == 1:
            continue
        if merged and merged[-1][1] == stride * extent:
            merged[-1] = (merged[-1][0] * extent, stride)
        else:
            merged.append((extent, stride))
    if any(stride <= 0 for _, stride in merged):
        return None
    last = first + sum(stride * (extent - 1) for extent, stride in merged)
    if first < 0 or last >= math.prod(shape):
        return None
    if len(merged) == 1 and merged[0][1] == 1:
        return _flat_range_boxes(first, merged[0][0], shape)
    strides = row_major(shape)
    start = unravel(first, shape)
    stop = [c + 1 for c in start]
    placed: list[int] = []
    for extent, stride in merged:
        parts = _place(extent, stride, start, shape, strides, placed)
        if parts is None:
            return None
        for d, n in parts:
            stop[d] = start[d] + n
            placed.append(d)
    order = (*placed, *(d for d in range(len(shape)) if d not in placed))
    return [Box(start, tuple(stop), None if order == tuple(range(len(shape))) else order)]


def flat_pieces(ids: torch.Tensor, global_shape: Sequence[int]) -> list[Piece]:
    """Pieces for a flat run of local ids (-1 padding, other negatives not ids), split
    where ids stop counting up by one, as :meth:`IndexMap.from_ids` splits an
    irregular row.

    >>> [p.key() for p in flat_pieces(torch.tensor([4, 5, -1, 0]), (2, 3))]
    [('box', (1, 1), (2, 3), (1,)), ('pad', 1), ('box', (0, 0), (1, 1), ())]
    """
    shape = tuple(global_shape)
    return _row_elementwise(ids.reshape(-1).to(torch.int64), shape, math.prod(shape))


def _place(extent, stride, start, shape, strides, used) -> list[tuple[int, int]] | None:
    """Global dims (outermost first) and extents that ``extent`` ids of step ``stride`` fill."""
    for d in range(len(shape) - 1, -1, -1):
        if strides[d] == stride and d not in used and start[d] + extent <= shape[d]:
            return [(d, extent)]
    for d in range(len(shape) - 1, 0, -1):  # whole lines of dim d, stacked along d - 1
        n = shape[d]
        if strides[d] == stride and n > 1 and d not in used and start[d] == 0 and extent % n == 0:
            outer = _place(extent // n, stride * n, start, shape, strides, [*used, d])
            return None if outer is None else [*outer, (d, n)]
    return None


class IndexMap:
    """The global element ids a local tensor holds, as pieces in flat local order.

    ``global_shape`` is the parameter's global (unsharded, Hugging Face order)
    shape; ``shape`` the local tensor's shape. Ids are row-major positions in
    the global tensor; -1 marks padding.

    >>> m = IndexMap((4, 2), (3, 2), [Box((2, 0), (4, 2)), Pad(2)])
    >>> m.ids().tolist()
    [[4, 5], [6, 7], [-1, -1]]
    >>> m.numel, m.shape
    (6, (3, 2))
    """

    __slots__ = ("_hash", "global_shape", "pieces", "shape")

    def __init__(
        self, global_shape: Sequence[int], shape: Sequence[int], pieces: Iterable[Piece]
    ) -> None:
        self.global_shape = tuple(global_shape)
        self.shape = tuple(shape)
        self.pieces: tuple[Piece, ...] = tuple(merge_pieces(pieces))
        total = sum(p.numel for p in self.pieces)
        if total != math.prod(self.shape):
            raise SyncvizError(
                f"pieces hold {total} elements but local shape {self.shape} needs"
                f" {math.prod(self.shape)}",
                fix="make the pieces cover the local tensor exactly",
            )
        self._hash: int | None = None

    @classmethod
    def whole(cls, global_shape: Sequence[int]) -> IndexMap:
        """The whole global tensor, as a replicated parameter holds it.

        >>> IndexMap.whole((3,)).ids().tolist()
        [0, 1, 2]
        """
        shape = tuple(global_shape)
        return cls(shape, shape, [Box((0,) * len(shape), shape)])

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def global_numel(self) -> int:
        return math.prod(self.global_shape)

    def ids(self) -> torch.Tensor:
        """The ids as an int64 tensor of the local shape (materializes them)."""
        parts = []
        for piece in self.pieces:
            if isinstance(piece, Box):
                parts.append(piece.ids(self.global_shape))
            else:
                parts.append(torch.full((piece.numel,), PAD_ID, dtype=torch.int64))
        flat = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)
        return flat.view(self.shape)

    def runs(self) -> list[tuple[int, int]]:
        """Run-length form of the flat ids: ``(start_id, length)``; padding is ``(-1, n)``.

        >>> IndexMap((2, 3), (2, 2), [Box((0, 1), (2, 3))]).runs()
        [(1, 2), (4, 2)]
        """
        runs: list[tuple[int, int]] = []

        def push(start: int, length: int) -> None:
            if runs and start == PAD_ID and runs[-1][0] == PAD_ID:
                runs[-1] = (PAD_ID, runs[-1][1] + length)
            elif (
                runs
                and start != PAD_ID
                and runs[-1][0] != PAD_ID
                and (runs[-1][0] + runs[-1][1] == start)
            ):
                runs[-1] = (runs[-1][0], runs[-1][1] + length)
            else:
                runs.append((start, length))

        for piece in self.pieces:
            if not isinstance(piece, Box):
                push(PAD_ID, piece.numel)
                continue
            for start, length in _box_runs(piece, self.global_shape):
                push(start, length)
        return runs

    @classmethod
    def from_runs(
        cls, global_shape: Sequence[int], shape: Sequence[int], runs: Iterable[tuple[int, int]]
    ) -> IndexMap:
        """Build from the run-length form ``(start_id, length)`` of :meth:`runs`.

        A start of -1 is padding; any other negative start marks values that are
        not ids (:class:`Unknown`).

        >>> m = IndexMap.from_runs((2, 3), (2, 2), [(1, 2), (4, 2)])
        >>> m.pieces, m.runs()
        ((Box(start=(0, 1), stop=(2, 3), order=None),), [(1, 2), (4, 2)])
        """
        global_shape = tuple(global_shape)
        pieces: list[Piece] = []
        for start, length in runs:
            if start == PAD_ID:
                pieces.append(Pad(length))
            elif start < 0:
                pieces.append(Unknown(length))
            else:
                pieces.extend(_flat_range_boxes(start, length, global_shape))
        return cls(global_shape, shape, pieces)

    @classmethod
    def from_ids(
        cls, ids: torch.Tensor, global_shape: Sequence[int], *, max_runs: int = 250_000
    ) -> IndexMap:
        """Recover the compact form of any tensor of ids (e.g. a synchronizer's output).

        Values that are neither -1 nor a valid id of ``global_shape`` become
        :class:`Unknown` pieces. A tensor so irregular that it needs more than
        ``max_runs`` rows or runs to describe raises :class:`SyncvizError`
        (compressing it would cost more than it tells).

        >>> t = torch.tensor([[4, 5], [0, 1]])
        >>> IndexMap.from_ids(t, (3, 2)).pieces
        (Box(start=(2, 0), stop=(3, 2), order=None), Box(start=(0, 0), stop=(1, 2), order=None))
        """
        global_shape = tuple(global_shape)
        shape = tuple(ids.shape)
        if ids.dtype.is_floating_point:
            whole = (ids == torch.round(ids)) & torch.isfinite(ids) & (ids.abs() < 2.0**62)
            ids = torch.where(whole, ids, torch.full_like(ids, -2.0)).to(torch.int64)
        else:
            ids = ids.to(torch.int64)
        numel = math.prod(global_shape)
        cols = shape[-1] if len(shape) > 1 else max(1, math.prod(shape))
        rows2d = ids.reshape(-1, cols) if ids.numel() else ids.reshape(0, cols)
        pieces: list[Piece] = []
        for row_pieces in _classify_rows(rows2d, global_shape, numel, max_runs):
            pieces.extend(row_pieces)
        return cls(global_shape, shape, pieces)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IndexMap):
            return NotImplemented
        return (
            self.global_shape == other.global_shape
            and self.shape == other.shape
            and [p.key() for p in self.pieces] == [p.key() for p in other.pieces]
        )

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash((self.global_shape, self.shape, tuple(p.key() for p in self.pieces)))
        return self._hash

    def __repr__(self) -> str:
        pieces = list(self.pieces)
        return f"IndexMap(global_shape={self.global_shape}, shape={self.shape}, pieces={pieces})"


def _box_run_starts(box: Box, global_shape: Sequence[int]) -> tuple[torch.Tensor, int]:
    """A box's ids as contiguous runs: (start id of each run, in local order; run length)."""
    strides = row_major(global_shape)
    dims = [d for d in box.dims if box.stop[d] - box.start[d] > 1] or [box.ndim - 1]
    # Fold inner dims while each is the global successor of the next and is full.
    run_len, inner = 1, len(dims)
    expected_stride = 1
    while inner > 0:
        d = dims[inner - 1]
        if strides[d] != expected_stride:
            break
        extent = box.stop[d] - box.start[d]
        run_len *= extent
        expected_stride = strides[d] * global_shape[d]
        inner -= 1
        if extent != global_shape[d]:
            break
    base = sum(box.start[d] * strides[d] for d in range(box.ndim))
    starts = torch.tensor([base], dtype=torch.int64)
    for d in dims[:inner]:
        axis = torch.arange(box.stop[d] - box.start[d], dtype=torch.int64) * strides[d]
        starts = (starts[:, None] + axis[None, :]).reshape(-1)
    return starts, run_len


def _box_runs(box: Box, global_shape: Sequence[int]) -> list[tuple[int, int]]:
    """Contiguous runs of a box's ids, in local order."""
    starts, run_len = _box_run_starts(box, global_shape)
    return [(s, run_len) for s in starts.tolist()]


def _classify_rows(
    rows: torch.Tensor, global_shape: tuple[int, ...], numel: int, max_runs: int
) -> Iterable[list[Piece]]:
    """Pieces for each local row, found with vectorized checks, odd rows element-wise."""
    if rows.numel() == 0:
        return
    n_rows, n_cols = rows.shape
    strides = row_major(global_shape)
    first = rows[:, 0]
    if n_cols > 1:
        diffs = rows[:, 1:] - rows[:, :-1]
        step = diffs[:, 0]
        uniform = (diffs == step[:, None]).all(dim=1)
    else:
        step = torch.ones(n_rows, dtype=torch.int64)
        uniform = torch.ones(n_rows, dtype=torch.bool)
    valid = ((rows >= 0) & (rows < numel)).all(dim=1)
    pad = (rows == PAD_ID).all(dim=1)
    odd = ~pad & ~(valid & uniform)
    runs = n_rows + _count_breaks(rows[odd], numel)
    if runs > max_runs:
        raise SyncvizError(
            f"ids of shape {tuple(rows.shape)} need {runs} runs to describe (limit {max_runs})",
            fix="describe a smaller slice, or compare with the expected ids first",
        )
    firsts, steps = first.tolist(), step.tolist()
    uniforms, valids, pads = uniform.tolist(), valid.tolist(), pad.tolist()
    for i in range(n_rows):
        if pads[i]:
            yield [Pad(n_cols)]
            continue
        if valids[i] and uniforms[i]:
            box = _line_box(firsts[i], steps[i], n_cols, global_shape, strides)
            if box is not None:
                yield [box]
                continue
        yield _row_elementwise(rows[i], global_shape, numel)


def _kinds(values: torch.Tensor, numel: int) -> torch.Tensor:
    """0 for padding, 1 for a valid id, 2 for anything else."""
    valid = (values >= 0) & (values < numel)
    return torch.where(values == PAD_ID, 0, torch.where(valid, 1, 2))


def _continues(values: torch.Tensor, kind: torch.Tensor) -> torch.Tensor:
    """Along the last dim: does element k+1 extend the run of element k?"""
    same = kind[..., 1:] == kind[..., :-1]
    return same & ((kind[..., 1:] != 1) | (values[..., 1:] == values[..., :-1] + 1))


def _count_breaks(rows: torch.Tensor, numel: int) -> int:
    if rows.numel() == 0 or rows.shape[-1] < 2:
        return 0
    return int((~_continues(rows, _kinds(rows, numel))).sum())


def _line_box(
    start: int, step: int, count: int, shape: tuple[int, ...], strides: tuple[int, ...]
) -> Box | None:
    """The box of ``count`` ids ``start, start+step, ...`` if they lie on one global line."""
    coords = unravel(start, shape)
    if count == 1:
        return Box(coords, tuple(c + 1 for c in coords))
    for d in range(len(shape) - 1, -1, -1):
        if strides[d] == step and coords[d] + count <= shape[d]:
            stop = [c + 1 for c in coords]
            stop[d] = coords[d] + count
            order = (*(x for x in range(len(shape)) if x != d), d)
            return Box(coords, tuple(stop), None if order == tuple(range(len(shape))) else order)
    if step == 1:
        boxes = _flat_range_boxes(start, count, shape)
        if len(boxes) == 1:
            return boxes[0]
    return None


def _row_elementwise(row: torch.Tensor, shape: tuple[int, ...], numel: int) -> list[Piece]:
    """Split an irregular row into contiguous runs, padding and unknown values."""
    kind = _kinds(row, numel)
    # A run goes on while the kind stays the same and, for ids, each is the last plus one.
    goes_on = _continues(row, kind)
    bounds = [0, *(torch.nonzero(~goes_on).reshape(-1) + 1).tolist(), row.numel()]
    kinds, values = kind.tolist(), row.tolist()
    pieces: list[Piece] = []
    for i, j in itertools.pairwise(bounds):
        if kinds[i] == 0:
            pieces.append(Pad(j - i))
        elif kinds[i] == 1:
            pieces.extend(_flat_range_boxes(values[i], j - i, shape))
        else:
            pieces.append(Unknown(j - i))
    return merge_pieces(pieces)
