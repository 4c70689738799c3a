"""Diagnose from fingerprint files: the verdicts of full dumps from a thousandth of the bytes.

Each rank's file (:func:`syncviz.fingerprint_dump.save_fingerprints`) holds one
fingerprint per row (per run of a 1-D tensor). The checkpoint side fingerprints
every global tensor once, in aligned windows of each rank's segment length, so
that what the oracle says a rank must hold at a segment is one table look-up,
and a wrong segment's fingerprint found in that table (or in another
parameter's) says where its data came from, exactly as a full dump's look-up
does. Runs shorter than a segment are composed into the segment's fingerprint
(:func:`syncviz.fingerprint.compose`) on both sides.

What differs from a full dump: a segment mixing +0.0 and -0.0 (where data was
expected) reads "not found" rather than "zeros", and two different segments
share a fingerprint with odds of about 2**-48 (one-bit changes: never).

>>> import tempfile
>>> from syncviz.diagnose.fixtures import tiny_spec, write_checkpoint, write_dumps
>>> spec, ref, dump = tiny_spec("llama-mcore"), tempfile.mkdtemp(), tempfile.mkdtemp()
>>> _ = write_checkpoint(spec, ref)
>>> write_dumps(spec, ref, dump, tp=4, bugs={"qkv": "shard0"})
>>> prints = fingerprint_dumps(dump, tempfile.mkdtemp(), tp=4)
>>> report = diagnose_fingerprints(ref, prints, dst_tp=4)
>>> report.ok, report.counts()
(False, {'ok': 14, 'wrong': 1})
>>> print(report.bad()[0].lines()[0])
  tp 1, rows 0-3: holds tp 0's Q heads 0-1, expected Q heads 2-3
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from syncviz.check import CheckReport
from syncviz.diagnose.core import (
    NOT_FOUND,
    REFERENCE,
    ZEROS,
    Decoded,
    Diagnosis,
    placement_notes,
    rank_order_notes,
    reference_tensor,
    require_fitting_shapes,
)
from syncviz.diagnose.dumps import missing_rank_file, normalise
from syncviz.diagnose.reference import Reference
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
from syncviz.oracle import ModelLayout, ParamLayout, model_layout
from syncviz.parallel import Parallel
from syncviz.progress import progress

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
class _Pending:
    decoded: Decoded
    segments: torch.Tensor
    prints: torch.Tensor
    dtype: torch.dtype
    run: int


def run_fingerprint_diagnosis(
    reference: str | Path,
    dump: str | Path,
    dst_tp: int,
    dst_pp: int = 1,
    *,
    layers: Iterable[int] | None = None,
    include_globals: bool | None = None,
    show_progress: bool = False,
) -> Diagnosis:
    """Compare each rank's fingerprints with the oracle's and decode the wrong segments."""
    ref = Reference(reference)
    dst = Parallel(tp=dst_tp, pp=dst_pp)
    wanted = None if layers is None else tuple(layers)
    with_globals = (wanted is None) if include_globals is None else include_globals
    layout = model_layout(ref.spec, REFERENCE, dst, layers=wanted, include_globals=with_globals)
    whole = model_layout(ref.spec, REFERENCE, dst)
    dumps = open_prints(dump, dst_tp, dst_pp)
    notes = placement_notes(layout, whole, dumps)  # type: ignore[arg-type]
    require_fitting_shapes(layout, dumps)  # type: ignore[arg-type]
    decoded: list[list[Decoded]] = []
    pending: list[_Pending] = []
    for i, param in enumerate(progress(layout.params, "diagnose", enabled=show_progress)):
        decoded.append(_judge(ref, i, param, dumps, pending))
    if pending:
        _search_elsewhere(ref, layout, pending)
    diagnosis = Diagnosis(ref, layout, dumps, decoded, notes)  # type: ignore[arg-type]
    diagnosis.notes += rank_order_notes(diagnosis)
    # The shared note words name full dump files; here the files are fingerprint files.
    diagnosis.notes = [_FILE_IN_NOTE.sub(r"\1" + SUFFIX, n) for n in diagnosis.notes]
    return diagnosis


def _judge(
    ref: Reference,
    i: int,
    param: ParamLayout,
    dumps: dict[tuple[int, int], PrintDump],
    pending: list[_Pending],
) -> list[Decoded]:
    glob: torch.Tensor | None = None
    tables: dict[tuple[torch.dtype, int, int], PrintTable] = {}
    out = []
    for t in param.dst:
        length = segment_length(t.index)
        dec = Decoded(i, t.pp, t.tp, t.shape, length, segment_starts(t.index, length))
        out.append(dec)
        dump = dumps[(t.pp, t.tp)]
        entry = dump.tensors.get(param.key)
        if entry is None:
            dec.status = "missing"
            continue
        if entry.shape != t.shape:
            dec.status, dec.dump_shape = "shape", entry.shape
            continue
        if length % entry.run:
            raise SyncvizError(
                f"{dump.path.name}: {entry.name} was fingerprinted in runs of {entry.run}"
                f" elements, but the layout moves it in segments of {length}",
                fix=f"fingerprint again with save_fingerprints(..., run_1d={length})",
            )
        if glob is None:
            glob = reference_tensor(ref, param)
        key = (entry.dtype, length, entry.run)
        if key not in tables:
            tables[key] = PrintTable(glob.to(entry.dtype), length, entry.run)
        table = tables[key]
        actual = dump.read(param.key)
        if length > entry.run:
            actual = compose(actual, length // entry.run)
        ok = actual == table.expected(dec.expected)
        dec.source = torch.full_like(dec.expected, i)
        dec.start = dec.expected.clone()
        if bool(ok.all()):
            continue
        dec.status = "wrong"
        wrong = torch.nonzero(~ok).flatten()
        prints = actual[wrong]
        zero = prints == 0  # +0.0 everywhere; -0.0 is caught after the look-up
        dec.source[wrong[zero]] = ZEROS
        dec.start[wrong[zero]] = -1
        rest, prints = wrong[~zero], prints[~zero]
        if not rest.numel():
            continue
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
            pending.append(_Pending(dec, rest[miss], prints[miss], entry.dtype, entry.run))
    return out


def _search_elsewhere(ref: Reference, layout: ModelLayout, pending: list[_Pending]) -> None:
    """Look unexplained segments up in the other parameters: same kind first."""
    own = {p.decoded.param for p in pending}
    kinds = {layout.params[i].kind for i in own}
    order = sorted(
        (i for i in range(len(layout.params)) if i not in own),
        key=lambda i: (layout.params[i].kind not in kinds, i),
    )
    for i in order:
        if not pending:
            return
        param = layout.params[i]
        numel = math.prod(param.global_shape)
        fits = [p for p in pending if numel % p.decoded.length == 0]
        if not fits:
            continue
        glob = reference_tensor(ref, param)
        tables: dict[tuple[torch.dtype, int, int], PrintTable] = {}
        for p in fits:
            key = (p.dtype, p.decoded.length, p.run)
            if key not in tables:
                tables[key] = PrintTable(glob.to(p.dtype), p.decoded.length, p.run)
            found = tables[key].find(p.prints)
            hit = found >= 0
            if not bool(hit.any()):
                continue
            assert p.decoded.source is not None and p.decoded.start is not None
            p.decoded.source[p.segments[hit]] = i
            p.decoded.start[p.segments[hit]] = found[hit]
            p.segments, p.prints = p.segments[~hit], p.prints[~hit]
        pending[:] = [p for p in pending if p.segments.numel()]


def diagnose_fingerprints(
    reference: str | Path,
    dump_dir: str | Path,
    dst_tp: int,
    dst_pp: int = 1,
    *,
    layers: Iterable[int] | None = None,
    include_globals: bool | None = None,
    show_progress: bool = False,
) -> CheckReport:
    """:func:`syncviz.diagnose.diagnose` for a folder of fingerprint files."""
    from syncviz.diagnose.result import as_result
    from syncviz.diagnose.words import report as _report

    diagnosis = run_fingerprint_diagnosis(
        reference,
        dump_dir,
        dst_tp,
        dst_pp,
        layers=layers,
        include_globals=include_globals,
        show_progress=show_progress,
    )
    report = _report(diagnosis)
    report.result = as_result(diagnosis)  # type: ignore[attr-defined]
    return report


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
