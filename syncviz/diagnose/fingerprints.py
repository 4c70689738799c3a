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

What differs from a full dump: a segment mixing +0.0 and -0.0 (where data was
expected) reads "not found" rather than "zeros"; a segment reordered within a run
(not in whole runs) reads "not found" rather than "in another order"; and two
different segments share a fingerprint with odds of about 2**-48 (one-bit
changes: never).

>>> import tempfile
>>> from syncviz.diagnose.fixtures import tiny_spec, write_checkpoint, write_dumps
>>> spec, ref, dump = tiny_spec("llama-mcore"), tempfile.mkdtemp(), tempfile.mkdtemp()
>>> _ = write_checkpoint(spec, ref)
>>> write_dumps(spec, ref, dump, tp=4, bugs={"qkv": "shard0"})
>>> prints = fingerprint_dumps(dump, tempfile.mkdtemp(), tp=4)
>>> from syncviz.diagnose import diagnose  # it reads either kind of rank file
>>> report = diagnose(ref, prints, dst_tp=4)
>>> report.ok, report.counts()
(False, {'ok': 14, 'wrong': 1})
>>> print(report.bad()[0].lines()[0])
  tp 1, rows 0-3: holds tp 0's Q heads 0-1, expected Q heads 2-3
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from syncviz.diagnose.core import (
    NOT_FOUND,
    ZEROS,
    Decoded,
    Pending,
)
from syncviz.diagnose.dumps import missing_rank_file, normalise
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
    for look-up. ``run`` is the length of the fingerprinted runs a window is composed of."""

    def __init__(self, glob: torch.Tensor, length: int, run: int) -> None:
        self.length, self.run = length, run
        self._flat = glob.reshape(-1)
        self.prints = _segment_prints(glob, length, run)
        self._sorted: tuple[torch.Tensor, torch.Tensor] | None = None  # for look-ups only
        minus = torch.full((length,), -0.0, dtype=glob.dtype) if glob.is_floating_point() else None
        self.negative_zero = None if minus is None else int(_segment_prints(minus, length, run)[0])

    def expected(self, starts: torch.Tensor) -> torch.Tensor:
        """The fingerprint of the window at each start id (-1: padding, zeros: 0)."""
        out = torch.zeros(starts.shape[0], dtype=torch.int64)
        real = starts >= 0
        aligned = real & (starts % self.length == 0)
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
        ordered, order = self._sorted
        if not ordered.numel():
            return torch.full_like(prints, -1)
        lo = torch.searchsorted(ordered, prints).clamp(max=ordered.numel() - 1)
        return torch.where(ordered[lo] == prints, order[lo] * self.length, -1)


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
        if length % entry.run:
            raise SyncvizError(
                f"{dump.path.name}: {entry.name} was fingerprinted in runs of {entry.run}"
                f" elements, but the layout moves it in segments of {length}",
                fix=f"fingerprint again with save_fingerprints(..., run_1d={length})",
            )
        key = (entry.dtype, length, entry.run)
        if key not in cache:
            cache[key] = PrintTable(glob().to(entry.dtype), length, entry.run)
        table = cache[key]
        runs = dump.read(param.key)
        actual = compose(runs, length // entry.run) if length > entry.run else runs
        ok = actual == table.expected(dec.expected)
        dec.source = torch.full_like(dec.expected, dec.param)
        dec.start = dec.expected.clone()
        if bool(ok.all()):
            return
        dec.status = "wrong"
        wrong = torch.nonzero(~ok).flatten()
        prints = actual[wrong]
        zero = prints == 0  # +0.0 everywhere; -0.0 is caught after the look-up
        dec.source[wrong[zero]] = ZEROS
        dec.start[wrong[zero]] = -1
        rest, prints = wrong[~zero], prints[~zero]
        if not rest.numel():
            return
        found = table.find(prints)
        hit = found >= 0
        dec.start[rest[hit]] = found[hit]
        signed_zero = ~hit & (prints == table.negative_zero)
        dec.source[rest[signed_zero]] = ZEROS
        dec.start[rest[signed_zero]] = -1
        miss = ~hit & ~signed_zero
        dec.source[rest[miss]] = NOT_FOUND
        dec.start[rest[miss]] = -1
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
        if length > entry.run:
            actual = compose(actual, length // entry.run)
        table = PrintTable(glob.to(entry.dtype), length, entry.run)
        return bool((actual == table.expected(dec.expected)).all())

    def words(self, notes: list[str]) -> list[str]:
        """The shared note words name full dump files; here the files are fingerprint files."""
        return [_FILE_IN_NOTE.sub(r"\1" + SUFFIX, n) for n in notes]


def fingerprint_dumps(
    dump: str | Path, out_dir: str | Path, tp: int, pp: int = 1, run_1d: int = 2
) -> Path:
    """Fingerprint a folder of full rank dumps (what each rank would have written itself).

    ``run_1d`` defaults to 2 here: the tiny test models have heads of 2 elements.
    """
    from safetensors.torch import load_file

    from syncviz.diagnose.dumps import rank_file

    for p in range(pp):
        for t in range(tp):
            tensors = load_file(str(Path(dump) / rank_file(p, t, pp)))
            save_fingerprints(tensors, out_dir, tp_rank=t, pp_rank=p, pp_size=pp, run_1d=run_1d)
    return Path(out_dir)
