"""Judge real vLLM rank dumps against the checkpoint they came from, segment by segment.

Pass 1 reads one parameter's global tensor and every rank's tensor of it,
compares them segment by segment with what the oracle says the rank must hold
(exact, in the dump's dtype), and looks each wrong segment up in the same
parameter. With earlier checkpoints (``previous``), a segment that holds
one's values in its own place is stale, before any other look-up. Pass 2 looks
the segments still unexplained up in the other parameters of the diagnosed
layers, one global tensor at a time. Pass 3 looks what is still unexplained up
anywhere in the earlier checkpoints: values found there are stale too. What is
found nowhere stays "not found": nothing is guessed (nor is a hit of a segment of
a byte or two taken alone: see :func:`coherent`). Tensors the engine emptied,
repacked or quantized after loading (empty in the dump, or named in the rank's
note) are not checkable, and so is the one back-end transform recognised from
the decoded provenance: every expert's w13 halves exchanged on a rank.

>>> from syncviz.diagnose.fixtures import planted
>>> ref, dump = planted("mixtral", tp=2, bugs={"router": "noise"})
>>> diagnosis = run_diagnosis(ref, dump, 2)
>>> [(d.tp, d.status) for per_rank in diagnosis.decoded for d in per_rank if d.status != "ok"]
[(1, 'wrong')]
>>> bad = next(d for per_rank in diagnosis.decoded for d in per_rank if d.status != "ok")
>>> bad.source.tolist() == [NOT_FOUND] * bad.source.numel()
True
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from syncviz.compare import compare_maps
from syncviz.diagnose.dumps import normalise, open_dumps, rank_file, rank_label
from syncviz.diagnose.reference import Reference
from syncviz.diagnose.segments import (
    SegmentIndex,
    bits,
    compare,
    segment_length,
    segment_starts,
    wide,
)
from syncviz.dump import read_notes
from syncviz.errors import SyncvizError
from syncviz.oracle import ModelLayout, ParamLayout, model_layout
from syncviz.oracle.dest import dest_maps
from syncviz.parallel import Parallel
from syncviz.progress import progress
from syncviz.provenance import Region, RegionMap, ids_map
from syncviz.run.plan import id_bases
from syncviz.run.values import UNWRITTEN_ID

ZEROS = -1  # source code of a segment that is all zeros (where data was expected)
NOT_FOUND = -2  # source code of a segment found nowhere in the reference
REORDERED = -3  # source code of a segment holding exactly its expected elements, reordered
STALE = -10  # source code of a segment found in previous checkpoint k: STALE - k
NOT_FOUND_ID = -4.0
"""The id a segment found nowhere as it is (not found, reordered, stale) reads as in a
decoded tensor's map (not -1, -2 or -3)."""
REFERENCE = Parallel(tp=1)  # the checkpoint plays the one, unsharded trainer rank
# A value look-up names where a segment came from only for at least this many bytes: one
# or two bf16 values turn up by chance anywhere. Shorter segments (gpt-oss's interleaved
# w13 bias, per-head sinks) count only in runs of consecutive hits that long.
MIN_FOUND_BYTES = 8


def coherent(segments: torch.Tensor, found: torch.Tensor, length: int, itemsize: int):
    """``found`` (start ids, -1 none) of ``segments`` with hits too short to mean anything
    dropped: a hit stands when the run of hits it belongs to (next segment, next place)
    covers :data:`MIN_FOUND_BYTES`.

    >>> coherent(torch.tensor([0, 1, 2, 3, 7]), torch.tensor([8, 9, 10, 11, 40]), 1, 2).tolist()
    [8, 9, 10, 11, -1]
    """
    if length * itemsize >= MIN_FOUND_BYTES or not found.numel():
        return found
    hit = found >= 0
    link = (segments[1:] == segments[:-1] + 1) & (found[1:] == found[:-1] + length)
    link &= hit[1:] & hit[:-1]
    run = torch.cumsum(torch.cat([torch.ones(1, dtype=torch.long), (~link).long()]), 0) - 1
    size = torch.bincount(run)[run] * length * itemsize
    return torch.where(hit & (size >= MIN_FOUND_BYTES), found, -1)


