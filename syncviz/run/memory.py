"""How much memory a materialized run needs, estimated before anything is allocated.

Symbolic provenance costs what a map's structure costs; materialized ids (float64)
or random weights (float32) cost every element several times over: the trainer
shards, the regrouped buffers and staging copies, the vLLM tensors and, for random
weights, each parameter's whole tensor. A run that would not fit is refused with
the fix rather than killed.

>>> from syncviz import Parallel, preset
>>> need = materialized_bytes(preset("llama3-8b"), Parallel(tp=2), Parallel(tp=4), [0], "ids")
>>> round(need / 2**30, 1)
8.1
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable

from syncviz.errors import SyncvizError
from syncviz.oracle import model_layout
from syncviz.parallel import Parallel
from syncviz.spec import ModelSpec

# Copies of each destination element alive at once in a materialized run: the
# regrouped buffer, the coalesced bucket, the staging copy and the vLLM tensor.
_COPIES = 4


def materialized_bytes(
    spec: ModelSpec, src: Parallel, dst: Parallel, layers: Iterable[int] | None, values: str
) -> int:
    """Estimated peak bytes of a materialized run of ``spec`` (all ranks of one process)."""
    layout = model_layout(spec, src, dst, layers=None if layers is None else list(layers))
    itemsize = 8 if values == "ids" else 4
    total = 0
    for param in layout:
        total += sum(math.prod(s.index.shape) for s in param.src)
        total += _COPIES * sum(math.prod(t.index.shape) for t in param.dst)
        if values == "random":
            total += math.prod(param.global_shape)
    return total * itemsize


def available_bytes() -> int:
    """Memory the system can still give this process (MemAvailable), or a large number."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def refuse_if_too_big(
    spec: ModelSpec, src: Parallel, dst: Parallel, layers: Iterable[int] | None, values: str
) -> None:
    """Raise :class:`SyncvizError` (with the fix) when a materialized run would not fit."""
    need, have = materialized_bytes(spec, src, dst, layers, values), available_bytes()
    if need > have:
        raise SyncvizError(
            f"a materialized run of {spec.name} needs about {need / 2**30:.1f} GiB"
            f" ({have / 2**30:.1f} GiB available)",
            fix="check at real sizes with --values ids on the in-process executor (symbolic"
            " ids, no per-element memory), or use --scaled, or fewer --layers",
        )
