"""Fingerprint what a rank holds: one small file per rank instead of a full dump.

Every tensor is fingerprinted where it lives (see :mod:`syncviz.fingerprint`):
per row for 2-D weights, per row of each expert for 3-D stacks, per run of
``run_1d`` elements for 1-D tensors (norms, biases). A row the layout fills in
shorter segments (an expert's gate and up bias interleaved element by element) is
one fingerprint too: diagnosis names such rows whole. Rows narrower than
``min_bytes`` (8 KiB) are fingerprinted one by one too, then ``group`` consecutive
rows' fingerprints are composed into one (:func:`syncviz.fingerprint.compose`) so
that every stored fingerprint stands for at least 8 KiB: files stay at most 0.1%
of the bytes they describe (a row of 8192 bf16 values becomes 8 bytes; four rows
of 1536, 12 KiB, too). A group is the unit a diagnosis then locates: a wrong row
reads as its group's rows. The file is a safetensors file of int64 fingerprints
under the parameters' own names, its metadata naming each tensor's shape, dtype,
run and group, the file format's version and the fingerprint function's version.

>>> import tempfile, torch
>>> model = torch.nn.Linear(4, 4)
>>> path = save_fingerprints(model, tempfile.mkdtemp(), tp_rank=1)
>>> path.name
'tp1.fingerprints.safetensors'
>>> entries, prints = read_fingerprints(path)
>>> w = entries["weight"]  # rows of 16 bytes: two rows' fingerprints composed into one
>>> w.shape, w.run, w.group, tuple(prints["weight"].shape)
((4, 4), 4, 2, (2,))
>>> entries["bias"].run, entries["bias"].group
(4, 1)
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from syncviz.errors import SyncvizError
from syncviz.fingerprint import VERSION, compose, fingerprint_many

SUFFIX = ".fingerprints.safetensors"
FORMAT = "syncviz-fingerprints"
RUN_1D = 16
"""Elements per fingerprint of a 1-D tensor: a divisor of every head slice of 16 or more."""
MIN_BYTES = 8192
"""Bytes a stored fingerprint (8 bytes) stands for at least, where rows allow: <= 0.1%."""
FILE_VERSION = 2
"""The file format: 2 adds each tensor's ``group``; files of version 1 (no groups) read too."""


def fingerprint_file(pp: int, tp: int, pp_size: int) -> str:
    """The fingerprint file of vLLM rank (pp, tp): ``tp{t}`` or ``pp{p}-tp{t}`` when P > 1.

    >>> fingerprint_file(0, 3, 1), fingerprint_file(1, 0, 2)
    ('tp3.fingerprints.safetensors', 'pp1-tp0.fingerprints.safetensors')
    """
    return (f"tp{tp}" if pp_size == 1 else f"pp{pp}-tp{tp}") + SUFFIX


