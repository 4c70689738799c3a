"""What the tracer keeps per op while tracing, and how that becomes an OpRecord.

Tracing must stay cheap, so an op is first captured as a small tuple of refs,
``torch.Size`` objects, dtypes and the raw non-tensor arguments; rendering,
dtype names, provenance and warnings are worked out later, in one pass, by
:func:`build_record`.

>>> import torch
>>> info = op_info(torch.Tensor.view)
>>> info.name, info.in_place, info.sources
('view', False, 'first')
>>> before = [(0, torch.Size([8, 4]), torch.float32)]
>>> after = [(1, torch.Size([4, 8]), torch.float32)]
>>> op = build_record(PendingOp(info, before, (0,), (torch.Size([4, 8]),), {}, after), index=0)
>>> op.summary()
'view(#0[8, 4] float32, [4, 8]) -> #1[4, 8] float32'
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from syncviz.trace.ops import (
    CAST_OPS,
    CREATION_OPS,
    MOVEMENT_OPS,
    cast_warning,
    dtype_name,
    is_in_place,
    op_name,
    render_arg,
    value_warning,
)
from syncviz.trace.records import OpRecord, TensorRef

# (ref, shape, dtype) of one tensor at the moment of the op.
Snapshot = tuple[int, torch.Size, torch.dtype]

# Ops whose listed tensors (first argument) all contribute values.
_CONCAT_OPS = frozenset({"cat", "stack", "hstack", "vstack", "dstack", "column_stack"})
# Ops that write one tensor argument into the first: op (and its in-place form) -> that
# argument's position.
_WRITE_ARG = {"setitem": 2} | {
    name: position
    for op, position in (("index_put", 2), ("index_copy", 3), ("scatter", 3), ("masked_scatter", 2))
    for name in (op, op + "_")
}


class OpInfo(NamedTuple):
    """What the tracer needs to know about a torch callable, worked out once per callable.

    ``sources`` says which input tensors carry values into the outputs: ``first``
    (views, slices, casts), ``all`` (arithmetic, unknown ops), ``none`` (``empty_like``),
    ``copy`` (``copy_``: the source only), ``concat`` (the listed tensors) or
    ``write`` (the first tensor and the one written into it).

    >>> op_info(torch.Tensor.__setitem__)
    OpInfo(name='setitem', in_place=True, sources='write')
    """

    name: str
    in_place: bool
    sources: str


class PendingOp(NamedTuple):
    """One captured op, waiting for :func:`build_record`.

    >>> PendingOp(op_info(torch.chunk), [(0, torch.Size([4]), torch.int64)], (0,), (2,), {},
    ...           []).args
    (2,)
    """

    info: OpInfo
    inputs: list[Snapshot]
    sources: tuple[int, ...]  # positions in inputs of the value-carrying tensors
    args: tuple[Any, ...]  # non-tensor positional arguments, as passed
    kwargs: dict[str, Any]  # non-tensor keyword arguments, as passed
    outputs: list[Snapshot]
    notes: tuple[str, ...] = ()  # warnings only visible at capture time


_INFO_CACHE: dict[Any, OpInfo] = {}


def op_info(func: Callable[..., Any]) -> OpInfo:
    """The :class:`OpInfo` of ``func`` (cached).

    >>> op_info(torch.cat).sources, op_info(torch.Tensor.copy_).in_place
    ('concat', True)
    """
    try:
        return _INFO_CACHE[func]
    except (KeyError, TypeError):
        pass
    name = op_name(func)
    if name == "copy_":
        sources = "copy"
    elif name in _CONCAT_OPS:
        sources = "concat"
    elif name in _WRITE_ARG:
        sources = "write"
    elif name in MOVEMENT_OPS or name in CAST_OPS:
        sources = "first"
    elif name in CREATION_OPS:
        sources = "none"
    else:
        sources = "all"
    info = OpInfo(name, is_in_place(name), sources)
    with contextlib.suppress(TypeError):  # an unhashable callable is looked at each time
        _INFO_CACHE[func] = info
    return info


def source_positions(
    info: OpInfo, args: tuple[Any, ...], kwargs: dict[str, Any], found: list[torch.Tensor]
) -> tuple[int, ...]:
    """Positions in ``found`` (the op's tensors, in argument order) that carry values.

    >>> a, b = torch.zeros(1), torch.zeros(1)
    >>> source_positions(op_info(torch.Tensor.copy_), (a, b), {}, [a, b])
    (1,)
    """
    rule = info.sources
    if rule == "first":
        return (0,)
    if rule == "all":
        return tuple(range(len(found)))
    if rule == "none":
        return ()
    if rule == "copy":
        return (1,) if len(found) > 1 else ()
    if rule == "concat":
        listed = args[0] if args else kwargs.get("tensors", ())
        return tuple(range(len(listed))) if isinstance(listed, (list, tuple)) else (0,)
    # "write": the first tensor plus the one written into it, wherever it sits.
    position = _WRITE_ARG[info.name]
    written = args[position] if len(args) > position else None
    if written is None:
        written = next((kwargs[k] for k in ("source", "src", "values") if k in kwargs), None)
    for i, tensor in enumerate(found):
        if i > 0 and tensor is written:
            return (0, i)
    return (0,)


def capture_notes(info: OpInfo, args: tuple[Any, ...]) -> tuple[str, ...]:
    """Warnings that need the live arguments (a constant written by setitem).

    >>> capture_notes(op_info(torch.Tensor.__setitem__), (torch.zeros(2), 0, 5.0))
    ('setitem writes a constant: those elements carry no id',)
    """
    if info.name == "setitem" and len(args) >= 3 and not isinstance(args[2], torch.Tensor):
        return ("setitem writes a constant: those elements carry no id",)
    return ()


def build_record(pending: PendingOp | tuple[Any, ...], index: int) -> OpRecord:
    """Turn a captured op (a PendingOp, or a plain tuple of its fields) into its
    :class:`OpRecord`: names, rendered arguments, provenance and warnings.

    >>> snap = [(0, torch.Size([2]), torch.float64)]
    >>> cast = [(1, torch.Size([2]), torch.bfloat16)]
    >>> build_record(PendingOp(op_info(torch.Tensor.to), snap, (0,), (torch.bfloat16,), {}, cast),
    ...              index=3).warnings
    ['cast float64->bfloat16 may destroy ids']
    """
    info, snaps_in, sources, args, kwargs, snaps_out, notes = pending
    inputs = [TensorRef(ref, list(shape), dtype_name(dtype)) for ref, shape, dtype in snaps_in]
    outputs = [TensorRef(ref, list(shape), dtype_name(dtype)) for ref, shape, dtype in snaps_out]
    derived = list(dict.fromkeys(snaps_in[p][0] for p in sources))
    warnings = list(notes)
    value_text = value_warning(info.name)
    if value_text is not None:
        warnings.insert(0, value_text)
    else:
        # A movement op between dtypes is a cast; flag the ones that can round ids.
        in_dtypes = {snaps_in[p][2] for p in sources}
        for out_dtype in dict.fromkeys(snap[2] for snap in snaps_out):
            for in_dtype in sorted(in_dtypes - {out_dtype}, key=str):
                text = cast_warning(in_dtype, out_dtype)
                if text is not None and text not in warnings:
                    warnings.append(text)
    return OpRecord(
        index,
        info.name,
        inputs,
        [a if type(a) is int else render_arg(a) for a in args],
        {k: render_arg(v) for k, v in kwargs.items()} if kwargs else {},
        outputs,
        derived,
        warnings,
    )
