"""Row segments: the unit of comparison and of look-up between a rank's tensor and the checkpoint.

A local tensor is cut into segments of ``L`` elements, ``L`` the largest size
at which the oracle's expected layout moves data (whole rows for
column-parallel weights, column blocks for row-parallel ones, head slices of a
bias). Each segment is either equal, bit for bit, to the expected one, or is
looked up among the checkpoint's segments by a fingerprint (a few sampled
elements) and then verified exactly: a hash hit alone never decides.

>>> import torch
>>> g = torch.arange(24, dtype=torch.float32).view(6, 4)
>>> index = SegmentIndex(g, 4)
>>> index.find(torch.stack([g[5], g[2], torch.full((4,), 7.5)])).tolist()
[20, 8, -1]
"""

from __future__ import annotations

import math

import torch

from syncviz.geometry import row_major
from syncviz.oracle import Box, Pad, map_pieces
from syncviz.provenance import RegionMap

_SAMPLES = 16  # elements sampled per segment for its fingerprint
_MAX_CANDIDATES = 64  # segments sharing one fingerprint tried before giving up
_GEN = torch.Generator().manual_seed(0x5EC)
# Sampled elements are split into 16-bit chunks and weighted by coefficients below 2**40:
# at most 64 terms below 2**55 each, so the sum never overflows int64.
_COEF = torch.randint(1, 2**40, (_SAMPLES * 4,), generator=_GEN, dtype=torch.int64)


def bits(t: torch.Tensor) -> torch.Tensor:
    """``t`` reinterpreted as integers of its element size (bit-exact comparison, NaN too).

    >>> bits(torch.tensor([1.0], dtype=torch.bfloat16)).tolist()
    [16256]
    """
    kind = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    return t.contiguous().view(kind)


def segment_length(index: RegionMap, global_shape: tuple[int, ...]) -> int:
    """The segment length of a local tensor: the gcd of its pieces' innermost extents.

    Every piece's innermost line is contiguous in the global tensor, so a
    segment never straddles two unrelated places; for 2-D and 3-D tensors a
    segment also stays inside one local row.

    >>> from syncviz.oracle.slicing import cols_map
    >>> segment_length(cols_map((4, 8), 1, 2), (4, 8))
    4
    """
    g = index.shape[-1] if len(index.shape) > 1 else 0
    for piece in _pieces(index, global_shape):
        if isinstance(piece, Box):
            # A transposed piece's innermost local dim is strided globally: 1-element segments.
            last = piece.dims[-1]
            inner = piece.extents[last] if last == piece.ndim - 1 else 1
        else:
            inner = piece.numel
        g = math.gcd(g, inner)
    return max(g, 1)


