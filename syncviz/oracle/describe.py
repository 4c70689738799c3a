"""Say in words what a local tensor holds: "rows 0-3: Q heads 2-3; rows 4-5: K head 1".

Works on a map of ids (the oracle's :class:`~syncviz.provenance.RegionMap`) or on
any tensor of ids (a synchronizer's output), each first read as pieces
(:mod:`syncviz.oracle.index`), so the cost follows the number of blocks, not of
elements.

>>> from syncviz.spec import ModelSpec
>>> from syncviz.oracle.blocks import blocks
>>> from syncviz.oracle.dest import dest_maps
>>> spec = ModelSpec("tiny", "llama-mcore", 2, 8, 4, 2, 4, 70)
>>> describe(blocks("qkv", spec), dest_maps("qkv", spec, 2)[1])
'rows 0-3: Q heads 2-3; rows 4-5: K head 1; rows 6-7: V head 1'
>>> describe(blocks("embed", spec), dest_maps("embed", spec, 4)[2].ids())
'rows 0-5: vocab rows 64-69; rows 6-31: padding'
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from syncviz.errors import SyncvizError
from syncviz.geometry import intersection
from syncviz.oracle.blocks import DIM_NAMES, Block, pad_word
from syncviz.oracle.index import Box, Pad, Piece, ids_pieces, map_pieces
from syncviz.provenance import RegionMap

if TYPE_CHECKING:
    from syncviz.oracle.layout import ModelLayout, ParamLayout


def describe(
    target: ParamLayout | ModelLayout | Sequence[Block],
    ids: RegionMap | torch.Tensor,
    *,
    key: str | None = None,
    first: int = 0,
) -> str:
    """Describe ``ids`` (a map or a tensor of ids) of one parameter in words.

    ``target`` is the parameter (a ParamLayout), a ModelLayout with ``key``
    naming the parameter, or the parameter's blocks. ``ids`` may be a slice of a
    local tensor that starts at its row (element, expert) ``first``: the words then
    number the local rows from there.

    >>> from syncviz.spec import ModelSpec
    >>> from syncviz.oracle.blocks import blocks
    >>> from syncviz.oracle.dest import dest_maps
    >>> spec = ModelSpec("tiny", "llama-mcore", 2, 8, 4, 2, 4, 70)
    >>> describe(blocks("qkv", spec), dest_maps("qkv", spec, 2)[1].ids()[4:], first=4)
    'rows 4-5: K head 1; rows 6-7: V head 1'
    """
    blocks_ = _blocks_of(target, key)
    pieces: list[Piece] | None
    if isinstance(ids, RegionMap):
        pieces = map_pieces(ids, _shape_of(blocks_))
    else:
        try:
            pieces = ids_pieces(ids, _shape_of(blocks_))
        except SyncvizError:
            pieces = None
    if pieces is None:
        return f"{math.prod(ids.shape)} elements in no regular order"
    return describe_index(pieces, tuple(ids.shape), blocks_, first)


def _blocks_of(target: Any, key: str | None) -> Sequence[Block]:
    if hasattr(target, "param") and hasattr(target, "params"):
        if key is None:
            raise SyncvizError("describe() on a ModelLayout needs key=", fix="pass key=<vLLM name>")
        return target.param(key).blocks
    if hasattr(target, "blocks"):
        return target.blocks
    return list(target)


def _shape_of(blocks_: Sequence[Block]) -> tuple[int, ...]:
    ndim = blocks_[0].box.ndim
    return tuple(max(b.box.stop[d] for b in blocks_) for d in range(ndim))


def describe_index(
    pieces: Sequence[Piece], local_shape: Sequence[int], blocks_: Sequence[Block], first: int = 0
) -> str:
    """The words for the pieces of a local tensor of ``local_shape``, one segment per piece,
    regular patterns shortened; local places numbered from row (element, expert) ``first``."""
    shape = (local_shape[0] + first, *local_shape[1:])  # as if the rows before were there
    segments: list[tuple[int, int, Piece]] = []
    offset = first * math.prod(shape[1:])
    for piece in pieces:
        segments.append((offset, piece.numel, piece))
        offset += piece.numel
    segments = _fold_interleaved(segments)
    if len(shape) == 3 and shape[0] > 1:
        return _describe_stacked(segments, shape, blocks_)
    texts = [f"{_local_text(off, n, shape)}: {_piece_text(p, blocks_)}" for off, n, p in segments]
    return _shorten(texts)


def _describe_stacked(
    segments: list[tuple[int, int, Piece]], shape: tuple[int, ...], blocks_: Sequence[Block]
) -> str:
    """3-D locals (stacked experts): describe each slot, then merge slots that read alike."""
    slot = shape[1] * shape[2]
    texts: list[str] = []
    pending: list[tuple[int, str]] = []  # (slot index, inner text) for slot-local segments

    def flush() -> None:
        i = 0
        while i < len(pending):
            j = i
            while j + 1 < len(pending) and pending[j + 1] == (pending[j][0] + 1, pending[i][1]):
                j += 1
            first, last = pending[i][0], pending[j][0]
            where = _span("expert", first, last)
            texts.append(f"{where}{' each' if last > first else ''} ({pending[i][1]})")
            i = j + 1
        pending.clear()

    inner: list[str] = []
    current: int | None = None
    for off, n, piece in segments:
        x = off // slot
        if (off + n - 1) // slot != x:
            if current is not None:
                pending.append((current, ", ".join(inner)))
                inner, current = [], None
            flush()
            texts.append(f"{_local_text(off, n, shape)}: {_piece_text(piece, blocks_)}")
            continue
        if current is not None and x != current:
            pending.append((current, ", ".join(inner)))
            inner = []
        current = x
        local = _local_text(off - x * slot, n, shape[1:])
        inner.append(f"{local}: {_piece_text(piece, blocks_, self_expert=x)}")
    if current is not None:
        pending.append((current, ", ".join(inner)))
    flush()
    return _shorten(texts)


def _singular(word: str) -> str:
    return word[:-1] if word.endswith("s") else word


def _span(word: str, first: int, last: int) -> str:
    """``row 5`` or ``rows 0-3`` (``word`` is singular)."""
    return f"{word} {first}" if first == last else f"{word}s {first}-{last}"


def _local_text(off: int, n: int, shape: Sequence[int]) -> str:
    """Where a flat range of a local tensor lies, in its coarsest aligned terms."""
    names = DIM_NAMES.get(len(shape)) or tuple(f"dim{k}s" for k in range(len(shape)))
    strides = [math.prod(shape[k + 1 :]) for k in range(len(shape))]
    for k in range(len(shape)):
        inner = strides[k]
        if off % inner or n % inner:
            continue
        first, last = off // inner, (off + n) // inner - 1
        if first // shape[k] != last // shape[k]:
            continue
        prefix, rest = [], first // shape[k]
        for j in range(k - 1, -1, -1):
            rest, c = divmod(rest, shape[j])
            prefix.insert(0, f"{_singular(names[j])} {c}")
        where = _span(_singular(names[k]), first % shape[k], last % shape[k])
        return " ".join([*prefix, where])
    return f"elements {off}-{off + n - 1}"


@dataclass
class _Item:
    unit: str
    part: str | None
    first: int | None
    last: int | None
    partial: str
    full: bool


@dataclass(frozen=True)
class _Interleaved:
    """Two boxes read one unit of each in turn (a, b, a, b, ...): an interleaved gate/up."""

    a: Box
    b: Box

    @property
    def numel(self) -> int:
        return self.a.numel + self.b.numel


def _fold_interleaved(segments: list[tuple[int, int, Any]]) -> list[tuple[int, int, Any]]:
    """Runs of equal boxes alternating between two places, each stepping on by its own
    extent (g0, u0, g1, u1, ...), folded into one :class:`_Interleaved` segment.

    >>> rows = [Box((c + h, 0), (c + h + 1, 2)) for c in range(3) for h in (0, 4)]
    >>> [type(p).__name__ for _, _, p in _fold_interleaved([(2 * k, 2, b) for k, b in
    ...                                                      enumerate(rows)])]
    ['_Interleaved']
    """
    out: list[tuple[int, int, Any]] = []
    i = 0
    while i < len(segments):
        j = _interleave_end(segments, i)
        if j - i >= 4:  # at least two pairs
            a = Box(segments[i][2].start, segments[j - 2][2].stop)
            b = Box(segments[i + 1][2].start, segments[j - 1][2].stop)
            out.append((segments[i][0], sum(n for _, n, _ in segments[i:j]), _Interleaved(a, b)))
            i = j
        else:
            out.append(segments[i])
            i += 1
    return out


def _interleave_end(segments: list[tuple[int, int, Any]], i: int) -> int:
    """The end of the alternating run starting at segment ``i`` (``i`` if none)."""
    if i + 3 >= len(segments):
        return i
    a0, b0, a1 = (segments[i + k][2] for k in range(3))
    if not all(isinstance(p, Box) and p.order is None for p in (a0, b0, a1)):
        return i
    moved = [q for q in range(a0.ndim) if a1.start[q] != a0.start[q]]
    apart = [q for q in range(a0.ndim) if b0.start[q] != a0.start[q]]
    # One dim only, both the step and the gap between the two places (rows g_c, u_c, ...).
    if len(moved) != 1 or apart != moved or a0.extents != b0.extents:
        return i
    q = moved[0]
    step = a0.extents[q]
    if a1.start[q] - a0.start[q] != step:
        return i
    end = i
    for k in range(i, len(segments) - 1, 2):
        a, b = segments[k][2], segments[k + 1][2]
        shift = (k - i) // 2 * step
        if not all(isinstance(p, Box) and p.order is None for p in (a, b)):
            break
        want_a = tuple(x + (shift if d == q else 0) for d, x in enumerate(a0.start))
        want_b = tuple(x + (shift if d == q else 0) for d, x in enumerate(b0.start))
        if a.start != want_a or b.start != want_b or a.extents != a0.extents != b.extents:
            break
        end = k + 2
    return end


def _piece_text(piece: Any, blocks_: Sequence[Block], self_expert: int | None = None) -> str:
    if isinstance(piece, _Interleaved):
        a = _piece_text(piece.a, blocks_, self_expert)
        return f"{a} and {_piece_text(piece.b, blocks_, self_expert)}, interleaved"
    if isinstance(piece, Pad):
        return pad_word(blocks_)
    if not isinstance(piece, Box):
        return "values that are not ids of this parameter"
    items = _items(piece, blocks_)
    words = []
    for item in items:
        head = item.unit
        if item.first is not None:
            if (
                item.unit == "expert"
                and self_expert is not None
                and item.first == item.last == self_expert
            ):
                head = ""
            else:
                head = _span(item.unit, item.first, item.last)  # type: ignore[arg-type]
        text = " ".join(w for w in (head, item.part or "", item.partial) if w)
        words.append(text or "whole expert")
    suffix = " (transposed)" if piece.is_transposed else ""
    return ", ".join(words) + suffix


def block_names(box: Box, blocks_: Sequence[Block]) -> str:
    """The blocks a box meets, by name only (how much of each aside), alike ones grouped.

    >>> from syncviz.spec import ModelSpec
    >>> from syncviz.oracle.blocks import blocks
    >>> spec = ModelSpec("tiny", "llama-mcore", 2, 8, 4, 2, 4, 70)
    >>> block_names(Box((0, 1), (8, 6)), blocks("o_proj", spec))  # columns 1-5: heads of 2
    'heads 0-2'
    """
    runs: list[list] = []  # [unit, part, first, last]
    for item in _items(box, blocks_):
        last = runs[-1] if runs else None
        if (
            last is not None
            and item.first is not None
            and last[3] is not None
            and (last[0], last[1]) == (item.unit, item.part)
            and item.first == last[3] + 1
        ):
            last[3] = item.last
        else:
            runs.append([item.unit, item.part, item.first, item.last])
    names = []
    for unit, part, first, last in runs:
        head = unit if first is None else _span(unit, first, last)
        names.append(" ".join(w for w in (head, part or "") if w))
    return ", ".join(names)


def _items(box: Box, blocks_: Sequence[Block]) -> list[_Item]:
    """The blocks a box touches, whole experts folded, consecutive alike blocks grouped."""
    names = DIM_NAMES.get(box.ndim) or tuple(f"dim{k}s" for k in range(box.ndim))
    parts_per_index: dict[tuple[str, int], int] = {}
    for b in blocks_:
        if b.index is not None and b.part is not None:
            parts_per_index[(b.unit, b.index)] = parts_per_index.get((b.unit, b.index), 0) + 1
    raw: list[tuple[Block, str, bool]] = []
    for b in blocks_:
        met = intersection(box.start, box.stop, b.box.start, b.box.stop)
        if met is None:
            continue
        lo, hi = met
        partial = []
        for d in range(box.ndim):
            if (lo[d], hi[d]) != (b.box.start[d], b.box.stop[d]):
                base = b.box.start[d]
                partial.append(_span(_singular(names[d]), lo[d] - base, hi[d] - 1 - base))
        raw.append((b, " ".join(partial), not partial))
    # Fold all parts of a fully covered expert into one "expert e".
    folded: list[_Item] = []
    i = 0
    while i < len(raw):
        b, partial, full = raw[i]
        key = (b.unit, b.index) if b.index is not None else None
        count = parts_per_index.get(key, 0) if key else 0
        run = raw[i : i + count]
        if (
            count > 1
            and len(run) == count
            and all(r[0].unit == b.unit and r[0].index == b.index and r[2] for r in run)
        ):
            folded.append(_Item(b.unit, None, b.index, b.index, "", True))
            i += count
            continue
        folded.append(_Item(b.unit, b.part, b.index, b.index, partial, full))
        i += 1
    grouped: list[_Item] = []
    for item in folded:
        last = grouped[-1] if grouped else None
        if (
            last is not None
            and item.first is not None
            and last.last is not None
            and (last.unit, last.part, last.partial) == (item.unit, item.part, item.partial)
            and item.first == last.last + 1
        ):
            last.last = item.first
        else:
            grouped.append(item)
    return grouped


_NUMBER = re.compile(r"\d+")


def _shorten(texts: list[str], min_repeats: int = 4) -> str:
    """Join segments with "; ", eliding the middle of arithmetic repeats of 1-4 segments."""
    best = "; ".join(texts)
    for period in (1, 2, 3, 4):
        candidate = "; ".join(_elide(texts, period, min_repeats))
        if len(candidate) < len(best):
            best = candidate
    return best


def _elide(texts: list[str], period: int, min_repeats: int) -> list[str]:
    chunks = ["; ".join(texts[i : i + period]) for i in range(0, len(texts), period)]
    templates = [_NUMBER.sub("#", c) for c in chunks]
    numbers = [[int(x) for x in _NUMBER.findall(c)] for c in chunks]
    out: list[str] = []
    i = 0
    while i < len(chunks):
        j = i
        if i + 1 < len(chunks) and templates[i + 1] == templates[i]:
            step = [b - a for a, b in zip(numbers[i], numbers[i + 1], strict=True)]
            j = i + 1
            while (
                j + 1 < len(chunks)
                and templates[j + 1] == templates[i]
                and [b - a for a, b in zip(numbers[j], numbers[j + 1], strict=True)] == step
            ):
                j += 1
        count = j - i + 1
        if count >= min_repeats:
            out += [chunks[i], f"... {count - 2} more alike ...", chunks[j]]
        else:
            out += chunks[i : j + 1]
        i = j + 1
    return out