@dataclass
class Decoded:
    """One rank's tensor of one parameter, decoded segment by segment.

    ``source[k]`` is the index (in the layout) of the parameter segment ``k``
    came from, or ZEROS / NOT_FOUND / REORDERED; ``start[k]`` its first global id there.
    ``expected[k]`` is the start id the oracle wants. ``status`` is ok, wrong,
    missing (not in the rank's file), shape (present with another shape) or
    uncheckable (``why``: empty, shape or dtype as the engine left it, or
    w13_swapped). A stale segment's source is ``STALE - k`` (previous checkpoint
    k), ``stale_param[k]`` the parameter it was found in there. A wrong tensor's
    ``wrong[k]``: is segment k wrong, as the checker's comparison decides
    (:func:`wrong_segments`, once every look-up is done).
    """

    param: int
    pp: int
    tp: int
    shape: tuple[int, ...]
    length: int
    expected: torch.Tensor
    status: str = "ok"
    source: torch.Tensor | None = None
    start: torch.Tensor | None = None
    dump_shape: tuple[int, ...] | None = None
    why: str | None = None
    dump_dtype: str | None = None
    stale_param: torch.Tensor | None = None

    wrong: torch.Tensor | None = None  # per segment of a wrong tensor: see wrong_segments

    def verdict(self, ok: torch.Tensor) -> torch.Tensor | None:
        """Every segment as the oracle expects it, then: the indices of the ones not ``ok``
        (the tensor is wrong), or None when every one is.

        >>> dec = Decoded(0, 0, 0, (2,), 1, torch.tensor([0, 1]))
        >>> dec.verdict(torch.tensor([True, False])).tolist(), dec.status
        ([1], 'wrong')
        """
        self.source = torch.full_like(self.expected, self.param)
        self.start = self.expected.clone()
        if bool(ok.all()):
            return None
        self.status = "wrong"
        return torch.nonzero(~ok).flatten()

    def mark(self, segments: torch.Tensor, source: int) -> None:
        """``segments`` hold no parameter's data at a start id (``source`` is ZEROS,
        NOT_FOUND or REORDERED)."""
        assert self.source is not None and self.start is not None
        self.source[segments] = source
        self.start[segments] = -1

    def place(
        self, rest: torch.Tensor, found: torch.Tensor, signed_zero: torch.Tensor
    ) -> torch.Tensor:
        """The look-up of segments ``rest`` in this parameter: ``found`` their start ids
        (-1: not there); ``signed_zero`` the ones that are zeros after all. Returns the
        misses (neither), marked NOT_FOUND."""
        assert self.start is not None
        hit = found >= 0
        self.start[rest[hit]] = found[hit]
        self.mark(rest[signed_zero], ZEROS)
        miss = ~hit & ~signed_zero
        self.mark(rest[miss], NOT_FOUND)
        return miss


def decoded_map(
    dec: Decoded, bases: torch.Tensor, shape: tuple[int, ...] | None = None
) -> RegionMap:
    """``dec``'s tensor as a map of model-wide ids (``bases[i]``: parameter ``i``'s first
    id), in ``shape`` (its own by default), built from its segments without reading an
    element: zeros where data was expected (and expected padding) read as -1, a segment
    found nowhere as it is as :data:`NOT_FOUND_ID`, a tensor never judged as never written.

    >>> dec = Decoded(1, 0, 0, (2, 4), 2, torch.tensor([4, 6, 0, 2]))
    >>> _ = dec.verdict(torch.tensor([True, True, False, False]))
    >>> dec.mark(torch.tensor([2]), ZEROS); dec.mark(torch.tensor([3]), NOT_FOUND)
    >>> decoded_map(dec, torch.tensor([0, 100])).materialize().tolist()
    [[104.0, 105.0, 106.0, 107.0], [-1.0, -1.0, -4.0, -4.0]]
    """
    shape = dec.shape if shape is None else shape
    if dec.source is None or dec.start is None:
        return RegionMap.constant(shape, UNWRITTEN_ID)
    source, length = dec.source, dec.length
    first = (bases[source.clamp(min=0)] + dec.start).to(torch.float64)
    first[source == ZEROS] = -1.0
    first[(source == NOT_FOUND) | (source == REORDERED) | (source <= STALE)] = NOT_FOUND_ID
    first[(source >= 0) & (dec.start < 0)] = -1.0  # expected padding, held as zeros
    if length == 1 or not first.numel():  # segments are elements
        return ids_map(first).reshape(shape)
    # Runs of one step are whole segments joined where the ids go on (or the marker repeats):
    # the runs a row-major reading of the elements would make.
    real = first >= 0
    on = torch.where(real[:-1], first[1:] == first[:-1] + length, first[1:] == first[:-1])
    cuts = [0, *(torch.nonzero(~on).flatten() + 1).tolist(), first.numel()]
    offsets = first[cuts[:-1]].tolist()
    steps = real[cuts[:-1]].tolist()
    regions = [
        Region((a * length,), (b * length,), v, (int(s),))
        for a, b, v, s in zip(cuts[:-1], cuts[1:], offsets, steps, strict=True)
    ]
    return RegionMap((first.numel() * length,), regions).reshape(shape)