def segment_starts(index: RegionMap, global_shape: tuple[int, ...], length: int) -> torch.Tensor:
    """The global start id of every segment of ``index``, in local order (-1: padding).

    >>> from syncviz.oracle.slicing import cols_map
    >>> segment_starts(cols_map((2, 8), 1, 2), (2, 8), 2).tolist()
    [4, 6, 12, 14]
    """
    strides = row_major(global_shape)
    parts = []
    for piece in _pieces(index, global_shape):
        if not isinstance(piece, Box):
            parts.append(torch.full((piece.numel // length,), -1, dtype=torch.int64))
            continue
        dims = piece.dims
        line = torch.tensor([sum(a * s for a, s in zip(piece.start, strides, strict=True))])
        for d in dims[:-1]:
            axis = torch.arange(piece.stop[d] - piece.start[d], dtype=torch.int64) * strides[d]
            line = (line[:, None] + axis[None, :]).reshape(-1)
        last = dims[-1]
        inner = torch.arange(0, piece.stop[last] - piece.start[last], length) * strides[last]
        parts.append((line[:, None] + inner[None, :]).reshape(-1))
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)


def _pieces(index: RegionMap, global_shape: tuple[int, ...]) -> list:
    """The oracle's pieces of a local tensor (its map always compresses to them)."""
    pieces = map_pieces(index, global_shape)
    assert pieces is not None, "the oracle's maps are boxes and padding"
    return pieces


def wide(t: torch.Tensor, length: int) -> tuple[torch.Tensor, int]:
    """``t`` (integer bits) seen as int64 words when its layout allows; and the new length.

    Comparing 4 bf16 values per word is the same bit-exact test, several times faster.
    """
    per = 8 // t.element_size()
    if per == 1 or length % per or t.dim() == 0 or t.shape[-1] % per:
        return t, length
    if t.stride(-1) != 1 or t.storage_offset() % per:
        return t, length
    if any(stride % per for stride in t.stride()[:-1]):
        return t, length
    return t.view(torch.int64), length // per


def compare(actual: torch.Tensor, reference: torch.Tensor, index: RegionMap, length: int):
    """Per segment of ``actual``: does it equal the reference at ``index``, bit for bit?

    ``reference`` is the global tensor already cast to ``actual``'s dtype;
    padding segments must be zero (either sign). Reads the reference box by box,
    so no expected copy of the whole local tensor is made; a box that matches
    whole (the common case) costs one pass.
    """
    flat_actual = bits(actual).reshape(-1)
    gbits = bits(reference)
    out = []
    offset = 0
    for piece in _pieces(index, tuple(reference.shape)):
        n = piece.numel
        part = flat_actual[offset : offset + n]
        if isinstance(piece, Pad):
            vals = actual.reshape(-1)[offset : offset + n]
            out.append((vals == 0).reshape(-1, length).all(dim=1))
            offset += n
            continue
        assert isinstance(piece, Box)
        want = gbits[tuple(slice(a, b) for a, b in zip(piece.start, piece.stop, strict=True))]
        if piece.order is not None:
            want = want.permute(piece.order)
        got = part.view(want.shape)
        got_w, width = wide(got, length)
        want_w, want_width = wide(want, length)
        if width != want_width:  # one side could not be widened: compare element by element
            got_w, want_w, width = got, want, length
        if torch.equal(got_w, want_w):
            out.append(torch.ones(n // length, dtype=torch.bool))
        else:
            out.append((got_w == want_w).reshape(-1, width).all(dim=1))
        offset += n
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def _fingerprint(segments: torch.Tensor) -> torch.Tensor:
    length = segments.shape[1]
    pos = torch.linspace(0, length - 1, min(length, _SAMPLES)).round().to(torch.int64)
    sampled = segments[:, pos]
    if sampled.element_size() == 1:  # 8-bit values: widen, so pairs need not exist
        sampled = sampled.to(torch.int16)
    chunks = sampled.contiguous().view(torch.int16).to(torch.int64)
    return (chunks * _COEF[: chunks.shape[1]]).sum(dim=1)


class SegmentIndex:
    """All aligned segments of one global tensor, fingerprinted, for exact look-up."""

    def __init__(self, reference: torch.Tensor, length: int) -> None:
        self.length = length
        self.segments = bits(reference).reshape(-1, length)
        self.words, self.width = wide(self.segments, length)  # for the exact check
        prints = _fingerprint(self.segments)
        self.sorted, self.order = prints.sort()

    def find(self, queries: torch.Tensor) -> torch.Tensor:
        """Global start id of an exactly equal segment for each query row, or -1."""
        q = bits(queries).reshape(-1, self.length)
        if not q.shape[0]:
            return torch.zeros(0, dtype=torch.int64)
        prints = _fingerprint(q)
        lo = torch.searchsorted(self.sorted, prints)
        hi = torch.searchsorted(self.sorted, prints, right=True)
        found = torch.full((q.shape[0],), -1, dtype=torch.int64)
        has = hi > lo
        if not bool(has.any()):
            return found
        first = self.order[lo.clamp(max=self.sorted.numel() - 1)]
        q_words, width = wide(q, self.length)
        if width == self.width:
            exact = has & (self.words[first] == q_words).all(dim=1)
        else:
            exact = has & (self.segments[first] == q).all(dim=1)
        found[exact] = first[exact] * self.length
        # A fingerprint shared by several segments: try the others, still exactly.
        for i in torch.nonzero(has & ~exact & (hi - lo > 1)).flatten().tolist():
            for j in range(int(lo[i]) + 1, min(int(hi[i]), int(lo[i]) + _MAX_CANDIDATES)):
                cand = int(self.order[j])
                if torch.equal(self.segments[cand], q[i]):
                    found[i] = cand * self.length
                    break
        return found
