"""Which elements of a global tensor a local tensor holds: a map of ids, built of pieces.

The oracle says what a local tensor holds as a :class:`~syncviz.provenance.RegionMap`
of the parameter's ids (row-major positions in its global, unsharded tensor; -1 marks
padding). Pieces are how such a map is built and how it is read back for words: laid
end to end in the local tensor's flat (row-major) memory, then viewed to its shape,
each is a hyper-rectangle of the global tensor (:class:`Box`, optionally read in
another dim order, as for a transposed copy), padding (:class:`Pad`) or values that
are no ids of the tensor (:class:`Unknown`). :func:`boxes_map` builds a map of
pieces, :func:`map_pieces` reads a map's pieces back (element-free) and
:func:`ids_pieces` the pieces of a tensor of ids.

>>> cols = boxes_map((4, 6), (4, 2), [Box((0, 2), (4, 4))])  # columns 2-3 of a [4, 6] tensor
>>> cols.ids().tolist()
[[2, 3], [8, 9], [14, 15], [20, 21]]
>>> map_pieces(cols, (4, 6)) == ids_pieces(cols.ids(), (4, 6)) == [Box((0, 2), (4, 4))]
True
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from syncviz.errors import SyncvizError
from syncviz.geometry import row_major, unravel
from syncviz.provenance import RegionMap

PAD_ID = -1
UNKNOWN_ID = -3  # a value that is no id of the tensor (run.values.FOREIGN_ID)
MAX_PIECES = 250_000  # past this many pieces a map or a tensor is not worth describing


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
    """``numel`` elements whose values are no ids of this tensor (read back, never built)."""

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
        coords = unravel(pos, shape, check=True)
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

    These are the pieces :func:`ids_pieces` finds for the same ids, built
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
    start = unravel(first, shape, check=True)
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
    where ids stop counting up by one, as :func:`ids_pieces` splits an
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


def boxes_map(
    global_shape: Sequence[int], shape: Sequence[int], pieces: Iterable[Piece]
) -> RegionMap:
    """The map of ids a local tensor of ``shape`` holds: ``pieces`` laid end to end in its
    flat memory (padding -1, unknown values -3), viewed to ``shape``.

    >>> m = boxes_map((4, 2), (3, 2), [Box((2, 0), (4, 2)), Pad(2)])
    >>> m.ids().tolist()
    [[4, 5], [6, 7], [-1, -1]]
    """
    global_shape, shape = tuple(global_shape), tuple(shape)
    pieces = merge_pieces(pieces)
    total = sum(p.numel for p in pieces)
    if total != math.prod(shape):
        raise SyncvizError(
            f"pieces hold {total} elements but local shape {shape} needs {math.prod(shape)}",
            fix="make the pieces cover the local tensor exactly",
        )
    strides = row_major(global_shape)
    parts = []
    for piece in pieces:
        if isinstance(piece, Box):
            dims = piece.dims
            extents = tuple(piece.stop[d] - piece.start[d] for d in dims)
            offset = sum(a * s for a, s in zip(piece.start, strides, strict=True))
            parts.append(RegionMap.affine(extents, offset, tuple(strides[d] for d in dims)))
        else:
            value = float(PAD_ID if isinstance(piece, Pad) else UNKNOWN_ID)
            parts.append(RegionMap.constant((piece.numel,), value))
    if len(parts) == 1:
        return parts[0].reshape(shape)
    if not parts:
        return RegionMap(shape, [])
    # Pieces laid end to end in flat memory: join them as whole rows where they allow it.
    inner = math.prod(shape[1:]) if len(shape) > 1 else 1
    if shape and all(p.numel % inner == 0 for p in parts):
        rows = [p.reshape((p.numel // inner, *shape[1:])) for p in parts]
        return RegionMap.cat(rows, 0)
    flat = RegionMap.cat([p.reshape((p.numel,)) for p in parts], 0)
    return flat.reshape(shape)


def whole_map(global_shape: Sequence[int]) -> RegionMap:
    """The whole global tensor, as a replicated parameter holds it.

    >>> whole_map((3,)).ids().tolist()
    [0, 1, 2]
    """
    return RegionMap.affine(global_shape, 0, row_major(global_shape))


def runs_pieces(runs: Iterable[tuple[int, int]], global_shape: Sequence[int]) -> list[Piece]:
    """Pieces of run-length ids ``(start_id, length)``: a start of -1 is padding, any other
    negative start values that are no ids.

    >>> runs_pieces([(1, 2), (-1, 2)], (2, 3))
    [Box(start=(0, 1), stop=(1, 3), order=None), Pad(numel=2)]
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
    return merge_pieces(pieces)


