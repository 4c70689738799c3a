"""Memory a materialized sync will need, estimated from the plan before anything is allocated.

A run holds every trainer shard and every vLLM tensor as real tensors (float64
provenance ids, or float32 weights), plus the copies the flow makes of them.
:func:`check_memory` refuses a plan whose estimate exceeds what the machine has,
with the fix, instead of letting the allocator or the OOM killer end the run.

>>> from syncviz import Parallel, preset
>>> from syncviz.run.plan import build_plan
>>> plan = build_plan(preset("llama3-8b").scaled(), Parallel(tp=1), Parallel(tp=2), layers=[0])
>>> 0 < estimate_bytes(plan) < 2**30
True
>>> check_memory(plan, available=1000)
Traceback (most recent call last):
...
syncviz.errors.SyncvizError: this run needs ~... of provenance ids, the machine has 1000 B ...
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

from syncviz.errors import SyncvizError
from syncviz.run.plan import SyncPlan, holds

# Live copies of every element at the peak: the rank's state, the copy setup hands
# back to the caller, the flow's staging buffers, and the checker's expected tensor.
COPIES = 4
RANDOM_LIMIT = 2**23  # distinct float32 values global_weights can make exactly


def estimate_bytes(plan: SyncPlan) -> int:
    """Bytes a run of ``plan`` needs at its peak (an estimate, on the high side)."""
    per_element = 8 if plan.values == "ids" else 4
    elements = sum(math.prod(s) for shapes in plan.dst_shapes.values() for s in shapes.values())
    largest = 0
    for param in plan.layout:
        largest = max(largest, math.prod(param.global_shape))
        for role in plan.roles:
            if role.side == "src":
                elements += sum(s.index.numel for s in param.src if holds(role, s))
    extra = 0 if plan.values == "ids" else 12 * largest  # one global weight being drawn
    return COPIES * per_element * elements + extra


def available_bytes() -> int | None:
    """Memory this process may still use: MemAvailable, capped by a cgroup limit."""
    found: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if limit != "max":
            found.append(max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    if not found and hasattr(os, "sysconf"):
        with contextlib.suppress(ValueError, OSError):
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return min(found) if found else None


def check_memory(plan: SyncPlan, available: int | None = None) -> int:
    """Refuse ``plan`` when its estimate exceeds ``available`` (default: what is free).

    Returns the estimate. Random weights also need every parameter within the
    2**23 elements they can be exact for; that is checked here, before allocating.
    """
    if plan.values == "random":
        for param in plan.layout:
            numel = math.prod(param.global_shape)
            if numel > RANDOM_LIMIT:
                raise SyncvizError(
                    f"--values random needs {param.key} to have at most 2**23 elements,"
                    f" it has {numel}",
                    fix="use --values ids, or --scaled",
                )
    need = estimate_bytes(plan)
    have = available_bytes() if available is None else available
    if have is not None and need > have:
        what = "provenance ids" if plan.values == "ids" else "float32 weights"
        raise SyncvizError(
            f"this run needs ~{size_words(need)} of {what},"
            f" the machine has {size_words(have)} available",
            fix="use --scaled, or fewer layers with --layers",
        )
    return need


def size_words(n: int) -> str:
    """Bytes in words.

    >>> size_words(55 * 2**30), size_words(1000)
    ('55 GiB', '1000 B')
    """
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.0f} {unit}"
    return f"{n} B"