def wrong_segments(dec: Decoded, expected: RegionMap, bases: torch.Tensor) -> torch.Tensor:
    """Per segment of ``dec``: is it wrong? The checker's comparison decides, of its map
    (:func:`decoded_map`) against ``expected`` (the oracle's map of model-wide ids), both
    seen one segment a row.

    >>> dec = Decoded(0, 0, 0, (4,), 2, torch.tensor([0, 2]))
    >>> _ = dec.verdict(torch.tensor([True, False]))
    >>> dec.mark(torch.tensor([1]), ZEROS)
    >>> wrong_segments(dec, RegionMap.affine((4,), 10, (1,)), torch.tensor([10])).tolist()
    [False, True]
    """
    rows = (dec.expected.numel(), dec.length)
    diff = compare_maps(decoded_map(dec, bases, rows), expected.reshape(rows))
    wrong = torch.zeros(rows[0], dtype=torch.bool)
    for a, b in diff.wrong_rows:
        wrong[a:b] = True
    return wrong


def _judge_segments(layout: ModelLayout, decoded: list[list[Decoded]]) -> None:
    """Set every wrong tensor's wrong segments, by :func:`wrong_segments`."""
    bases = id_bases(layout)
    firsts = torch.tensor([bases[p.key] for p in layout.params], dtype=torch.int64)
    for param, per_rank in zip(layout.params, decoded, strict=True):
        for t, dec in zip(param.dst, per_rank, strict=True):
            if dec.status == "wrong":
                dec.wrong = wrong_segments(dec, t.index.shifted(bases[param.key]), firsts)


