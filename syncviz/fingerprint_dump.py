"""Fingerprint what a rank holds: one small file per rank instead of a full dump.

Every tensor is fingerprinted where it lives (see :mod:`syncviz.fingerprint`):
per row for 2-D weights, per row of each expert for 3-D stacks, per run of
``run_1d`` elements for 1-D tensors (norms, biases). The file is a safetensors
file of int64 fingerprints under the parameters' own names, its metadata naming
each tensor's shape, dtype and run, and the fingerprint version. A row of 8192
bf16 values (16 KiB) becomes 8 bytes.

>>> import tempfile, torch
>>> model = torch.nn.Linear(4, 2)
>>> path = save_fingerprints(model, tempfile.mkdtemp(), tp_rank=1)
>>> path.name
'tp1.fingerprints.safetensors'
>>> entries, prints = read_fingerprints(path)
>>> entries["weight"].shape, entries["weight"].run, tuple(prints["weight"].shape)
((2, 4), 4, (2,))
>>> entries["bias"].run
2
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
from syncviz.fingerprint import VERSION, fingerprint_many

SUFFIX = ".fingerprints.safetensors"
FORMAT = "syncviz-fingerprints"
RUN_1D = 16
"""Elements per fingerprint of a 1-D tensor: a divisor of every head slice of 16 or more."""


def fingerprint_file(pp: int, tp: int, pp_size: int) -> str:
    """The fingerprint file of vLLM rank (pp, tp): ``tp{t}`` or ``pp{p}-tp{t}`` when P > 1.

    >>> fingerprint_file(0, 3, 1), fingerprint_file(1, 0, 2)
    ('tp3.fingerprints.safetensors', 'pp1-tp0.fingerprints.safetensors')
    """
    return (f"tp{tp}" if pp_size == 1 else f"pp{pp}-tp{tp}") + SUFFIX


@dataclass(frozen=True)
class PrintEntry:
    """One tensor of a fingerprint file: its name there, shape, dtype and segment run."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    run: int


def tensor_run(shape: tuple[int, ...], run_1d: int = RUN_1D) -> int:
    """Elements per fingerprint: the last dimension (rows), or for 1-D a divisor of ``run_1d``.

    >>> tensor_run((8, 5)), tensor_run((24,)), tensor_run((20,)), tensor_run((0,))
    (5, 8, 4, 1)
    """
    if len(shape) > 1:
        return max(shape[-1], 1)
    n = math.prod(shape)
    return math.gcd(n, run_1d) if n else 1


def save_fingerprints(
    model_or_named_tensors: Any,
    out_dir: str | Path,
    *,
    tp_rank: int,
    pp_rank: int = 0,
    pp_size: int = 1,
    run_1d: int = RUN_1D,
) -> Path:
    """Write the fingerprints of every tensor to ``out_dir/tp{t}.fingerprints.safetensors``.

    ``model_or_named_tensors`` is a module (its ``named_parameters()``), a mapping
    of names to tensors, or an iterable of (name, tensor) pairs. Fingerprints are
    computed on each tensor's device; only they travel to the host. A name seen
    twice (tied parameters) is written once. Returns the file's path.
    """
    from safetensors.torch import save_file

    if run_1d < 1:
        raise SyncvizError(f"run_1d={run_1d} is not a positive count", fix="pass run_1d=16")
    prints: dict[str, torch.Tensor] = {}
    meta: dict[str, dict[str, Any]] = {}
    todo: dict[str, torch.Tensor] = {}
    for name, tensor in _named(model_or_named_tensors):
        if name in meta:
            continue
        t = tensor.detach()
        run = tensor_run(tuple(t.shape), run_1d)
        dtype = str(t.dtype).removeprefix("torch.")
        meta[name] = {"shape": list(t.shape), "dtype": dtype, "run": run}
        if t.numel():
            todo[name] = t
        else:
            prints[name] = torch.zeros(0, dtype=torch.int64)
    runs: list[int | None] = [meta[name]["run"] for name in todo]
    for name, p in zip(todo, fingerprint_many(list(todo.values()), runs), strict=True):
        prints[name] = p.to("cpu")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    path = root / fingerprint_file(pp_rank, tp_rank, pp_size)
    header = {"format": FORMAT, "version": str(VERSION), "tensors": json.dumps(meta)}
    save_file(prints, str(path), metadata=header)
    return path


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
    if header.get("version") != str(VERSION):
        raise SyncvizError(
            f"{str(path)!r} holds fingerprints of version {header.get('version')}, this"
            f" syncviz computes version {VERSION}",
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
        entries[name] = PrintEntry(name, tuple(m["shape"]), dtype, int(m["run"]))
    return entries, prints
