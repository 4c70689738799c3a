"""The tracer: records every torch op that touches a tracked tensor, and collectives.

It sits in torch's function mode (``__torch_function__``), so torch functions and
tensor methods (``x[...]``, ``view``, ``contiguous``, ``copy_``) all reach it
without editing the code under trace. Ops on tensors it does not know pass
straight through. It records shapes, dtypes and arguments only, never values.

>>> import torch
>>> from syncviz.trace import Tracer
>>> x = torch.arange(32.0).view(4, 8)
>>> with Tracer() as tr, tr.scope(param="w", rank=0, phase="regroup"):
...     y = torch.cat([tr.track(x, "src")[:, 0:4], x[:, 4:8]], dim=0).contiguous().view(4, 8)
>>> print(tr.trace.params[0].summary())
param=w rank=0 phase=regroup
  0: getitem(#0[4, 8] float32, [[None, None, None], [0, 4, None]]) -> #1[4, 4] float32
  1: getitem(#0[4, 8] float32, [[None, None, None], [4, 8, None]]) -> #2[4, 4] float32
  2: cat(#1[4, 4] float32, #2[4, 4] float32, dim=0) -> #3[8, 4] float32
  3: contiguous(#3[8, 4] float32) -> #3[8, 4] float32
  4: view(#3[8, 4] float32, 4, 8) -> #4[4, 8] float32
  -> #4
"""

from __future__ import annotations

import functools
import inspect
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from torch.overrides import TorchFunctionMode

from syncviz.errors import SyncvizError
from syncviz.trace.capture import (
    OpInfo,
    Snapshot,
    build_record,
    capture_notes,
    op_info,
    source_positions,
)
from syncviz.trace.model import SyncTrace
from syncviz.trace.ops import dtype_name, freeze_arg
from syncviz.trace.proxy import TracedProxy
from syncviz.trace.records import CollectiveRecord, OpRecord, ParamTrace, SourceRecord, TensorRef

T = TypeVar("T")


def _tensors_in(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, torch.Tensor)]
    if isinstance(value, dict):
        return [v for v in value.values() if isinstance(v, torch.Tensor)]
    return []


def _check_type(value: Any, name: str, kinds: tuple[type, ...], rule: str) -> None:
    if value is not None and (not isinstance(value, kinds) or isinstance(value, bool)):
        raise SyncvizError(
            f"{name} ({value!r:.60}) must be {rule}",
            fix=f"pass {name} as {rule} or None",
        )


class _RecordingMode(TorchFunctionMode):
    """The function mode that hands every torch call to its tracer."""

    def __init__(self, tracer: Tracer) -> None:
        super().__init__()
        self._tracer = tracer

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        # torch pops this mode while we run, so func and our bookkeeping are not re-traced.
        return self._tracer._on_call(func, args, kwargs or {})


