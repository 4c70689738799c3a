"""Instrumentation: record the tensor ops and collectives of any synchronizer.

This layer knows nothing of models or synchronizers; it sees torch calls on the
tensors it was told to track, and collectives its callers report.

>>> import torch
>>> from syncviz.trace import SyncTrace, Tracer
>>> with Tracer() as tr, tr.scope(param="w", rank=0, phase="regroup"):
...     out = tr.track(torch.ones(4, 8), "src")[:, 0:4].contiguous()
>>> [op.op for op in tr.trace.params[0].ops]
['getitem', 'contiguous']
>>> SyncTrace.from_json(tr.trace.to_json()) == tr.trace
True
"""

from syncviz.trace.model import SyncTrace
from syncviz.trace.records import CollectiveRecord, OpRecord, ParamTrace, SourceRecord, TensorRef


def __getattr__(name: str):
    # The tracer imports torch; the records and the bounded JSON reader (json_io, used
    # to read configs) do not, so `syncviz presets` and `--help` stay torch-free.
    if name == "Tracer":
        from syncviz.trace.tracer import Tracer

        return Tracer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CollectiveRecord",
    "OpRecord",
    "ParamTrace",
    "SourceRecord",
    "SyncTrace",
    "TensorRef",
    "Tracer",
]
