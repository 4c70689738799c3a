"""Diagnose from fingerprint files: the verdicts of full dumps from a thousandth of the bytes.

Each rank's file (:func:`syncviz.fingerprint_dump.save_fingerprints`) holds one
fingerprint per row (per run of a 1-D tensor). The checkpoint side fingerprints
every global tensor once, in aligned windows of each rank's segment length, so
that what the oracle says a rank must hold at a segment is one table look-up,
and a wrong segment's fingerprint found in that table (or in another
parameter's) says where its data came from, exactly as a full dump's look-up
does. Runs shorter than a segment are composed into the segment's fingerprint
(:func:`syncviz.fingerprint.compose`) on both sides.

Every other step is the full dump's (:func:`syncviz.diagnose.core.run_diagnosis`
with :class:`PrintFiles`): the engine's note beside each file (``tp{t}.notes.json``,
written by ``save_vllm_rank(..., fingerprints=True)`` too), an emptied tensor as not
checkable, ``previous`` checkpoints fingerprinted alike for stale values, the
recognised w13 swap and reordered segments.

Rows narrower than 8 KiB are stored one fingerprint per group of rows (the rows'
fingerprints composed, :func:`syncviz.fingerprint_dump.tensor_group`): a group is
judged as one, and a wrong group's rows are looked up together (in the tensor's
aligned groups of rows, then in every rank's expected groups), so a wrong row reads
as its group's rows, and rows reordered inside a group read "not found".

Rows the layout fills in shorter segments than a row (an expert's gate and up bias
interleaved element by element: 1-element segments) are still one fingerprint per row,
as the writer cannot know the layout and a fingerprint per element would cost four times
the bytes it describes. Each stored fingerprint is compared with the fingerprint of what
the oracle puts in its rows, gathered element by element (:func:`gathered_prints`): the
same wrong rows as a full dump. A wrong row is named whole: found among every rank's
expected rows (another rank's, another layer's, a previous checkpoint's) or not found,
and a note says once per tensor that the elements inside are not located.

What differs from a full dump: a segment mixing +0.0 and -0.0 (where data was
expected) reads "not found" rather than "zeros"; a segment reordered within a run
(not in whole runs) reads "not found" rather than "in another order"; the groups
and whole rows above; and two different segments share a fingerprint with odds of
about 2**-48 (one-bit changes: never).

>>> import tempfile
>>> from syncviz.diagnose.fixtures import planted
>>> ref, dump = planted("llama-mcore", tp=4, bugs={"qkv": "shard0"})
>>> prints = fingerprint_dumps(dump, tempfile.mkdtemp(), tp=4)
>>> from syncviz.diagnose import diagnose  # it reads either kind of rank file
>>> report = diagnose(ref, prints, dst_tp=4)
>>> report.ok, report.counts()
(False, {'ok': 14, 'wrong': 1})
>>> print(report.bad()[0].lines()[0])
  tp 1, rows 0-3: holds tp 0's Q heads 0-1, expected Q heads 2-3
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch

from syncviz.diagnose.core import (
    NOT_FOUND,
    ZEROS,
    Decoded,
    Pending,
)
from syncviz.diagnose.dumps import missing_rank_file, normalise
from syncviz.diagnose.segments import segment_length, segment_starts
from syncviz.errors import SyncvizError
from syncviz.fingerprint import compose, fingerprint
from syncviz.fingerprint_dump import (
    SUFFIX,
    PrintEntry,
    fingerprint_file,
    read_fingerprints,
    save_fingerprints,
)
from syncviz.oracle import ParamLayout

_FULL_RANK_FILE = re.compile(r"(pp\d+-)?tp\d+\.safetensors")
_FILE_IN_NOTE = re.compile(r"\b((?:pp\d+-)?tp\d+)\.safetensors\b")


def has_fingerprints(folder: str | Path) -> bool:
    """Does ``folder`` hold fingerprint files (and no full rank dumps)?"""
    try:
        names = os.listdir(folder)
    except OSError:  # not a folder, or unreadable: the dump reader says which, in words
        return False
    if any(_FULL_RANK_FILE.fullmatch(n) for n in names):
        return False
    return any(n.endswith(SUFFIX) for n in names)


class PrintDump:
    """One rank's fingerprint file, by oracle key (the interface of a full rank dump)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        entries, self._prints = read_fingerprints(path)
        self.tensors: dict[str, PrintEntry] = {}
        self.duplicates: list[str] = []
        for name, entry in entries.items():
            key = normalise(name)
            if key in self.tensors:
                self.duplicates.append(name)
                continue
            self.tensors[key] = entry

    def read(self, key: str) -> torch.Tensor:
        """The fingerprints stored for oracle key ``key`` (one per run)."""
        return self._prints[self.tensors[key].name]