@dataclass
class Pending:
    """Segments of one decoded tensor found nowhere yet, with what the rank holds there.

    The searches are shared; how a held segment is looked up differs by rank file:
    its values (:class:`ValuePending`, a full dump) or its fingerprint (a fingerprint file).
    """

    decoded: Decoded
    segments: torch.Tensor  # positions in decoded

    def key(self) -> tuple:
        """What an index must match to serve this look-up (equal keys share one index)."""
        raise NotImplementedError

    def index(self, glob: torch.Tensor) -> Any:
        """An index of ``glob``'s aligned segments for :meth:`find`."""
        raise NotImplementedError

    def find(self, index: Any) -> torch.Tensor:
        """Per pending segment: the start id of an equal segment in ``index``, or -1."""
        raise NotImplementedError

    def in_place(self, glob: torch.Tensor) -> torch.Tensor:
        """Per pending segment: its expected start id when ``glob`` holds it there, else -1."""
        raise NotImplementedError

    def reordered(self, glob: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """Of the pending segments ``real``: does each hold its expected elements reordered?"""
        raise NotImplementedError

    def keep(self, mask: torch.Tensor) -> None:
        """Keep only the pending segments where ``mask`` is true."""
        raise NotImplementedError


@dataclass
class ValuePending(Pending):
    """Pending segments of a full dump, with their values."""

    values: torch.Tensor  # [n, length] in the dump's dtype

    def key(self) -> tuple:
        return (self.values.dtype, self.decoded.length)

    def index(self, glob: torch.Tensor) -> Any:
        return SegmentIndex(glob.to(self.values.dtype), self.decoded.length)

    def find(self, index: Any) -> torch.Tensor:
        found = index.find(self.values)
        return coherent(self.segments, found, self.decoded.length, self.values.element_size())

    def in_place(self, glob: torch.Tensor) -> torch.Tensor:
        starts = self.decoded.expected[self.segments]
        length = self.decoded.length
        found = torch.full_like(starts, -1)
        real = starts >= 0  # padding is never stale
        if not bool(real.any()):
            return found
        ids = starts[real][:, None] + torch.arange(length)[None, :]
        there = bits(glob.to(self.values.dtype)).reshape(-1)[ids]
        equal = (there == bits(self.values[real]).reshape(-1, length)).all(dim=1)
        found[torch.nonzero(real).flatten()[equal]] = starts[real][equal]
        return found

    def reordered(self, glob: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        length = self.decoded.length
        ids = self.decoded.expected[self.segments][real][:, None] + torch.arange(length)[None, :]
        want = bits(glob.to(self.values.dtype)).reshape(-1)[ids].sort(dim=1).values
        got = bits(self.values[real]).reshape(-1, length).sort(dim=1).values
        return (want == got).all(dim=1)

    def keep(self, mask: torch.Tensor) -> None:
        self.segments, self.values = self.segments[mask], self.values[mask]


@dataclass
class Diagnosis:
    """Everything a diagnosis found: per parameter and rank, plus file-level notes."""

    reference: Reference
    layout: ModelLayout
    dumps: dict[tuple[int, int], Any]  # RankDump, or a fingerprint file's PrintDump
    decoded: list[list[Decoded]]  # per parameter, per destination tensor
    notes: list[str] = field(default_factory=list)
    previous: list[Reference] = field(default_factory=list)
    missed: dict[tuple[int, int], int] = field(default_factory=dict)  # rank -> previous k

    @property
    def dst(self) -> Parallel:
        return self.layout.dst


class FullDumps:
    """Rank files that hold the tensors themselves (:func:`syncviz.dump.save_vllm_rank`):
    the part of the pipeline that differs for fingerprint files
    (:class:`syncviz.diagnose.fingerprints.PrintFiles`)."""

    rank_pattern = re.compile(r"(pp\d+-)?tp\d+\.safetensors")

    def open(self, folder: str | Path, tp: int, pp: int) -> dict[tuple[int, int], Any]:
        """Every rank's file in ``folder``, by (pp, tp); a missing one is bad input."""
        return open_dumps(folder, tp, pp)

    def judge(
        self,
        dec: Decoded,
        dump: Any,
        param: ParamLayout,
        index: Any,
        glob: Any,
        cache: dict,
        pending: list[Pending],
    ) -> None:
        """Compare the rank's tensor (present, of its shape) with the oracle's segments; set
        ``dec``'s verdict, look the wrong segments up in the parameter and queue the rest.
        ``glob()`` reads the reference's tensor; ``cache`` lives for one parameter."""
        actual = dump.read(param.key)
        length = dec.length
        key = (actual.dtype, length)
        if key not in cache:
            cache[key] = (glob().to(actual.dtype), None)
        reference, segments_index = cache[key]
        wrong = dec.verdict(compare(actual, reference, index, length))
        if wrong is None:
            return
        segments = actual.reshape(-1, length)
        values = segments if wrong.numel() == segments.shape[0] else segments[wrong]
        words, _ = wide(bits(values), length)
        zero = (words == 0).all(dim=1)  # +0.0 everywhere; -0.0 is caught after the look-up
        dec.mark(wrong[zero], ZEROS)
        rest, values = wrong[~zero], values[~zero]
        if not rest.numel():
            return
        if segments_index is None:
            segments_index = SegmentIndex(reference, length)
            cache[key] = (reference, segments_index)
        found = coherent(rest, segments_index.find(values), length, actual.element_size())
        hit = found >= 0
        signed_zero = torch.zeros_like(hit)
        if not bool(hit.all()):  # (bf16 arithmetic is slow on CPU: only where needed)
            signed_zero[~hit] = (values[~hit] == 0).all(dim=1)
        miss = dec.place(rest, found, signed_zero)
        if bool(miss.any()):
            pending.append(ValuePending(dec, rest[miss], values[miss].clone()))

    def holds(self, dump: Any, param: ParamLayout, index: Any, dec: Decoded, glob: Any) -> bool:
        """Does the rank's tensor hold, in every segment, what ``glob`` puts there?"""
        actual = dump.read(param.key)
        return bool(compare(actual, glob.to(actual.dtype), index, dec.length).all())

    def words(self, notes: list[str]) -> list[str]:
        """The notes as this kind of rank file names its files."""
        return notes


def run_diagnosis(
    reference: str | Path,
    dump: str | Path,
    dst: int | Parallel,
    *,
    layers: Iterable[int] | None = None,
    include_globals: bool | None = None,
    show_progress: bool = False,
    previous: Iterable[str | Path] = (),
    files: Any = None,
) -> Diagnosis:
    """Read, compare and decode; see :func:`syncviz.diagnose.diagnose` for the report.

    ``dst`` is the engine's parallel layout (a bare int: its tp, one pipeline stage).
    ``files`` is the kind of rank file (:class:`FullDumps` when None); every step but
    reading and comparing a rank's tensor is the same for each kind.
    """
    dst = Parallel(tp=dst) if isinstance(dst, int) else dst
    files = FullDumps() if files is None else files
    ref = Reference(reference)
    spec = ref.spec
    earlier = [_previous(ref, p) for p in previous]
    wanted = None if layers is None else tuple(layers)
    with_globals = (wanted is None) if include_globals is None else include_globals
    layout = model_layout(spec, REFERENCE, dst, layers=wanted, include_globals=with_globals)
    whole = model_layout(spec, REFERENCE, dst)
    dumps = files.open(dump, dst.tp, dst.pp)
    engine_notes = _engine_notes(dumps)
    notes = placement_notes(layout, whole, dumps, engine_notes, files.rank_pattern)
    require_fitting_shapes(layout, dumps)
    decoded: list[list[Decoded]] = []
    pending: list[Pending] = []
    for i, param in enumerate(progress(layout.params, "diagnose", enabled=show_progress)):
        decoded.append(_judge(ref, i, param, dumps, pending, engine_notes, files))
    # A segment holding an earlier checkpoint's values in its own place is stale before it
    # is anything else: a short segment's values also turn up by chance in other tensors.
    for k, prev in enumerate(earlier):
        if pending:
            _search_previous(prev, layout, pending, k, in_place_only=True)
    if pending:
        _search_elsewhere(ref, layout, pending)
    for k, prev in enumerate(earlier):
        if pending:
            _search_previous(prev, layout, pending, k)
    if pending:
        _recognise_reordered(ref, layout, pending)
    for per_rank in decoded:
        for dec in per_rank:
            _recognise_w13_swap(layout, dec)
    _judge_segments(layout, decoded)
    diagnosis = Diagnosis(ref, layout, dumps, decoded, notes, earlier)
    diagnosis.notes += rank_order_notes(diagnosis)
    diagnosis.notes = files.words(diagnosis.notes)
    if earlier:
        diagnosis.missed = _missed_updates(diagnosis, files)
    return diagnosis


def _previous(ref: Reference, folder: str | Path) -> Reference:
    """An earlier checkpoint of the reference's model (same config but the name)."""
    prev = Reference(folder)
    if dataclasses.replace(prev.spec, name=ref.spec.name) != ref.spec:
        raise SyncvizError(
            f"previous checkpoint {str(folder)!r} is not of the reference's model"
            f" ({prev.spec.name} vs {ref.spec.name}: another config.json)",
            fix="pass earlier checkpoints of the same model to --previous",
        )
    return prev


@dataclass
class _Note:
    """One rank's note from save_vllm_rank, by oracle key."""

    changed: dict[str, dict] = field(default_factory=dict)  # entries carry their "name"
    buffers: set[str] = field(default_factory=set)


def _engine_notes(dumps: dict[tuple[int, int], Any]) -> dict[tuple[int, int], _Note]:
    """Per rank, what its note says: the tensors the engine changed, the buffers written."""
    out: dict[tuple[int, int], _Note] = {}
    for rank, dump in dumps.items():
        note = read_notes(dump.path) or {"changed": {}, "buffers": []}
        changed = {normalise(n): {**e, "name": n} for n, e in note["changed"].items()}
        out[rank] = _Note(changed, {normalise(n) for n in note["buffers"]})
    return out


def reference_tensor(ref: Reference, param: ParamLayout) -> torch.Tensor:
    """The reference's whole tensor of ``param``; bad input when its shape is not the one
    the checkpoint's config.json implies."""
    g = ref.global_tensor(param.kind, param.layer)
    if tuple(g.shape) != param.global_shape:
        raise SyncvizError(
            f"the reference's tensors for {param.key} make shape {list(g.shape)}, but its"
            f" config.json implies {list(param.global_shape)}",
            fix="pass the checkpoint folder whose config.json describes its weights",
        )
    return g


class GlobalTensor:
    """The reference's tensor of one parameter, read once, only when a rank needs it:
    ``glob()`` the whole tensor; ``glob.parts()`` the checkpoint tensors it is joined from
    (the whole one once it was joined), for a reader that needs only their rows."""

    def __init__(self, ref: Reference, param: ParamLayout) -> None:
        self.ref, self.param = ref, param
        self._whole: torch.Tensor | None = None
        self._parts: list[torch.Tensor] | None = None

    def __call__(self) -> torch.Tensor:
        if self._whole is None:
            parts = self._parts
            if parts is None:
                self._whole = reference_tensor(self.ref, self.param)
            else:  # already read (and their shapes checked) by parts()
                whole = parts[0] if len(parts) == 1 else torch.cat(parts)
                self._whole = whole.view(self.param.global_shape)
            self._parts = None
        return self._whole

    def parts(self) -> list[torch.Tensor]:
        if self._whole is not None:
            return [self._whole]
        if self._parts is None:
            parts = self.ref.global_parts(self.param.kind, self.param.layer)
            shape = self.param.global_shape
            inner = torch.Size(shape[1:] if len(shape) < 3 else shape[2:])  # of a row
            if sum(p.numel() for p in parts) != math.prod(shape) or any(
                p.shape[1:] != inner for p in parts if len(shape) > 1
            ):
                return [self()]  # the whole tensor's reading says what is wrong
            self._parts = parts
        return self._parts


def _judge(
    ref: Reference,
    i: int,
    param: ParamLayout,
    dumps: dict[tuple[int, int], Any],
    pending: list[Pending],
    notes: dict[tuple[int, int], _Note],
    files: Any,
) -> list[Decoded]:
    glob = GlobalTensor(ref, param)
    cache: dict = {}
    out = []
    for t in param.dst:
        length = segment_length(t.index, param.global_shape)
        starts = segment_starts(t.index, param.global_shape, length)
        dec = Decoded(i, t.pp, t.tp, t.shape, length, starts)
        out.append(dec)
        entry = dumps[(t.pp, t.tp)].tensors.get(param.key)
        note = notes[(t.pp, t.tp)].changed.get(param.key)
        if entry is None and note is None:
            dec.status = "missing"
            continue
        shape = entry.shape if entry is not None else tuple(note["shape"])  # type: ignore[index]
        if shape != t.shape and (note is not None or math.prod(shape) == 0):
            dec.status, dec.dump_shape = "uncheckable", shape
            dec.why = "empty" if math.prod(shape) == 0 else (note or {}).get("why", "shape")
            dec.dump_dtype = (note or {}).get("dtype")
            continue
        if entry is None:  # noted, not written: its dtype cannot be compared
            dec.status, dec.dump_shape = "uncheckable", shape
            dec.why, dec.dump_dtype = "dtype", (note or {}).get("dtype")
            continue
        if entry.shape != t.shape:
            dec.status, dec.dump_shape = "shape", entry.shape
            continue
        files.judge(dec, dumps[(t.pp, t.tp)], param, t.index, glob, cache, pending)
    return out


def _search_elsewhere(ref: Reference, layout: ModelLayout, pending: list[Pending]) -> None:
    """Look unexplained segments up in the other parameters: same kind first."""
    own = {p.decoded.param for p in pending}
    kinds = {layout.params[i].kind for i in own}
    # Every parameter but a segment's own too: two wrong parameters may hold each
    # other's data (q_norm and k_norm exchanged).
    order = sorted(range(len(layout.params)), key=lambda i: (layout.params[i].kind not in kinds, i))
    _look_up(ref, layout, pending, order, None)


def _search_previous(
    prev: Reference,
    layout: ModelLayout,
    pending: list[Pending],
    k: int,
    in_place_only: bool = False,
) -> None:
    """Look unexplained segments up in previous checkpoint ``k``, each parameter read once for
    its own segments: first in place (the usual stale tensor), then anywhere in it; what is
    left, in the other parameters (not with ``in_place_only``)."""
    by_param: dict[int, list[Pending]] = {}
    for p in pending:
        by_param.setdefault(p.decoded.param, []).append(p)
    for i, mine in sorted(by_param.items()):
        glob = reference_tensor(prev, layout.params[i])
        indexes: dict[tuple, Any] = {}
        for p in mine:
            _mark(p, p.in_place(glob), i, k)
            if p.segments.numel() and not in_place_only:
                _mark(p, p.find(_index(p, glob, indexes)), i, k)
    pending[:] = [p for p in pending if p.segments.numel()]
    if pending and not in_place_only:
        own = {p.decoded.param for p in pending}
        _look_up(prev, layout, pending, [i for i in range(len(layout.params)) if i not in own], k)


def _recognise_reordered(ref: Reference, layout: ModelLayout, pending: list[Pending]) -> None:
    """Segments found nowhere that hold exactly their expected elements in another order: a
    regroup meant for another layout (a fused norm regrouped as if it were QKV)."""
    by_param: dict[int, list[Pending]] = {}
    for p in pending:
        by_param.setdefault(p.decoded.param, []).append(p)
    for i, mine in sorted(by_param.items()):
        glob = reference_tensor(ref, layout.params[i])
        for p in mine:
            dec, length = p.decoded, p.decoded.length
            real = torch.nonzero(dec.expected[p.segments] >= 0).flatten()
            if length < 2 or not real.numel():
                continue
            same = real[p.reordered(glob, real)]
            assert dec.source is not None and dec.start is not None
            dec.mark(p.segments[same], REORDERED)
            keep = torch.ones(p.segments.numel(), dtype=torch.bool)
            keep[same] = False
            p.keep(keep)
    pending[:] = [p for p in pending if p.segments.numel()]


def _index(p: Pending, glob: torch.Tensor, indexes: dict[tuple, Any]) -> Any:
    """The index of ``glob`` that ``p`` looks up in, made once per key."""
    key = p.key()
    if key not in indexes:
        indexes[key] = p.index(glob)
    return indexes[key]


def _mark(p: Pending, found: torch.Tensor, i: int, previous: int | None) -> None:
    """Record the hits of ``found`` (start ids, -1 none) in parameter ``i`` and drop them from
    ``p``: in the reference (``previous`` None) or in previous checkpoint ``previous``."""
    hit = found >= 0
    if not bool(hit.any()):
        return
    dec = p.decoded
    assert dec.source is not None and dec.start is not None
    where = p.segments[hit]
    if previous is None:
        dec.source[where] = i
    else:
        if dec.stale_param is None:
            dec.stale_param = torch.full_like(dec.source, -1)
        dec.source[where] = STALE - previous
        dec.stale_param[where] = i
    dec.start[where] = found[hit]
    p.keep(~hit)


def _look_up(
    ref: Reference,
    layout: ModelLayout,
    pending: list[Pending],
    order: list[int],
    previous: int | None,
) -> None:
    """Find pending segments in ``ref``'s parameters, in ``order``; found ones leave ``pending``.

    In the reference a hit's source is the parameter; in previous checkpoint k it is
    ``STALE - k`` and the parameter goes to ``stale_param``.
    """
    for i in order:
        if not pending:
            return
        param = layout.params[i]
        numel = math.prod(param.global_shape)
        fits = [p for p in pending if p.decoded.param != i and numel % p.decoded.length == 0]
        if not fits:
            continue
        glob = reference_tensor(ref, param)
        indexes: dict[tuple, Any] = {}
        for p in fits:
            _mark(p, p.find(_index(p, glob, indexes)), i, previous)
        pending[:] = [p for p in pending if p.segments.numel()]


def _recognise_w13_swap(layout: ModelLayout, dec: Decoded) -> None:
    """A rank's w13 whose every expert holds its own halves exchanged, [up; gate]: named,
    not judged (the layout MoE back ends such as FlashInfer's keep after start-up)."""
    param = layout.params[dec.param]
    if param.kind != "experts_w13" or dec.status != "wrong" or len(dec.shape) != 3:
        return
    assert dec.source is not None and dec.start is not None
    experts = dec.shape[0]
    per = dec.expected.numel() // experts
    if per % 2 or not bool((dec.source == dec.param).all()):
        return
    swapped = dec.expected.view(experts, 2, per // 2).flip(1).reshape(-1)
    if torch.equal(dec.start, swapped):
        dec.status, dec.why = "uncheckable", "w13_swapped"


def _missed_updates(diagnosis: Diagnosis, files: Any) -> dict[tuple[int, int], int]:
    """Ranks that missed the update: every judged tensor holds, in its place, the values of
    one previous checkpoint (some differing from the reference), and none is missing."""
    by_rank: dict[tuple[int, int], list[Decoded]] = {}
    for per_rank in diagnosis.decoded:
        for dec in per_rank:
            by_rank.setdefault((dec.pp, dec.tp), []).append(dec)
    candidates: dict[tuple[int, int], int] = {}
    for rank, decs in by_rank.items():
        if any(d.status in ("missing", "shape") for d in decs):
            continue
        codes: set[int] = set()
        for d in decs:
            if d.status == "wrong":
                assert d.source is not None and d.wrong is not None
                codes |= set(d.source[d.wrong].unique().tolist())
        if len(codes) == 1 and next(iter(codes)) <= STALE:
            candidates[rank] = STALE - codes.pop()
    layout, dumps = diagnosis.layout, diagnosis.dumps
    for i, per_rank in enumerate(diagnosis.decoded):  # each previous tensor read once
        decs = [d for d in per_rank if (d.pp, d.tp) in candidates and d.status in ("ok", "wrong")]
        param = layout.params[i]
        globs: dict[int, torch.Tensor] = {}
        for d in decs:
            k = candidates.get((d.pp, d.tp))
            if k is None:
                continue  # already ruled out by an earlier parameter
            if k not in globs:
                globs[k] = reference_tensor(diagnosis.previous[k], param)
            index = next(t.index for t in param.dst if (t.pp, t.tp) == (d.pp, d.tp))
            if not files.holds(dumps[(d.pp, d.tp)], param, index, d, globs[k]):
                del candidates[(d.pp, d.tp)]
    return candidates


def placement_notes(
    layout: ModelLayout,
    whole: ModelLayout,
    dumps: dict[tuple[int, int], Any],
    engine: dict[tuple[int, int], _Note],
    rank_pattern: re.Pattern[str] = FullDumps.rank_pattern,
) -> list[str]:
    """Tensors in the files that are no parameter of the model, or sit on the wrong stage;
    rank files (``rank_pattern``) of other sizes in the folder."""
    notes = []
    stage_of = {}
    for p in whole.params:
        stage_of[p.key] = p.dst[0].pp
    pp_size = layout.dst.pp
    folder = next(iter(dumps.values())).path.parent
    ours = {d.path.name for d in dumps.values()}
    sizes = f"dst tp {layout.dst.tp}" + (f" pp {pp_size}" if pp_size > 1 else "")
    for path in sorted(folder.glob("*.safetensors")):
        if path.name not in ours and rank_pattern.fullmatch(path.name):
            notes.append(f"{path.name} is no rank of {sizes}: a dump of other sizes mixed in?")
    for (pp, tp), dump in dumps.items():
        where = f"{rank_label(pp, tp, pp_size)} ({rank_file(pp, tp, pp_size)})"
        for name in dump.duplicates:
            notes.append(f"{where}: {name} names a parameter already in the file")
        note = engine[(pp, tp)]
        names = {key: entry.name for key, entry in dump.tensors.items()}
        for key, entry in note.changed.items():  # noted, not written
            names.setdefault(key, entry["name"])
        for key, name in names.items():
            if key not in stage_of:
                # The engine's own state (KV-cache scales, packed copies) is no finding.
                if key not in note.changed and key not in note.buffers:
                    tied = key == "model.lm_head.weight" and layout.spec.tie_word_embeddings
                    why = ": its config ties lm_head to the embedding" if tied else ""
                    notes.append(f"{where}: {name} is no parameter of {layout.spec.name}{why}")
            elif stage_of[key] != pp:
                notes.append(f"{where}: {name} belongs to pipeline stage {stage_of[key]}, not {pp}")
    return notes


def require_fitting_shapes(layout: ModelLayout, dumps: dict[tuple[int, int], Any]) -> None:
    """Bad input when no split tensor of the dump has the shape the given sizes imply."""
    tried = fitted = 0
    sample: tuple[ParamLayout, tuple[int, ...]] | None = None
    for param in layout.params:
        for t in param.dst:
            entry = dumps[(t.pp, t.tp)].tensors.get(param.key)
            if entry is None or t.shape == param.global_shape or not math.prod(entry.shape):
                continue  # missing (a finding), replicated (fits any tp) or emptied
            tried += 1
            fitted += entry.shape == t.shape
            if sample is None and t.tp == 0:
                sample = (param, entry.shape)
    if not tried or fitted or sample is None:
        return
    param, shape = sample
    spec, d = layout.spec, layout.dst.tp
    fits = [
        n
        for n in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
        if n != d and _valid(layout, n) and dest_maps(param.kind, spec, n)[0].shape == shape
    ]
    fix = (
        f"the dump looks like dst tp {' or '.join(map(str, fits))}: pass --dst-tp {fits[0]}"
        if fits
        else "dump the ranks of one engine with syncviz.dump.save_vllm_rank"
    )
    raise SyncvizError(
        f"the dump's shapes fit no valid dst tp {d}: {param.key} on tp 0 is {list(shape)},"
        f" tp {d} needs {list(param.dst[0].shape)}",
        fix=fix,
    )


def _valid(layout: ModelLayout, tp: int) -> bool:
    try:
        model_layout(layout.spec, REFERENCE, Parallel(tp=tp), layers=[0])
    except SyncvizError:
        return False
    return True


def rank_order_notes(diagnosis: Diagnosis) -> list[str]:
    """Recognise rank files in the wrong order: a file holding, exactly, another rank's tensors."""
    layout, pp_size = diagnosis.layout, diagnosis.dst.pp
    holds: dict[tuple[int, int], set[int] | None] = {}
    for i, per_rank in enumerate(diagnosis.decoded):
        for dec in per_rank:
            if dec.source is None or dec.start is None:
                continue
            param = layout.params[i]
            if param.dst[dec.tp].shape == param.global_shape:
                continue  # replicated: every rank holds the same
            if not bool(((dec.source == i) | (dec.source == ZEROS)).all()):
                holds[(dec.pp, dec.tp)] = set()  # data from elsewhere: no rank's tensors
                continue
            held = torch.where(dec.source == ZEROS, -1, dec.start)  # zeros read as padding
            same = {
                o.tp
                for o in per_rank
                if o.pp == dec.pp
                and o.expected.shape == held.shape
                and torch.equal(held, o.expected)
            }
            key = (dec.pp, dec.tp)
            prev = holds.get(key)
            holds[key] = same if prev is None else prev & same
    moved = {k: v for k, v in holds.items() if v and k[1] not in v}
    if not moved:
        return []
    parts = [
        f"{rank_file(pp, tp, pp_size)} holds {rank_label(pp, min(v), pp_size)}'s tensors"
        for (pp, tp), v in sorted(moved.items())
    ]
    return ["rank files in the wrong order: " + "; ".join(parts)]
