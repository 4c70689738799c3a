"""The SyncTrace data model: plain, JSON-ready records of tensor ops and collectives.

Nothing here holds a torch object, so a trace can be saved, diffed, loaded in
another process and drawn without torch tensors around.

>>> from syncviz.trace import OpRecord, ParamTrace, SyncTrace, TensorRef
>>> op = OpRecord(index=0, op="view", inputs=[TensorRef(0, [8, 4], "float32")],
...               args=[[4, 8]], outputs=[TensorRef(1, [4, 8], "float32")], derived_from=[0])
>>> op.summary()
'view(#0[8, 4] float32, [4, 8]) -> #1[4, 8] float32'
>>> trace = SyncTrace(params=[ParamTrace(param="w", rank=0, phase="regroup", ops=[op])])
>>> SyncTrace.from_json(trace.to_json()) == trace
True
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from syncviz.trace.json_io import read_trace_fields, trace_fields, trace_to_json
from syncviz.trace.records import CollectiveRecord, JSONValue, ParamTrace, SourceRecord


@dataclass
class SyncTrace:
    """A whole recording: metadata, sources, per-parameter traces, collectives, warnings.

    ``collectives`` here are those recorded outside any scope; ``warnings`` repeat
    every op warning with its context, so one look tells whether ids stayed valid.

    >>> trace = SyncTrace(metadata={"model": "llama3-8b", "src_tp": 2})
    >>> trace.to_json().splitlines()[0]
    '{'
    >>> SyncTrace.from_json(trace.to_json()).metadata["src_tp"]
    2
    """

    metadata: dict[str, JSONValue] = field(default_factory=dict)
    sources: list[SourceRecord] = field(default_factory=list)
    params: list[ParamTrace] = field(default_factory=list)
    collectives: list[CollectiveRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        """JSON text with a schema version and sorted keys (two equal traces give equal text)."""
        return trace_to_json(self)

    @classmethod
    def from_json(cls, text: str) -> SyncTrace:
        """Parse and validate JSON text; a bad document raises SyncvizError naming the field."""
        return cls(**trace_fields(text))

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_json` to ``path`` (UTF-8, whole or not at all); :meth:`load` reads it.

        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "trace.json"
        >>> SyncTrace(warnings=["w"]).save(path)
        >>> SyncTrace.load(path).warnings
        ['w']
        """
        from syncviz.files import replacing

        text = self.to_json()  # before the file is touched: a failure leaves it as it was
        with replacing(Path(path)) as tmp:
            tmp.write_text(text, encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> SyncTrace:
        """Read a file written by :meth:`save`; only JSON is parsed, nothing is executed.

        Bounded and strict (see :mod:`syncviz.trace.json_io`): any bad file raises
        SyncvizError.
        """
        return cls(**read_trace_fields(path))

    def find(
        self, param: str | None = None, rank: int | None = None, phase: str | None = None
    ) -> list[ParamTrace]:
        """The parameter traces matching every given field (``None`` matches anything).

        >>> trace = SyncTrace(params=[ParamTrace(param="w", rank=0), ParamTrace(param="w", rank=1)])
        >>> [pt.rank for pt in trace.find(param="w", rank=1)]
        [1]
        """
        return [
            pt
            for pt in self.params
            if (param is None or pt.param == param)
            and (rank is None or pt.rank == rank)
            and (phase is None or pt.phase == phase)
        ]

    def source(self, ref: int) -> SourceRecord | None:
        """The source record of ``ref``, or ``None`` if the ref came from an op or collective.

        >>> SyncTrace(sources=[SourceRecord(2, "src", [4], "int64")]).source(2).label
        'src'
        """
        for rec in self.sources:
            if rec.ref == ref:
                return rec
        return None

    def check_ranks(self, world_size: int, where: str = "") -> None:
        """Refuse a rank outside ``0 .. world_size - 1`` anywhere in the trace (who recorded
        a source or a step, who took part in a collective), naming its field: the step
        view looks each one up among the run's ranks.

        >>> SyncTrace(params=[ParamTrace(param="w", rank=99)]).check_ranks(8, " (--dst-tp 8)")
        Traceback (most recent call last):
        ...
        syncviz.errors.SyncvizError: trace field params[0].rank (99) is no rank of this run: ...
        """
        from syncviz.errors import SyncvizError

        for path, rank in self._ranks():
            if not 0 <= rank < world_size:
                raise SyncvizError(
                    f"trace field {path} ({rank}) is no rank of this run: its ranks are"
                    f" 0-{world_size - 1}{where}",
                    fix="pass the traces recorded on this run's ranks (record(rank=r) with r"
                    " the rank's number in the run)",
                    field=path,
                )

    def _ranks(self) -> Iterator[tuple[str, int]]:
        for i, s in enumerate(self.sources):
            if s.rank is not None:
                yield f"sources[{i}].rank", s.rank
        for i, pt in enumerate(self.params):
            if pt.rank is not None:
                yield f"params[{i}].rank", pt.rank
            for j, c in enumerate(pt.collectives):
                yield from _collective_ranks(c, f"params[{i}].collectives[{j}]")
        for i, c in enumerate(self.collectives):
            yield from _collective_ranks(c, f"collectives[{i}]")

    def summary(self) -> str:
        """Readable multi-line text of the whole trace (what tests and diffs look at)."""
        lines = [f"metadata: {self.metadata}"]
        lines += [f"source #{s.ref} {s.label!r} {s.shape} {s.dtype}" for s in self.sources]
        lines += [pt.summary() for pt in self.params]
        lines += [c.summary() for c in self.collectives]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _collective_ranks(c: CollectiveRecord, path: str) -> Iterator[tuple[str, int]]:
    for name in ("rank", "src", "dst"):
        value = getattr(c, name)
        if value is not None:
            yield f"{path}.{name}", value
    for k, rank in enumerate(c.ranks):
        yield f"{path}.ranks[{k}]", rank