def open_prints(folder: str | Path, tp: int, pp: int = 1) -> dict[tuple[int, int], PrintDump]:
    """Every rank's fingerprint file in ``folder``, by (pp, tp); a missing one is bad input."""
    root = Path(folder)
    files = {}
    for p in range(pp):
        for t in range(tp):
            path = root / fingerprint_file(p, t, pp)
            if not path.is_file():
                present = sorted(x.name for x in root.glob("*" + SUFFIX))
                raise missing_rank_file("fingerprint", path, present or ["none"], tp, pp)
            files[(p, t)] = PrintDump(path)
    return files


class PrintTable:
    """The fingerprints of a global tensor's aligned windows of ``length`` elements, sorted
    for look-up. ``run`` is the length of the fingerprinted runs a window is composed of.
    The windows are fingerprinted on first use (a table serving only windows off the grid
    never reads the whole tensor)."""

    def __init__(self, glob: torch.Tensor | list[torch.Tensor], length: int, run: int) -> None:
        self.length, self.run = length, run
        parts = [glob] if isinstance(glob, torch.Tensor) else glob
        self._parts = [p.reshape(-1) for p in parts]
        self._sorted: tuple[torch.Tensor, torch.Tensor] | None = None  # for look-ups only
        floating, dtype = parts[0].is_floating_point(), parts[0].dtype
        minus = torch.full((length,), -0.0, dtype=dtype) if floating else None
        self.negative_zero = None if minus is None else int(_segment_prints(minus, length, run)[0])

    @classmethod
    def of(
        cls, glob: Callable[[], torch.Tensor], dtype: torch.dtype, length: int, run: int
    ) -> PrintTable:
        """The table of a parameter's reference tensor (``glob()``), built from the checkpoint
        tensors it is joined from where each holds whole windows (``glob.parts()``): their
        windows are the joined tensor's, in order, without the copy that joins them."""
        parts_of = getattr(glob, "parts", None)
        parts = parts_of() if parts_of is not None else [glob()]
        if any(p.numel() % length for p in parts):
            parts = [glob()]
        return cls([p.to(dtype) for p in parts], length, run)

    @functools.cached_property
    def _flat(self) -> torch.Tensor:
        """The whole tensor, flat (joined on first use: only windows off the grid need it)."""
        return self._parts[0] if len(self._parts) == 1 else torch.cat(self._parts)

    @functools.cached_property
    def prints(self) -> torch.Tensor:
        """The fingerprint of every aligned window (none when they do not tile the tensor)."""
        if all(p.numel() % self.length == 0 for p in self._parts):
            per = [_segment_prints(p, self.length, self.run) for p in self._parts]
            return per[0] if len(per) == 1 else torch.cat(per)
        if self._flat.numel() % self.length:
            return torch.zeros(0, dtype=torch.int64)
        return _segment_prints(self._flat, self.length, self.run)

    def expected(self, starts: torch.Tensor) -> torch.Tensor:
        """The fingerprint of the window at each start id (-1: padding, zeros: 0)."""
        out = torch.zeros(starts.shape[0], dtype=torch.int64)
        real = starts >= 0
        aligned = real & (starts % self.length == 0)
        if bool(aligned.any()):
            out[aligned] = self.prints[starts[aligned] // self.length]
        odd = real & ~aligned
        if bool(odd.any()):  # a window off the grid: fingerprint it where it lies
            ids = starts[odd][:, None] + torch.arange(self.length)[None, :]
            out[odd] = _segment_prints(self._flat[ids], self.length, self.run)
        return out

    def find(self, prints: torch.Tensor) -> torch.Tensor:
        """Start id of a window with each fingerprint (the first in order), or -1."""
        if self._sorted is None:
            self._sorted = self.prints.sort(stable=True)
        return _found(self._sorted, prints, self.length)


class GroupTable:
    """The composed fingerprints of a global tensor's aligned windows of ``group`` consecutive
    segments (what a rank stores for ``group`` rows it holds in one piece), for look-up."""

    def __init__(self, rows: PrintTable, group: int) -> None:
        self.rows, self.group = rows, group
        self._sorted: tuple[torch.Tensor, torch.Tensor] | None = None
        nz = rows.negative_zero
        self.negative_zero = None if nz is None else int(compose(torch.full((group,), nz), group))

    def find(self, prints: torch.Tensor) -> torch.Tensor:
        """Start id of a window of ``group`` segments with each fingerprint, or -1."""
        if self._sorted is None:
            p = self.rows.prints
            p = p[: p.numel() - p.numel() % self.group]
            self._sorted = (compose(p, self.group) if p.numel() else p).sort(stable=True)
        return _found(self._sorted, prints, self.rows.length * self.group)


def _found(
    table: tuple[torch.Tensor, torch.Tensor], prints: torch.Tensor, unit: int
) -> torch.Tensor:
    """Per fingerprint: ``unit`` times the position of an equal one in sorted ``table``, or -1."""
    ordered, order = table
    if not ordered.numel():
        return torch.full_like(prints, -1)
    lo = torch.searchsorted(ordered, prints).clamp(max=ordered.numel() - 1)
    return torch.where(ordered[lo] == prints, order[lo] * unit, -1)


def _segment_prints(t: torch.Tensor, length: int, run: int) -> torch.Tensor:
    prints = fingerprint(t.reshape(-1, run))
    return compose(prints, length // run) if length > run else prints


@dataclass
class PrintPending(Pending):
    """Pending segments of a fingerprint file, with their fingerprints (composed per segment)
    and the fingerprints of their runs (for recognising a reordered segment)."""

    prints: torch.Tensor  # [n]
    runs: torch.Tensor  # [n, length // run]
    dtype: torch.dtype
    run: int

    def key(self) -> tuple:
        return (self.dtype, self.decoded.length, self.run)

    def index(self, glob: torch.Tensor) -> PrintTable:
        return PrintTable(glob.to(self.dtype), self.decoded.length, self.run)

    def find(self, index: PrintTable) -> torch.Tensor:
        return index.find(self.prints)

    def in_place(self, glob: torch.Tensor) -> torch.Tensor:
        starts = self.decoded.expected[self.segments]
        found = torch.full_like(starts, -1)
        real = starts >= 0  # padding is never stale
        if not bool(real.any()):
            return found
        table = self.index(glob)
        equal = table.expected(starts[real]) == self.prints[real]
        found[torch.nonzero(real).flatten()[equal]] = starts[real][equal]
        return found

    def reordered(self, glob: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        # Whole runs reordered: the same run fingerprints in another order (a reorder
        # within a run reads "not found").
        length = self.decoded.length
        ids = self.decoded.expected[self.segments][real][:, None] + torch.arange(length)[None, :]
        flat = glob.to(self.dtype).reshape(-1)[ids].reshape(-1, self.run)
        want = fingerprint(flat).reshape(ids.shape[0], -1).sort(dim=1).values
        return (want == self.runs[real].sort(dim=1).values).all(dim=1)

    def keep(self, mask: torch.Tensor) -> None:
        self.segments, self.prints = self.segments[mask], self.prints[mask]
        self.runs = self.runs[mask]


@dataclass
class GroupPending(Pending):
    """Pending segments of a fingerprint file that stores one fingerprint per ``group`` rows:
    whole groups, each segment with its group's fingerprint and its place in the group."""

    prints: torch.Tensor  # [n]: the group's fingerprint, per segment
    offsets: torch.Tensor  # [n]: the segment's place in its group
    dtype: torch.dtype
    run: int
    group: int
    settled: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))

    def __post_init__(self) -> None:
        if self.settled.numel() != self.segments.numel():  # none settled yet
            self.settled = torch.zeros(self.segments.numel(), dtype=torch.bool)

    def key(self) -> tuple:
        return (self.dtype, self.decoded.length, self.run, self.group)

    def index(self, glob: torch.Tensor) -> GroupTable:
        return GroupTable(
            PrintTable(glob.to(self.dtype), self.decoded.length, self.run), self.group
        )

    def find(self, index: GroupTable) -> torch.Tensor:
        at = index.find(self.prints)
        found = (at >= 0) & ~self.settled
        return torch.where(found, at + self.offsets * self.decoded.length, -1)

    def in_place(self, glob: torch.Tensor) -> torch.Tensor:
        # Per group (the pending segments may be part of one: see below), by its rows' starts.
        dec, group = self.decoded, self.group
        groups, at = (self.segments // group).unique(return_inverse=True)
        starts = dec.expected.view(-1, group)[groups]
        table = PrintTable(glob.to(self.dtype), dec.length, self.run)
        expected = compose(table.expected(starts.flatten()), group)
        held = torch.empty_like(expected)
        held[at] = self.prints
        real = (starts >= 0).any(dim=1)  # padding alone is never stale
        same = (real & (expected == held))[at] & ~self.settled
        mine = dec.expected[self.segments]
        # A group holding the previous rows and zeros where padding is due: its padding rows
        # are right (they stay pending, settled, as only found segments leave).
        pad = same & (mine < 0)
        assert dec.source is not None and dec.start is not None
        dec.source[self.segments[pad]], dec.start[self.segments[pad]] = dec.param, -1
        self.settled = self.settled | pad
        return torch.where(same, mine, -1)

    def reordered(self, glob: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        # Reordered rows inside a group cannot be told from the group's one fingerprint.
        return torch.zeros(real.numel(), dtype=torch.bool)

    def keep(self, mask: torch.Tensor) -> None:
        self.segments, self.prints = self.segments[mask], self.prints[mask]
        self.offsets, self.settled = self.offsets[mask], self.settled[mask]


class _Work(NamedTuple):
    """What :meth:`PrintFiles.judge` hands its helpers: one rank's tensor of one parameter
    (its arguments, less the oracle's index)."""

    dec: Decoded
    dump: PrintDump
    param: ParamLayout
    glob: Callable[[], torch.Tensor]
    cache: dict
    pending: list[Pending]


def _run_table(
    cache: dict, glob: Callable[[], torch.Tensor], entry: PrintEntry, length: int
) -> PrintTable:
    """The parameter's table of expected fingerprints for ``entry``'s runs in segments of
    ``length``, made on first use (``cache`` lives for one parameter)."""
    key = (entry.dtype, length, entry.run)
    if key not in cache:
        cache[key] = PrintTable.of(glob, entry.dtype, length, entry.run)
    return cache[key]


class PrintFiles:
    """Rank files of fingerprints (:func:`syncviz.fingerprint_dump.save_fingerprints`): the
    part of :func:`syncviz.diagnose.core.run_diagnosis` that differs from full dumps."""

    rank_pattern = re.compile(r"(pp\d+-)?tp\d+" + re.escape(SUFFIX))

    def open(self, folder: str | Path, tp: int, pp: int) -> dict[tuple[int, int], PrintDump]:
        """Every rank's fingerprint file in ``folder``, by (pp, tp); a missing one is bad input."""
        return open_prints(folder, tp, pp)

    def judge(
        self,
        dec: Decoded,
        dump: PrintDump,
        param: ParamLayout,
        index: object,
        glob: Callable[[], torch.Tensor],
        cache: dict,
        pending: list[Pending],
    ) -> None:
        """Compare the rank's fingerprints with the oracle's; decode and queue as a full dump."""
        entry, length = dump.tensors[param.key], dec.length
        if len(entry.shape) > 1 and entry.run > length:
            self._judge_rows(_Work(dec, dump, param, glob, cache, pending))
            return
        if entry.group > 1:
            self._judge_groups(_Work(dec, dump, param, glob, cache, pending))
            return
        if length % entry.run:
            raise SyncvizError(
                f"{dump.path.name}: {entry.name} was fingerprinted in runs of {entry.run}"
                f" elements, but the layout moves it in segments of {length}",
                fix=f"fingerprint again with save_fingerprints(..., run_1d={length})",
            )
        table = _run_table(cache, glob, entry, length)
        runs = dump.read(param.key)
        actual = compose(runs, length // entry.run) if length > entry.run else runs
        wrong = dec.verdict(actual == table.expected(dec.expected))
        if wrong is None:
            return
        prints = actual[wrong]
        zero = prints == 0  # +0.0 everywhere; -0.0 is caught after the look-up
        dec.mark(wrong[zero], ZEROS)
        rest, prints = wrong[~zero], prints[~zero]
        if not rest.numel():
            return
        found = table.find(prints)
        miss = dec.place(rest, found, (found < 0) & (prints == table.negative_zero))
        if bool(miss.any()):
            per = runs.reshape(-1, length // entry.run)[rest[miss]]
            pending.append(PrintPending(dec, rest[miss], prints[miss], per, entry.dtype, entry.run))

    def holds(
        self, dump: PrintDump, param: ParamLayout, index: object, dec: Decoded, glob: torch.Tensor
    ) -> bool:
        """Does the rank's file hold, in every segment, the fingerprint of what ``glob`` puts
        there?"""
        entry, length = dump.tensors[param.key], dec.length
        actual = dump.read(param.key)
        if len(entry.shape) > 1 and entry.run > length:
            flat = glob.to(entry.dtype).reshape(-1)
            expected = gathered_prints(flat, dec.expected, length, entry.run, entry.group)
            return bool((actual == expected).all())
        if length > entry.run:
            actual = compose(actual, length // entry.run)
        table = PrintTable(glob.to(entry.dtype), length, entry.run)
        expected = table.expected(dec.expected)
        if entry.group > 1:
            expected = compose(expected, entry.group)
        return bool((actual == expected).all())

    def _judge_groups(self, work: _Work) -> None:
        """:meth:`judge` for one fingerprint per ``group`` rows: a wrong group's rows are looked
        up together, in the tensor's aligned groups of rows, then in every rank's expected
        groups (a row-parallel slice: rows of one rank are apart in the global tensor)."""
        dec, dump, param, glob, cache, pending = work
        entry, length, group = dump.tensors[param.key], dec.length, dump.tensors[param.key].group
        if entry.run != length or dec.expected.numel() % group:
            raise SyncvizError(
                f"{dump.path.name}: {entry.name} holds one fingerprint per {group} runs of"
                f" {entry.run} elements, but the layout moves it in segments of {length}",
                fix="fingerprint again with save_fingerprints(..., min_bytes=0)",
            )
        rows = _run_table(cache, glob, entry, length)
        key = (entry.dtype, length, entry.run)
        actual = dump.read(param.key)
        wrong = dec.verdict(actual == compose(rows.expected(dec.expected), group))
        if wrong is None:
            return
        offsets = torch.arange(group)

        table = cache.setdefault((*key, group), GroupTable(rows, group))
        prints = actual[wrong]
        zero = prints == 0  # +0.0 in every row (or -0.0: next line)
        if table.negative_zero is not None:
            zero |= prints == table.negative_zero
        dec.mark(_segments(wrong[zero], group), ZEROS)
        rest, prints = wrong[~zero], prints[~zero]
        at = table.find(prints)
        hit = at >= 0
        dec.start[_segments(rest[hit], group)] = (
            at[hit][:, None] + offsets[None, :] * length
        ).flatten()
        rest, prints = rest[~hit], prints[~hit]
        if rest.numel():
            peers = cache.get(("peers", *key, group))
            if peers is None:
                peers = cache[("peers", *key, group)] = _peer_groups(param, rows, length, group)
            sorted_prints, starts = peers
            at = _found(sorted_prints, prints, 1)
            hit = at >= 0
            dec.start[_segments(rest[hit], group)] = starts[at[hit]].flatten()
            rest, prints = rest[~hit], prints[~hit]
        if not rest.numel():
            return
        miss = _segments(rest, group)
        dec.mark(miss, NOT_FOUND)
        per = prints.repeat_interleave(group)
        pending.append(
            GroupPending(
                dec, miss, per, offsets.repeat(rest.numel()), entry.dtype, entry.run, group
            )
        )

    def _judge_rows(self, work: _Work) -> None:
        """:meth:`judge` for rows the layout fills in shorter segments (an expert's gate and up
        bias interleaved element by element): each stored fingerprint (a row, or a group of
        rows) is compared with the fingerprint of what the oracle puts in those rows, gathered
        element by element. A wrong one is marked whole and looked up among every rank's
        expected rows; its elements are not located (a note says so once per tensor)."""
        dec, dump, param, glob, cache, pending = work
        entry, length = dump.tensors[param.key], dec.length
        per = entry.run * entry.group // length  # segments per stored fingerprint
        key = ("rows", entry.dtype)
        if key not in cache:
            cache[key] = glob().to(entry.dtype).reshape(-1)
        flat: torch.Tensor = cache[key]
        actual = dump.read(param.key)
        ok = actual == gathered_prints(flat, dec.expected, length, entry.run, entry.group)
        dec.source = torch.full_like(dec.expected, dec.param)
        dec.start = dec.expected.clone()
        if bool(ok.all()):
            return
        dec.status = "wrong"
        unit = "row" if entry.group == 1 else f"{entry.group} rows"
        noted = self.whole_rows().setdefault(
            param.key, [f"one per {unit} of {entry.run}", str(length)]
        )
        noted.append(dump.path.name)

        wrong = torch.nonzero(~ok).flatten()
        prints = actual[wrong]
        zero = prints == 0  # +0.0 in every element (or -0.0: next line)
        if flat.is_floating_point():
            minus = fingerprint(torch.full((entry.group, entry.run), -0.0, dtype=entry.dtype))
            zero |= prints == int(compose(minus, entry.group)[0] if entry.group > 1 else minus[0])
        dec.mark(_segments(wrong[zero], per), ZEROS)
        rest, prints = wrong[~zero], prints[~zero]
        if not rest.numel():
            return
        rows_key = ("rows", entry.dtype, entry.run, entry.group)
        if rows_key not in cache:
            units = _expected_units(param, length, per)
            cache[rows_key] = RowsIndex(flat, units, length, entry)
        index: RowsIndex = cache[rows_key]
        found = index.find(prints)
        hit = (found >= 0).all(dim=1)
        dec.start[_segments(rest[hit], per)] = found[hit].flatten()
        miss = _segments(rest[~hit], per)
        dec.mark(miss, NOT_FOUND)
        if miss.numel():
            per_segment = prints[~hit].repeat_interleave(per)
            pending.append(
                RowsPending(dec, miss, per_segment, index.units, entry, param.global_shape)
            )

    def whole_rows(self) -> dict[str, list[str]]:
        """Per tensor whose wrong rows :meth:`_judge_rows` named whole: the note's words and
        the rank files (made on first use: one PrintFiles serves one diagnosis)."""
        return self.__dict__.setdefault("_whole_rows", {})

    def words(self, notes: list[str]) -> list[str]:
        """The shared note words name full dump files; here the files are fingerprint files.
        Wrong rows named whole (:meth:`_judge_rows`) add a note per tensor."""
        out = [_FILE_IN_NOTE.sub(r"\1" + SUFFIX, n) for n in notes]
        for key, (prints, length, *names) in self.whole_rows().items():
            out.append(
                f"{key} ({', '.join(names)}): fingerprinted {prints} elements, but the layout"
                f" fills its rows in segments of {length}: its wrong rows are named whole, not"
                " the elements in them; a full dump (save_vllm_rank without fingerprints=True)"
                " names those"
            )
        return out


def _peer_groups(
    param: ParamLayout, rows: PrintTable, length: int, group: int
) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Every rank's expected groups of ``param`` (no padding in them): their composed
    fingerprints sorted for :func:`_found`, and each group's segment start ids [n, group]."""
    starts = _expected_units(param, length, group)
    if not starts.numel():
        empty = torch.zeros(0, dtype=torch.int64)
        return (empty, empty.clone()), starts
    ordered, order = compose(rows.expected(starts.flatten()), group).sort(stable=True)
    return (ordered, order), starts


def _segments(units: torch.Tensor, per: int) -> torch.Tensor:
    """The segment numbers of stored fingerprints ``units``, ``per`` segments each.

    >>> _segments(torch.tensor([0, 2]), 3).tolist()
    [0, 1, 2, 6, 7, 8]
    """
    return (units[:, None] * per + torch.arange(per)[None, :]).flatten()


def gathered_prints(
    flat: torch.Tensor, starts: torch.Tensor, length: int, run: int, group: int
) -> torch.Tensor:
    """What a rank's fingerprint file stores for a tensor whose segments of ``length``
    elements start at global ids ``starts`` (-1: padding, zeros) of ``flat``: its elements
    gathered in local order, fingerprinted in runs of ``run``, ``group`` runs composed into
    one. Gathered a bounded number of elements at a time.

    >>> g = torch.arange(8.0)
    >>> starts = torch.tensor([0, 4, 1, 5, 2, 6, 3, 7])  # rows [g0 u0 g1 u1], [g2 u2 g3 u3]
    >>> local = torch.tensor([[0.0, 4, 1, 5], [2, 6, 3, 7]])
    >>> torch.equal(gathered_prints(g, starts, 1, 4, 1), fingerprint(local))
    True
    >>> torch.equal(gathered_prints(g, starts, 1, 4, 2), compose(fingerprint(local), 2))
    True
    >>> padded = gathered_prints(g, torch.tensor([4, -1]), 2, 4, 1)  # a row [g4 g5 0 0]
    >>> torch.equal(padded, fingerprint(torch.tensor([[4.0, 5, 0, 0]])))
    True
    """
    unit = run * group // length  # segments per stored fingerprint
    step = max(1, _GATHER_ELEMENTS // (run * group)) * unit
    out = []
    span = torch.arange(length)
    for s0 in range(0, starts.numel(), step):
        part = starts[s0 : s0 + step]
        padding = (part < 0)[:, None].expand(-1, length).flatten()
        ids = (part.clamp(min=0)[:, None] + span[None, :]).flatten()
        values = flat[ids]
        values[padding] = 0
        prints = fingerprint(values.reshape(-1, run))
        out.append(compose(prints, group) if group > 1 else prints)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64)


_GATHER_ELEMENTS = 1 << 22  # elements gathered at a time by gathered_prints


def _expected_units(param: ParamLayout, length: int, per: int) -> torch.Tensor:
    """Every rank's expected stored units of ``param`` (``per`` segments each, of ``length``
    elements, no padding in them): their segments' start ids [n, per]."""
    units = []
    for t in param.dst:
        if segment_length(t.index, param.global_shape) != length:
            continue
        mine = segment_starts(t.index, param.global_shape, length)
        if mine.numel() % per:
            continue
        mine = mine.reshape(-1, per)
        units.append(mine[(mine >= 0).all(dim=1)])
    return torch.cat(units) if units else torch.zeros(0, per, dtype=torch.int64)


class RowsIndex:
    """Every rank's expected rows (or groups of rows) of a parameter laid out in segments
    shorter than a row, fingerprinted from a global tensor of the parameter's shape, for
    look-up: a wrong row held by another rank, another layer, or a previous checkpoint."""

    def __init__(
        self, flat: torch.Tensor, units: torch.Tensor, length: int, entry: PrintEntry
    ) -> None:
        self.units = units
        prints = gathered_prints(flat, units.flatten(), length, entry.run, entry.group)
        self._sorted = prints.sort(stable=True)

    def find(self, prints: torch.Tensor) -> torch.Tensor:
        """Per fingerprint: the segment start ids of a unit with it [n, per], or -1."""
        at = _found(self._sorted, prints, 1)
        out = torch.full((prints.numel(), self.units.shape[1]), -1, dtype=torch.int64)
        out[at >= 0] = self.units[at[at >= 0]]
        return out


@dataclass
class RowsPending(Pending):
    """Pending segments of rows fingerprinted whole but laid out in shorter segments: whole
    stored units, each segment with its unit's fingerprint. Found only where a unit of
    every rank's expected ones is held in full (in place, or at another rank's place)."""

    prints: torch.Tensor  # [n]: the unit's fingerprint, per segment
    units: torch.Tensor  # [m, per]: every rank's expected units of the parameter
    entry: PrintEntry
    global_shape: tuple[int, ...]

    def key(self) -> tuple:
        return ("rows", self.decoded.param, self.entry.dtype, self.entry.run, self.entry.group)

    def index(self, glob: torch.Tensor) -> RowsIndex | None:
        if tuple(glob.shape) != self.global_shape:  # another parameter's shape: no such rows
            return None
        flat = glob.to(self.entry.dtype).reshape(-1)
        return RowsIndex(flat, self.units, self.decoded.length, self.entry)

    def find(self, index: RowsIndex | None) -> torch.Tensor:
        if index is None:
            return torch.full_like(self.segments, -1)
        per = self.units.shape[1]
        found = index.find(self.prints[::per].contiguous())  # segments come in whole units
        return found.flatten()

    def in_place(self, glob: torch.Tensor) -> torch.Tensor:
        dec, per = self.decoded, self.units.shape[1]
        starts = dec.expected[self.segments].reshape(-1, per)
        flat = glob.to(self.entry.dtype).reshape(-1)
        e = self.entry
        expected = gathered_prints(flat, starts.flatten(), dec.length, e.run, e.group)
        real = (starts >= 0).all(dim=1)  # padding is never stale
        same = (real & (expected == self.prints[::per])).repeat_interleave(per)
        return torch.where(same, starts.flatten(), -1)

    def reordered(self, glob: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        # A row's one fingerprint cannot tell its elements reordered.
        return torch.zeros(real.numel(), dtype=torch.bool)

    def keep(self, mask: torch.Tensor) -> None:
        self.segments, self.prints = self.segments[mask], self.prints[mask]


def fingerprint_dumps(
    dump: str | Path,
    out_dir: str | Path,
    tp: int,
    pp: int = 1,
    run_1d: int = 2,
    min_bytes: int = 0,
) -> Path:
    """Fingerprint a folder of full rank dumps (what each rank would have written itself).

    ``run_1d`` defaults to 2 here: the tiny test models have heads of 2 elements; and
    ``min_bytes`` to 0 (one fingerprint per row): their rows are a few dozen bytes.
    """
    from safetensors.torch import load_file

    from syncviz.diagnose.dumps import rank_file

    for p in range(pp):
        for t in range(tp):
            tensors = load_file(str(Path(dump) / rank_file(p, t, pp)))
            save_fingerprints(
                tensors, out_dir, tp_rank=t, pp_rank=p, pp_size=pp, run_1d=run_1d,
                min_bytes=min_bytes,
            )  # fmt: skip
    return Path(out_dir)
