"""The records a SyncTrace is made of: plain, JSON-ready data of tensor ops and collectives,
and the schema name and version of a saved trace. Below both the trace
(:mod:`syncviz.trace.model`) and its JSON reader (:mod:`syncviz.trace.json_io`).

>>> OpRecord(index=0, op="view", inputs=[TensorRef(0, [8, 4], "float32")],
...          args=[[4, 8]], outputs=[TensorRef(1, [4, 8], "float32")], derived_from=[0]).summary()
'view(#0[8, 4] float32, [4, 8]) -> #1[4, 8] float32'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

# A value that json.dumps writes and json.loads reads back equal. Union, not "|":
# this alias is evaluated at run time and "|" cannot join string forward references.
JSONValue = Union[None, bool, int, float, str, list["JSONValue"], dict[str, "JSONValue"]]  # noqa: UP007

SCHEMA_NAME = "syncviz.trace"
SCHEMA_VERSION = 1


@dataclass
class TensorRef:
    """One traced tensor as seen at one moment: its ref id, shape and dtype name.

    >>> TensorRef(3, [4, 8], "bfloat16").summary()
    '#3[4, 8] bfloat16'
    """

    ref: int
    shape: list[int]
    dtype: str

    def summary(self) -> str:
        """Short text form, ``#ref[shape] dtype``."""
        return f"#{self.ref}{self.shape} {self.dtype}"


@dataclass
class SourceRecord:
    """Where a ref starts: a tensor registered with ``Tracer.track`` (label set) or a
    tensor that joined a traced op without being tracked first (label ``None``).

    >>> SourceRecord(ref=0, label="src", shape=[4, 8], dtype="float64", param="w", rank=1).label
    'src'
    """

    ref: int
    label: str | None
    shape: list[int]
    dtype: str
    param: str | None = None
    rank: int | None = None


@dataclass
class OpRecord:
    """One tensor operation whose inputs included a traced tensor.

    ``args`` and ``kwargs`` hold the non-tensor arguments (tensors are in ``inputs``;
    a tensor nested in an argument, e.g. an index tensor, shows as ``"#ref"``).
    Slices are written ``[start, stop, step]``, dtypes by name, ``...`` as ``"..."``.
    ``derived_from`` lists the input refs whose values the outputs carry (index
    tensors are inputs but not sources). A tensor written in place (``copy_``,
    ``setitem``, an ``out=`` buffer) appears among the outputs under a new ref,
    and so does the base of a written view, whose contents changed too.

    >>> OpRecord(index=2, op="cat", inputs=[TensorRef(1, [4, 4], "float32")] * 2,
    ...          kwargs={"dim": 0}, outputs=[TensorRef(3, [8, 4], "float32")]).summary()
    'cat(#1[4, 4] float32, #1[4, 4] float32, dim=0) -> #3[8, 4] float32'
    """

    index: int
    op: str
    inputs: list[TensorRef] = field(default_factory=list)
    args: list[JSONValue] = field(default_factory=list)
    kwargs: dict[str, JSONValue] = field(default_factory=dict)
    outputs: list[TensorRef] = field(default_factory=list)
    derived_from: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: ``op(inputs, args, key=value) -> outputs``."""
        parts = [t.summary() for t in self.inputs]
        parts += [repr(a) for a in self.args]
        parts += [f"{k}={v!r}" for k, v in self.kwargs.items()]
        outs = ", ".join(t.summary() for t in self.outputs) or "None"
        return f"{self.op}({', '.join(parts)}) -> {outs}"


@dataclass
class CollectiveRecord:
    """One collective (or point-to-point) call, as reported by the caller.

    ``rank`` is the rank that made the call; ``src``/``dst`` are set for rooted
    and point-to-point kinds. ``label`` is free text naming the blocks moved.

    >>> rec = CollectiveRecord(index=0, kind="broadcast", group="tp", ranks=[0, 1], src=0,
    ...                        bytes=128, tensors=[TensorRef(5, [4, 8], "float32")])
    >>> rec.summary()
    'broadcast group=tp ranks=[0, 1] src=0 128 B #5[4, 8] float32'
    """

    index: int
    kind: str
    group: str
    ranks: list[int]
    rank: int | None = None
    src: int | None = None
    dst: int | None = None
    bytes: int = 0
    tensors: list[TensorRef] = field(default_factory=list)
    label: str | None = None

    def summary(self) -> str:
        """One line naming kind, group, ranks, src/dst, bytes and tensors."""
        text = f"{self.kind} group={self.group} ranks={self.ranks}"
        if self.rank is not None:
            text += f" rank={self.rank}"
        if self.src is not None:
            text += f" src={self.src}"
        if self.dst is not None:
            text += f" dst={self.dst}"
        text += f" {self.bytes} B " + ", ".join(t.summary() for t in self.tensors)
        if self.label:
            text += f" ({self.label})"
        return text


@dataclass
class ParamTrace:
    """What happened to one parameter on one rank in one phase (one tracer scope).

    ``index`` of ops and collectives share one counter, so their relative order is
    kept. ``call`` names the traced function, if the scope came from one.
    ``output_refs`` are the refs of the scope's result.

    >>> pt = ParamTrace(param="w", rank=0, phase="regroup", output_refs=[4])
    >>> pt.output_ref
    4
    """

    param: str | None = None
    rank: int | None = None
    phase: str | None = None
    call: str | None = None
    ops: list[OpRecord] = field(default_factory=list)
    collectives: list[CollectiveRecord] = field(default_factory=list)
    output_refs: list[int] = field(default_factory=list)

    @property
    def output_ref(self) -> int | None:
        """The single output ref, or ``None`` when there is none or more than one."""
        return self.output_refs[0] if len(self.output_refs) == 1 else None

    def summary(self) -> str:
        """Header line plus one line per op and collective, in recorded order."""
        head = f"param={self.param} rank={self.rank} phase={self.phase}"
        if self.call:
            head += f" call={self.call}"
        events = [(op.index, op.summary()) for op in self.ops]
        events += [(c.index, c.summary()) for c in self.collectives]
        lines = [head] + [f"  {i}: {text}" for i, text in sorted(events)]
        lines.append(f"  -> {', '.join(f'#{r}' for r in self.output_refs) or 'None'}")
        return "\n".join(lines)