class Tracer:
    """Records tensor ops and collectives into a :class:`SyncTrace` (``tracer.trace``).

    Use it as a context manager; ``track`` marks source tensors, ``scope`` groups
    what follows under a parameter, rank and phase; ``trace_call`` and ``traced``
    run any callable or object's methods in a scope of their own.

    Ops are captured cheaply while they run and written out as OpRecords when
    their scope closes, when the tracer exits, or when ``trace`` is read.

    >>> import torch
    >>> with Tracer(metadata={"case": "demo"}) as tr:
    ...     halves = tr.track(torch.zeros(4, 2), "shard").chunk(2)
    >>> [op.op for op in tr.trace.params[0].ops], tr.trace.metadata
    (['chunk'], {'case': 'demo'})
    """

    def __init__(self, metadata: dict[str, Any] | None = None) -> None:
        self._trace = SyncTrace(metadata=dict(metadata or {}))
        # id(tensor) -> (ref, weakref); the weakref tells a live tensor from a
        # new one that reuses a freed tensor's id, without keeping tensors alive.
        self._refs: dict[int, tuple[int, weakref.ref[torch.Tensor]]] = {}
        self._next_ref = 0
        self._scopes: list[ParamTrace] = []
        self._marked: list[bool] = []  # per open scope: was its output set explicitly
        self._unscoped: ParamTrace | None = None
        # Captured ops as (scope, PendingOp fields); a plain tuple is cheapest to make.
        self._pending: list[tuple[ParamTrace, tuple[Any, ...]]] = []
        self._mode = _RecordingMode(self)
        self._active = 0

    @property
    def trace(self) -> SyncTrace:
        """The recording so far (ops captured but not yet written out are written first).

        >>> Tracer(metadata={"run": 1}).trace.metadata
        {'run': 1}
        """
        self._flush()
        return self._trace

    # --- activation -------------------------------------------------------------

    def __enter__(self) -> Tracer:
        self._activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self._deactivate()
        self._flush()

    def _activate(self) -> None:
        # Entering the same mode twice would record every op twice; count instead.
        if self._active == 0:
            self._mode.__enter__()
        self._active += 1

    def _deactivate(self) -> None:
        self._active -= 1
        if self._active == 0:
            self._mode.__exit__(None, None, None)

    # --- tensor refs --------------------------------------------------------------

    def ref_of(self, tensor: torch.Tensor) -> int | None:
        """The current ref id of ``tensor``, or ``None`` if it is not traced.

        >>> tr = Tracer()
        >>> x = tr.track(torch.ones(2), "x")
        >>> tr.ref_of(x), tr.ref_of(torch.ones(2))
        (0, None)
        """
        entry = self._refs.get(id(tensor))
        if entry is not None and entry[1]() is tensor:
            return entry[0]
        return None

    def is_traced(self, tensor: torch.Tensor) -> bool:
        """Whether ops on ``tensor`` are recorded.

        >>> Tracer().is_traced(torch.ones(1))
        False
        """
        return self.ref_of(tensor) is not None

    def _new_ref(self, tensor: torch.Tensor) -> int:
        ref = self._next_ref
        self._next_ref += 1
        self._refs[id(tensor)] = (ref, weakref.ref(tensor))
        return ref

    def _add_source(self, tensor: torch.Tensor, label: str | None) -> int:
        # Read shape and dtype before the tensor is registered: while recording is on,
        # these reads pass through the tracer, and an unknown tensor is its cheap path.
        shape, dtype = list(tensor.shape), dtype_name(tensor.dtype)
        ref = self._new_ref(tensor)
        scope = self._scopes[-1] if self._scopes else None
        self._trace.sources.append(
            SourceRecord(
                ref=ref,
                label=label,
                shape=shape,
                dtype=dtype,
                param=scope.param if scope else None,
                rank=scope.rank if scope else None,
            )
        )
        return ref

    def _ref_or_external(self, tensor: torch.Tensor) -> int:
        ref = self.ref_of(tensor)
        # A tensor that joins a traced op untracked becomes a source without a label.
        return self._add_source(tensor, None) if ref is None else ref

    def track(self, tensor: torch.Tensor, label: str) -> torch.Tensor:
        """Register ``tensor`` as a source named ``label`` and return it unchanged.

        Tracking a tensor again gives it a new ref under the new label.

        >>> tr = Tracer()
        >>> x = tr.track(torch.ones(2, 3), "q")
        >>> tr.trace.sources[0].label, tr.trace.sources[0].shape
        ('q', [2, 3])
        """
        if not isinstance(tensor, torch.Tensor):
            raise SyncvizError(
                f"track() tensor must be a torch.Tensor, got {type(tensor).__name__}",
                fix="pass the tensor to trace itself",
            )
        if not isinstance(label, str):
            raise SyncvizError(
                f"track() label must be a string, got {label!r:.60}",
                fix="name the source, e.g. 'src rank 0'",
            )
        self._add_source(tensor, label)
        return tensor

    # --- scopes -------------------------------------------------------------------

    def _current(self) -> ParamTrace:
        if self._scopes:
            return self._scopes[-1]
        if self._unscoped is None:
            # Ops recorded outside any scope share one ParamTrace with no param or rank.
            self._unscoped = ParamTrace()
            self._trace.params.append(self._unscoped)
        return self._unscoped

    @contextmanager
    def scope(
        self,
        param: str | None = None,
        rank: int | None = None,
        phase: str | None = None,
        call: str | None = None,
    ) -> Iterator[ParamTrace]:
        """Record what follows in a new :class:`ParamTrace`; also turns recording on.

        Fields left ``None`` are taken from the enclosing scope. Unless set with
        :meth:`mark_output`, the scope's output is the last recorded op's output.

        >>> tr = Tracer()
        >>> with tr.scope(param="w", rank=1, phase="regroup") as pt:
        ...     y = tr.track(torch.ones(2, 2), "src").t()
        >>> pt.param, pt.rank, pt.phase, pt.output_refs
        ('w', 1, 'regroup', [1])
        """
        _check_type(param, "scope param", (str,), "a string")
        _check_type(rank, "scope rank", (int,), "an integer")
        _check_type(phase, "scope phase", (str,), "a string")
        _check_type(call, "scope call", (str,), "a string")
        outer = self._scopes[-1] if self._scopes else None
        if outer is not None:
            param = outer.param if param is None else param
            rank = outer.rank if rank is None else rank
            phase = outer.phase if phase is None else phase
        record = ParamTrace(param=param, rank=rank, phase=phase, call=call)
        self._trace.params.append(record)
        self._scopes.append(record)
        self._marked.append(False)
        self._activate()
        try:
            yield record
        finally:
            self._deactivate()
            self._flush()
            self._scopes.pop()
            marked = self._marked.pop()
            if not marked and record.ops:
                record.output_refs = [t.ref for t in record.ops[-1].outputs]

    def mark_output(self, value: Any) -> None:
        """Set the current scope's output to the tensors in ``value`` (a tensor, or a
        list, tuple or dict of them). A tensor not derived from traced data gets a
        ref and a warning, so the result is always named.

        >>> tr = Tracer()
        >>> with tr.scope(param="w") as pt:
        ...     tr.mark_output(torch.zeros(1))
        >>> pt.output_refs, tr.trace.warnings
        ([0], ["param 'w' rank None phase None: output #0 is not derived from any traced tensor"])
        """
        self._flush()  # keeps trace.warnings in the order things happened
        scope = self._current()
        refs = []
        for tensor in _tensors_in(value):
            ref = self.ref_of(tensor)
            if ref is None:
                ref = self._add_source(tensor, None)
                self._trace.warnings.append(
                    f"{self._context(scope)}: output #{ref} is not derived from any traced tensor"
                )
            refs.append(ref)
        scope.output_refs = refs
        if self._scopes:
            self._marked[-1] = True

    def trace_call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Call ``fn(*args, **kwargs)`` in a scope named after it and return its result.

        The scope's ``call`` is ``fn``'s qualified name; its phase is ``fn``'s name
        and its param the first string argument (or ``name=``), unless an
        enclosing scope already set them. Its output is ``fn``'s return value.

        >>> def first_half(name, t):
        ...     return t[: t.shape[0] // 2]
        >>> tr = Tracer()
        >>> out = tr.trace_call(first_half, "w", tr.track(torch.ones(4), "src"))
        >>> pt = tr.trace.params[0]
        >>> pt.param, pt.phase, pt.call, [op.op for op in pt.ops], pt.output_refs
        ('w', 'first_half', 'first_half', ['getitem'], [1])
        """
        if not callable(fn):
            raise SyncvizError(
                f"trace_call() fn must be callable, got {type(fn).__name__}",
                fix="pass the function or bound method to run",
            )
        short = getattr(fn, "__name__", None) or type(fn).__name__
        call = getattr(fn, "__qualname__", None) or short
        return self._call_in_scope(fn, call, short, args, kwargs)

    def _call_in_scope(
        self,
        fn: Callable[..., T],
        call: str,
        short: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> T:
        outer = self._scopes[-1] if self._scopes else None
        param = None
        if outer is None or outer.param is None:
            # By convention a parameter's name is the first string argument (or name=).
            named = kwargs.get("name")
            if isinstance(named, str):
                param = named
            else:
                param = next((a for a in args if isinstance(a, str)), None)
        phase = short if outer is None or outer.phase is None else None
        with self.scope(param=param, phase=phase, call=call):
            result = fn(*args, **kwargs)
            self.mark_output(result)
        return result

    def traced(self, obj: T) -> T:
        """``obj`` seen through the tracer: each method call runs in its own scope
        (see :meth:`trace_call`); attributes read and write through to ``obj``.
        A plain function comes back as a traced function.

        >>> class Halver:
        ...     def split(self, name, t):
        ...         return t.chunk(2)
        >>> tr = Tracer()
        >>> parts = tr.traced(Halver()).split("w", tr.track(torch.ones(4), "src"))
        >>> pt = tr.trace.params[0]
        >>> pt.call, pt.phase, pt.output_refs
        ('Halver.split', 'split', [1, 2])
        """
        if isinstance(obj, TracedProxy):
            return obj
        if inspect.isroutine(obj):
            fn: Any = obj

            @functools.wraps(fn)
            def traced_fn(*args: Any, **kwargs: Any) -> Any:
                return self.trace_call(fn, *args, **kwargs)

            return traced_fn  # type: ignore[return-value]
        return TracedProxy(obj, self._call_in_scope)  # type: ignore[return-value]

    # --- collectives ----------------------------------------------------------------

    def record_collective(
        self,
        kind: str,
        group: str,
        ranks: Sequence[int],
        tensors: torch.Tensor | Sequence[torch.Tensor],
        src: int | None = None,
        dst: int | None = None,
        label: str | None = None,
        rank: int | None = None,
    ) -> CollectiveRecord:
        """Record one collective call (by the executor or collective backend).

        ``bytes`` is the sum of numel * element_size over ``tensors``. A tensor not
        yet traced gets a ref here, so later ops on a received buffer are recorded.
        ``rank`` defaults to the current scope's rank. Inside a scope the record
        goes to that scope; outside, to ``trace.collectives``.

        >>> tr = Tracer()
        >>> rec = tr.record_collective("broadcast", "tp", [0, 1], torch.zeros(4, 8), src=0)
        >>> rec.bytes, rec.tensors[0].shape, len(tr.trace.collectives)
        (128, [4, 8], 1)
        """
        for name, value, least, rule, fix in (  # the shortest string each may be
            (
                "kind",
                kind,
                1,
                "a non-empty string",
                "use e.g. 'broadcast', 'send', 'recv', 'all_gather' or 'all_to_all'",
            ),
            ("group", group, 0, "a string", "pass the group's name, e.g. 'tp' or 'ep'"),
        ):
            if not isinstance(value, str) or len(value) < least:
                raise SyncvizError(f"collective {name} ({value!r:.60}) must be {rule}", fix=fix)
        if isinstance(ranks, (str, bytes)) or not all(
            isinstance(r, int) and not isinstance(r, bool) for r in ranks
        ):
            raise SyncvizError(
                f"collective ranks ({ranks!r:.60}) must be a sequence of integers",
                fix="pass the global ranks of the group, e.g. [0, 1]",
            )
        for name, value in (("src", src), ("dst", dst), ("rank", rank)):
            _check_type(value, f"collective {name}", (int,), "an integer")
        _check_type(label, "collective label", (str,), "a string")
        tensor_list = [tensors] if isinstance(tensors, torch.Tensor) else list(tensors)
        if not all(isinstance(t, torch.Tensor) for t in tensor_list):
            raise SyncvizError(
                "collective tensors must be a tensor or a sequence of tensors",
                fix="pass the tensors the collective sent or received",
            )
        scope = self._scopes[-1] if self._scopes else None
        refs = []
        shapes: dict[tuple[torch.Size, torch.dtype], tuple[list[int], str]] = {}
        for t in tensor_list:
            ref = self.ref_of(t)
            # One shape list per distinct shape (records are read only): an all-gather over
            # 64 ranks lists 64 buffers of one shape.
            key = (t.shape, t.dtype)
            if key not in shapes:
                shapes[key] = (list(t.shape), dtype_name(t.dtype))
            shape, dtype = shapes[key]
            refs.append(TensorRef(self._new_ref(t) if ref is None else ref, shape, dtype))
        self._flush()  # ops before this collective take the lower indexes
        record = CollectiveRecord(
            index=0,
            kind=kind,
            group=group,
            ranks=list(ranks),
            rank=rank if rank is not None or scope is None else scope.rank,
            src=src,
            dst=dst,
            bytes=sum(t.numel() * t.element_size() for t in tensor_list),
            tensors=refs,
            label=label,
        )
        if scope is not None:
            record.index = len(scope.ops) + len(scope.collectives)
            scope.collectives.append(record)
        else:
            record.index = len(self._trace.collectives)
            self._trace.collectives.append(record)
        return record

    # --- op capture (the hot path) ----------------------------------------------------

    def _on_call(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        # Tensors sit at the top level, in a list (cat) or in an index tuple, and
        # at most one level deeper (a list inside an index tuple).
        found = []
        tensor_type, sequence_types = torch.Tensor, (list, tuple)
        for arg in (*args, *kwargs.values()) if kwargs else args:
            if isinstance(arg, tensor_type):
                found.append(arg)
            elif isinstance(arg, sequence_types):
                for item in arg:
                    if isinstance(item, tensor_type):
                        found.append(item)
                    elif isinstance(item, sequence_types):
                        found += [t for t in item if isinstance(t, tensor_type)]
        refs = self._refs
        for tensor in found:
            entry = refs.get(id(tensor))
            if entry is not None and entry[1]() is tensor:
                break
        else:
            return func(*args, **kwargs)  # nothing traced: the cheap path

        info = op_info(func)
        if info.in_place:
            # An in-place op may change its target's shape (t_, unsqueeze_): read first.
            inputs = self._snapshots(found)
            result = func(*args, **kwargs)
            outputs = _tensors_in(result)
        else:
            result = func(*args, **kwargs)
            outputs = _tensors_in(result)
            if not outputs:
                return result  # a query such as .shape or .numel(): not an op
            inputs = self._snapshots(found)
        self._capture(info, args, kwargs, found, inputs, outputs)
        return result

    def _capture(
        self,
        info: OpInfo,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        found: list[torch.Tensor],
        inputs: list[Snapshot],
        outputs: list[torch.Tensor],
    ) -> None:
        """Queue what build_record will need; no rendering or naming happens here."""
        direct = 0  # tensors passed directly or as a list of tensors (cat)
        kept_args = []
        for arg in args:
            if type(arg) is int:  # the common case (sizes, dims), decided at once
                kept_args.append(arg)
                continue
            size = _tensor_arg_size(arg)
            direct += size
            if not size:
                kept_args.append(arg)
        kept_kwargs = {}
        for key, arg in kwargs.items():
            size = _tensor_arg_size(arg)
            direct += size
            if not size:
                kept_kwargs[key] = arg
        # Lists may be changed by the caller later, and tensors nested in arguments
        # must not be kept alive: freeze those arguments now, keep the rest as passed.
        nested = direct < len(found)
        freeze = self._ref_or_external
        args_out = tuple(
            freeze_arg(a, freeze) if nested or type(a) is list else a for a in kept_args
        )
        kwargs_out = {
            k: freeze_arg(a, freeze) if nested or type(a) is list else a
            for k, a in kept_kwargs.items()
        }

        refs = self._refs
        out_snaps: list[Snapshot] = []
        if info.in_place or "out" in kwargs:
            written = self._written(args, kwargs)
            outputs = outputs + [w for w in written if not any(w is o for o in outputs)]
        else:
            written = []
        for tensor in outputs:
            ref = None
            if not written or not any(tensor is w for w in written):
                entry = refs.get(id(tensor))
                if entry is not None and entry[1]() is tensor:
                    ref = entry[0]
            if ref is None:
                ref = self._new_ref(tensor)
            out_snaps.append((ref, tensor.shape, tensor.dtype))

        sources = (0,) if info.sources == "first" else source_positions(info, args, kwargs, found)
        notes = capture_notes(info, args) if info.name == "setitem" else ()
        scope = self._scopes[-1] if self._scopes else self._current()
        self._pending.append(
            (scope, (info, inputs, sources, args_out, kwargs_out, out_snaps, notes))
        )

    def _snapshots(self, found: list[torch.Tensor]) -> list[Snapshot]:
        refs = self._refs
        snaps = []
        for tensor in found:
            entry = refs.get(id(tensor))
            if entry is not None and entry[1]() is tensor:
                ref = entry[0]
            else:
                ref = self._add_source(tensor, None)
            snaps.append((ref, tensor.shape, tensor.dtype))
        return snaps

    @staticmethod
    def _written(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[torch.Tensor]:
        """Tensors an op wrote in place: the first argument of an in-place op, an
        out= buffer, and the base of a written view (its contents changed too).
        Each gets a new ref."""
        written: list[torch.Tensor] = []
        candidates = [args[0]] if args and isinstance(args[0], torch.Tensor) else []
        candidates += _tensors_in(kwargs.get("out"))
        for tensor in candidates:
            for item in (tensor, tensor._base):
                if item is not None and not any(item is w for w in written):
                    written.append(item)
        return written

    def _flush(self) -> None:
        """Write captured ops out as OpRecords, in the order they ran."""
        pending, self._pending = self._pending, []
        last: tuple[Any, ...] | None = None  # the previous op but for its output refs
        record = None
        for scope, op in pending:
            index = len(scope.ops) + len(scope.collectives)
            same = _same_but_refs(op)
            if record is not None and same == last:
                record = _like(record, op, index)
            else:
                record = build_record(op, index=index)
                last = same
            scope.ops.append(record)
            for text in record.warnings:
                self._trace.warnings.append(
                    f"{self._context(scope)} op {record.index} ({record.op}): {text}"
                )

    @staticmethod
    def _context(scope: ParamTrace) -> str:
        return f"param {scope.param!r} rank {scope.rank} phase {scope.phase!r}"


def _same_but_refs(op: tuple[Any, ...]) -> tuple[Any, ...]:
    """What a captured op is made of except its index and output refs: ops equal in this
    build records equal in everything else (a synchronizer's 64 ``empty_like`` buffers of
    one all-gather)."""
    info, snaps_in, sources, args, kwargs, snaps_out, notes = op
    return (info, snaps_in, sources, args, kwargs, [s[1:] for s in snaps_out], notes)


def _like(record: OpRecord, op: tuple[Any, ...], index: int) -> OpRecord:
    """The record of ``op``, equal to ``record`` but for index and output refs. Records are
    read, never changed, so its lists are shared: a whole-model trace holds hundreds of
    thousands of such buffers, and each would otherwise cost a dozen objects."""
    outputs = [
        TensorRef(snap[0], ref.shape, ref.dtype)
        for snap, ref in zip(op[5], record.outputs, strict=True)
    ]
    return OpRecord(
        index,
        record.op,
        record.inputs,
        record.args,
        record.kwargs,
        outputs,
        record.derived_from,
        record.warnings,
    )


def _tensor_arg_size(value: Any) -> int:
    """How many tensors an argument passes directly: 1 for a tensor, n for a list of n
    tensors (cat), 0 for anything else (kept as a non-tensor argument)."""
    if isinstance(value, torch.Tensor):
        return 1
    if (
        isinstance(value, (list, tuple))
        and value
        and isinstance(value[0], torch.Tensor)
        and all(isinstance(v, torch.Tensor) for v in value)
    ):
        return len(value)
    return 0
