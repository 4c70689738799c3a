"""Record your own sync: the tracer around real tensors on one rank, saved as SyncTrace JSON.

Inside ``with record(rank=r, out_dir=...) as tr``, ops on tensors you
``tr.track`` are recorded (shapes, dtypes and arguments, never values), and so
are ``torch.distributed`` collectives (kind, group, ranks, shapes, bytes).
On exit the trace is written to ``out_dir/rank{r}.json``; ``syncviz diagnose
--trace out_dir`` adds the steps to the report's step view.

>>> import tempfile, torch
>>> out = tempfile.mkdtemp()
>>> with record(rank=0, out_dir=out) as tr:
...     with tr.scope(param="model.layers.0.self_attn.o_proj.weight"):
...         local = tr.track(torch.ones(8, 4), "o_proj shard")[:, 0:2].contiguous()
>>> from syncviz.trace import SyncTrace
>>> trace = SyncTrace.load(f"{out}/rank0.json")
>>> [op.op for pt in trace.params for op in pt.ops], trace.metadata["rank"]
(['getitem', 'contiguous'], 0)
"""

from __future__ import annotations

import inspect
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from syncviz.errors import SyncvizError
from syncviz.trace.tracer import Tracer

COLLECTIVES = (
    "broadcast",
    "all_gather",
    "all_gather_into_tensor",
    "all_to_all",
    "all_to_all_single",
    "all_reduce",
    "send",
    "recv",
    "isend",
    "irecv",
    "scatter",
    "gather",
)
"""The ``torch.distributed`` functions recorded while a record() is open."""


@contextmanager
def record(
    rank: int,
    out_dir: str | Path,
    *,
    metadata: dict[str, Any] | None = None,
    collectives: bool = True,
) -> Iterator[Tracer]:
    """Trace what runs inside on rank ``rank``; write ``out_dir/rank{rank}.json`` at the end.

    Yields the :class:`~syncviz.trace.Tracer`: ``tr.track(tensor, label)`` marks
    a source, ``tr.scope(param=name)`` names the parameter that follows (use the
    vLLM name, so the report can show the steps), ``tr.traced(fn)`` wraps a
    function. The trace is written even when the block raises.
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise SyncvizError(f"rank ({rank!r}) must be a non-negative integer", fix="pass rank=0")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    tracer = Tracer(metadata={"rank": rank, **(metadata or {})})
    undo = _patch_collectives(tracer, rank) if collectives else []
    try:
        with tracer, tracer.scope(rank=rank):
            yield tracer
    finally:
        for restore in undo:
            restore()
        tracer.trace.save(root / f"rank{rank}.json")


def _patch_collectives(tracer: Tracer, rank: int) -> list[Callable[[], None]]:
    import torch.distributed as dist

    if not dist.is_available():
        return []
    undo = []
    for name in COLLECTIVES:
        original = getattr(dist, name, None)
        if original is None:
            continue
        setattr(dist, name, _recording(tracer, rank, name, original))
        undo.append(lambda name=name, original=original: setattr(dist, name, original))
    return undo


def _recording(tracer: Tracer, rank: int, kind: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(fn)

    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind_partial(*args, **kwargs).arguments
        except TypeError:
            return fn(*args, **kwargs)  # let torch report the bad call itself
        tensors = []
        for value in bound.values():
            if isinstance(value, torch.Tensor):
                tensors.append(value)
            elif isinstance(value, (list, tuple)):
                tensors += [v for v in value if isinstance(v, torch.Tensor)]
        group = bound.get("group")
        ranks, group_name = _group(group, rank)
        src, dst = bound.get("src"), bound.get("dst")
        tracer.record_collective(
            kind,
            group_name,
            ranks,
            tensors,
            src=src if isinstance(src, int) else None,
            dst=dst if isinstance(dst, int) else None,
            rank=rank,
        )
        return fn(*args, **kwargs)

    call.__wrapped__ = fn  # type: ignore[attr-defined]
    return call


def _group(group: Any, rank: int) -> tuple[list[int], str]:
    import torch.distributed as dist

    if not dist.is_initialized():
        return [rank], "world"
    pg = group if group is not None else dist.group.WORLD
    name = getattr(pg, "group_name", None) or ("world" if group is None else str(pg))
    return list(dist.get_process_group_ranks(pg)), name


class _CallableModule(types.ModuleType):
    """``syncviz.record(...)`` works whether it finds this module or the function."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return record(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