@dataclass(frozen=True)
class PrintEntry:
    """One tensor of a fingerprint file: its name there, shape, dtype, the elements of each
    fingerprinted run, and how many consecutive runs' fingerprints each stored one composes."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    run: int
    group: int = 1


def tensor_run(shape: tuple[int, ...], run_1d: int = RUN_1D) -> int:
    """Elements per fingerprint: the last dimension (rows), or for 1-D a divisor of ``run_1d``.

    >>> tensor_run((8, 5)), tensor_run((24,)), tensor_run((20,)), tensor_run((0,))
    (5, 8, 4, 1)
    """
    if len(shape) > 1:
        return max(shape[-1], 1)
    n = math.prod(shape)
    return math.gcd(n, run_1d) if n else 1


def tensor_group(shape: tuple[int, ...], element_size: int, min_bytes: int = MIN_BYTES) -> int:
    """Rows per stored fingerprint: the fewest that make ``min_bytes``, a power of two dividing
    half the rows of each matrix, so that a group never straddles two experts nor the halves
    of a fused gate/up; 1 for 1-D.

    >>> tensor_group((4096, 1536), 2), tensor_group((16, 4096, 4096), 2), tensor_group((12, 4), 2)
    (4, 1, 2)
    >>> tensor_group((8192,), 2), tensor_group((8, 16), 2, min_bytes=0)
    (1, 1)
    """
    if len(shape) < 2 or not math.prod(shape):
        return 1
    rows, row_bytes, group = shape[-2], shape[-1] * element_size, 1
    while group * row_bytes < min_bytes and rows % (4 * group) == 0:
        group *= 2
    return group


def save_fingerprints(
    model_or_named_tensors: Any,
    out_dir: str | Path,
    *,
    tp_rank: int,
    pp_rank: int = 0,
    pp_size: int = 1,
    run_1d: int = RUN_1D,
    min_bytes: int = MIN_BYTES,
) -> Path:
    """Write the fingerprints of every tensor to ``out_dir/tp{t}.fingerprints.safetensors``.

    ``model_or_named_tensors`` is a module (its ``named_parameters()``), a mapping
    of names to tensors, or an iterable of (name, tensor) pairs. Fingerprints are
    computed on each tensor's device; only they travel to the host. A name seen
    twice (tied parameters) is written once. ``min_bytes=0`` keeps one fingerprint
    per row (a diagnosis then locates single rows). Returns the file's path.
    """
    from safetensors.torch import save_file

    if run_1d < 1:
        raise SyncvizError(f"run_1d={run_1d} is not a positive count", fix="pass run_1d=16")
    if min_bytes < 0:
        raise SyncvizError(f"min_bytes={min_bytes} is negative", fix="pass min_bytes=8192")
    prints: dict[str, torch.Tensor] = {}
    meta: dict[str, dict[str, Any]] = {}
    todo: dict[str, torch.Tensor] = {}
    for name, tensor in _named(model_or_named_tensors):
        if name in meta:
            continue
        t = tensor.detach()
        run = tensor_run(tuple(t.shape), run_1d)
        group = tensor_group(tuple(t.shape), t.element_size(), min_bytes)
        dtype = str(t.dtype).removeprefix("torch.")
        meta[name] = {"shape": list(t.shape), "dtype": dtype, "run": run, "group": group}
        if t.numel():
            todo[name] = t
        else:
            prints[name] = torch.zeros(0, dtype=torch.int64)
    runs: list[int | None] = [meta[name]["run"] for name in todo]
    groups = [meta[name]["group"] for name in todo]
    stored = rank_prints(list(todo.values()), runs, groups)
    if len({p.device for p in stored}) == 1:  # one copy to the host, not one per tensor
        stored = list(torch.cat(stored).to("cpu").split([p.numel() for p in stored]))
    for name, p in zip(todo, stored, strict=True):
        prints[name] = p.to("cpu")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    path = root / fingerprint_file(pp_rank, tp_rank, pp_size)
    header = {
        "format": FORMAT,
        "version": str(FILE_VERSION),
        "function": str(VERSION),
        "tensors": json.dumps(meta),
    }
    save_file(prints, str(path), metadata=header)
    return path


def rank_prints(
    tensors: list[torch.Tensor], runs: list[int | None], groups: list[int]
) -> list[torch.Tensor]:
    """What a fingerprint file stores of each tensor, on its device: the fingerprints of its
    runs of ``runs[i]`` elements, ``groups[i]`` consecutive ones composed into one. On CUDA,
    one kernel launch per row width, then a few elementwise ones per group size.

    >>> from syncviz.fingerprint import fingerprint
    >>> t = torch.arange(32.0).view(8, 4)
    >>> torch.equal(rank_prints([t], [None], [2])[0], compose(fingerprint(t), 2))
    True
    """
    prints = fingerprint_many(tensors, runs)
    by_size: dict[tuple[int, torch.device], list[int]] = {}
    for i, g in enumerate(groups):
        if g > 1:
            by_size.setdefault((g, prints[i].device), []).append(i)
    for (g, _), members in by_size.items():
        composed = compose(torch.cat([prints[i] for i in members]), g)
        sizes = [prints[i].numel() // g for i in members]
        for i, p in zip(members, composed.split(sizes), strict=True):
            prints[i] = p
    return prints


def _named(source: Any) -> Iterable[tuple[str, torch.Tensor]]:
    if isinstance(source, torch.nn.Module):
        return source.named_parameters()
    if isinstance(source, Mapping):
        return source.items()
    return source


def read_fingerprints(path: str | Path) -> tuple[dict[str, PrintEntry], dict[str, torch.Tensor]]:
    """A fingerprint file's entries and fingerprints, by the names it was written with."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), "pt") as f:
            header = f.metadata() or {}
            prints = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    except Exception as err:  # safetensors raises its own error types
        raise SyncvizError(
            f"{str(path)!r} is not a readable fingerprint file ({err})",
            fix="write fingerprints with syncviz.fingerprint_dump.save_fingerprints",
        ) from None
    if header.get("format") != FORMAT:
        raise SyncvizError(
            f"{str(path)!r} is no syncviz fingerprint file (its metadata has no format {FORMAT!r})",
            fix="write fingerprints with syncviz.fingerprint_dump.save_fingerprints",
        )
    # Version 1 files: one fingerprint per run, the function of version 1.
    version = header.get("version")
    function = header.get("function", "1") if version == str(FILE_VERSION) else version
    if version not in ("1", str(FILE_VERSION)) or function != str(VERSION):
        raise SyncvizError(
            f"{str(path)!r} holds fingerprints of file version {version} (function version"
            f" {function}), this syncviz reads file versions 1-{FILE_VERSION} of function"
            f" version {VERSION}",
            fix="fingerprint the ranks again with this syncviz",
        )
    entries = {}
    for name, m in json.loads(header["tensors"]).items():
        dtype = getattr(torch, m["dtype"], None)
        if not isinstance(dtype, torch.dtype) or name not in prints:
            raise SyncvizError(
                f"{str(path)!r}: entry {name!r} is damaged (dtype {m['dtype']!r})",
                fix="fingerprint the ranks again",
            )
        entries[name] = PrintEntry(
            name, tuple(m["shape"]), dtype, int(m["run"]), int(m.get("group", 1))
        )
    return entries, prints