def ids_pieces(
    ids: torch.Tensor, global_shape: Sequence[int], *, max_runs: int = MAX_PIECES
) -> list[Piece]:
    """The pieces of any tensor of ids (e.g. a synchronizer's output), found vectorized.

    Values that are neither -1 nor a valid id of ``global_shape`` become
    :class:`Unknown` pieces. A tensor so irregular that it needs more than
    ``max_runs`` rows or runs to describe raises :class:`SyncvizError`
    (compressing it would cost more than it tells).

    >>> ids_pieces(torch.tensor([[4, 5], [0, 1]]), (3, 2))
    [Box(start=(2, 0), stop=(3, 2), order=None), Box(start=(0, 0), stop=(1, 2), order=None)]
    """
    global_shape = tuple(global_shape)
    shape = tuple(ids.shape)
    if ids.dtype.is_floating_point:
        whole = (ids == torch.round(ids)) & torch.isfinite(ids) & (ids.abs() < 2.0**62)
        ids = torch.where(whole, ids, torch.full_like(ids, float(UNKNOWN_ID))).to(torch.int64)
    else:
        ids = ids.to(torch.int64)
    numel = math.prod(global_shape)
    cols = shape[-1] if len(shape) > 1 else max(1, math.prod(shape))
    rows2d = ids.reshape(-1, cols) if ids.numel() else ids.reshape(0, cols)
    pieces: list[Piece] = []
    for row_pieces in _classify_rows(rows2d, global_shape, numel, max_runs):
        pieces.extend(row_pieces)
    return merge_pieces(pieces)


def map_pieces(
    region_map: RegionMap,
    global_shape: Sequence[int],
    base: int = 0,
    *,
    limit: int = MAX_PIECES,
) -> list[Piece] | None:
    """What ``region_map`` holds of the tensor whose ids start at ``base``, as pieces,
    element-free: the pieces :func:`ids_pieces` finds in its ids less ``base``.

    Values that are no ids of the tensor (other parameters' ids, markers other than
    -1) become :class:`Unknown`. None when a region is not one box or flat range of the
    tensor, or the map needs more than ``limit`` pieces (the caller then reads the
    elements).

    >>> m = RegionMap.affine((4, 3), 100, (6, 1)).slice(1, 0, 2)  # 2 of a row of 6
    >>> map_pieces(m, (4, 6), 100)
    [Box(start=(0, 0), stop=(4, 2), order=None)]
    >>> map_pieces(m.permute((1, 0)), (4, 6), 100)  # transposed
    [Box(start=(0, 0), stop=(4, 2), order=(1, 0))]
    >>> map_pieces(RegionMap.cat([m, RegionMap.constant((1, 2), -1.0)], 0), (4, 6), 100)[-1]
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
    return merge_pieces(pieces)


CHUNK_ELEMENTS = 2**16  # an irregular chunk up to this size is read element by element


def _chunk_pieces(value, dims, base, numel, global_shape) -> list[Piece] | None:
    """The pieces of one flat-contiguous chunk: ``value`` at its start, affine ``dims``."""
    count = math.prod(n for n, _ in dims)
    moving = [(n, s) for n, s in dims if n > 1 and s]
    low = value + sum(min(0, s * (n - 1)) for n, s in moving)
    high = value + sum(max(0, s * (n - 1)) for n, s in moving)
    if not moving and (value < base or value >= base + numel):  # a marker, or foreign
        return [Pad(count) if value == PAD_ID else Unknown(count)]
    if moving and base <= low and high < base + numel and value == int(value):
        found = affine_pieces(int(value) - base, dims, global_shape)
        if found is not None:
            return found
    if count > CHUNK_ELEMENTS:
        # Too big to read: one piece per step of its outermost dim (experts held apart,
        # e.g. every fourth one, join into one region that no box describes).
        n, s = dims[0]
        if len(dims) < 2 or n < 2 or n > MAX_PIECES:
            return None
        out: list[Piece] = []
        for i in range(n):
            found = _chunk_pieces(value + i * s, dims[1:], base, numel, global_shape)
            if found is None:
                return None
            out.extend(found)
        return out
    # Irregular (ids that repeat, step back, or leave the tensor): read its elements.
    values = torch.full((1,) * len(dims), float(value), dtype=torch.float64)
    for k, (n, s) in enumerate(dims):
        shape = [1] * len(dims)
        shape[k] = n
        values = values + (torch.arange(n, dtype=torch.float64) * s).view(shape)
    local = values.reshape(-1) - base
    inside = (local >= 0) & (local < numel) & (local == local.round())
    ids = torch.where(inside, local, torch.full_like(local, float(UNKNOWN_ID)))
    ids = torch.where(values.reshape(-1) < 0, values.reshape(-1), ids)
    return flat_pieces(ids, global_shape)


def _chunks(m: RegionMap, limit: int) -> list[tuple[float, list[tuple[int, int]]]] | None:
    """``m``'s values in flat (row-major) order as chunks, each contiguous in ``m``'s
    memory and affine: (value at its start, [(extent, stride)] over its dims). A lazy
    reshape is read segment by segment. None past ``limit`` chunks."""
    out: list[tuple[float, list[tuple[int, int]]]] = []
    for seg in m.segments:
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
    coords = unravel(start, shape, check=True)
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
