"""Bytes per second of a full sync on Ray, in process, and of one memcpy of the same bytes.

Run from the repository root: ``PYTHONPATH=. python benchmarks/bench_ray.py``
(``--quick`` for a smoke run); the output names the syncviz it imported (the
Ray actors inherit ``PYTHONPATH``).

For each case the three are timed side by side, in rotating order, ``--reps``
times; the table gives medians and ratios from this one run.

- bytes: the total bytes of all destination (vLLM) tensors. The stage-1 +
  stage-2 broadcast payloads (from one traced in-process run, sender side)
  are shown beside it: regrouped buffers carry the chunks of other ranks too.
- in process: ``run_sync(executor="inprocess", trace=False)``.
- Ray: ``run_sync(world=...)`` on one ``RayWorld`` made once per case inside one
  ``ray_session()`` (one for all cases), so Ray and actor start-up are excluded
  (shown apart).
  ``run_sync`` still creates the plan's process groups on every call; their
  share of the time is shown. Each run also ships every rank's tensors to the
  driver (before and after), as ``run_sync`` returns them.
- memcpy: ``dst.copy_(src)`` of one float64 tensor holding the same bytes.

>>> payload_bytes(None)
0
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import syncviz
from syncviz import Parallel, preset
from syncviz.check import check
from syncviz.run.inprocess import run_sync
from syncviz.run.plan import build_plan
from syncviz.run.ray_cluster import ray_session
from syncviz.run.ray_world import RayWorld
from syncviz.run.result import SyncResult
from syncviz.trace.model import SyncTrace

# (preset, kind, src tp, dst tp, head_dim of the scaled copy): the default scaled copies
# (head_dim 4) are small, so one larger dense copy shows the per-byte share of the cost.
CASES = [
    ("qwen2-7b", "dense", 2, 4, 4),
    ("qwen2-57b-a14b", "MoE", 2, 4, 4),
    ("qwen2-7b", "dense", 2, 4, 16),
]


class TimedWorld:
    """A world that passes everything through and adds up the time spent creating groups."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.group_seconds = 0.0

    def new_group(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.inner.new_group(*args, **kwargs)
        finally:
            self.group_seconds += time.perf_counter() - start

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def destination_bytes(result: SyncResult) -> int:
    """Bytes of every tensor every vLLM rank holds."""
    return sum(
        t.numel() * t.element_size() for ts in result.dst_tensors.values() for t in ts.values()
    )


def payload_bytes(trace: SyncTrace | None) -> int:
    """Bytes the stage-1 and stage-2 broadcasts carried, counted once (at the sender)."""
    if trace is None:
        return 0
    return sum(
        c.bytes
        for c in trace.collectives
        if c.kind == "broadcast" and c.rank == c.src and c.group.startswith(("stage1", "stage2"))
    )


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def memcpy(nbytes: int) -> Callable[[], None]:
    """One copy_ of ``nbytes`` bytes between two float64 tensors allocated up front."""
    source = torch.rand(max(nbytes // 8, 1), dtype=torch.float64)
    target = torch.empty_like(source)
    return lambda: target.copy_(source)


def run_case(
    name: str, s: int, d: int, head_dim: int, synchronizer: str, reps: int
) -> dict[str, Any]:
    """Median seconds of in-process sync, Ray sync and memcpy, plus what they moved."""
    src, dst = Parallel(tp=s), Parallel(tp=d)
    spec = preset(name).scaled(src, dst, target_head_dim=head_dim)
    sync = lambda **kw: run_sync(spec, src, dst, synchronizer=synchronizer, trace=False, **kw)  # noqa: E731

    traced = run_sync(spec, src, dst, synchronizer=synchronizer)
    report = check(traced, synchronizer)
    nbytes, payload = destination_bytes(traced), payload_bytes(traced.trace)
    copy = memcpy(nbytes)
    world_size = build_plan(spec, src, dst).world_size

    start = time.perf_counter()
    with RayWorld(world_size) as ray_world:  # inside the caller's ray_session()
        startup = time.perf_counter() - start
        world = TimedWorld(ray_world)
        ray_result = sync(world=world)  # warm-up: first calls import and allocate in the actors
        ray_ok = check(ray_result, synchronizer).counts() == report.counts()
        sync(executor="inprocess")
        copy()
        sides: dict[str, Callable[[], Any]] = {
            "inprocess": lambda: sync(executor="inprocess"),
            "ray": lambda: sync(world=world),
            "memcpy": copy,
        }
        times: dict[str, list[float]] = {k: [] for k in sides}
        groups: list[float] = []
        order = list(sides)
        for rep in range(reps):
            for key in order[rep % 3 :] + order[: rep % 3]:
                before = world.group_seconds
                times[key].append(timed(sides[key]))
                if key == "ray":
                    groups.append(world.group_seconds - before)
    median = {k: statistics.median(v) for k, v in times.items()}
    return {
        "case": f"{name} (scaled, head_dim {head_dim}) s={s} -> d={d}",
        "world": world_size,
        "bytes": nbytes,
        "payload": payload,
        "seconds": median,
        "groups": statistics.median(groups),
        "startup": startup,
        "report": ", ".join(f"{n} {k}" for k, n in sorted(report.counts().items())),
        "ray_same": ray_ok,
    }


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def rate(nbytes: int, seconds: float) -> str:
    return f"{nbytes / seconds / 1e6:,.1f} MB/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions per side")
    parser.add_argument("--synchronizer", default="chatlearn", help="chatlearn or corrected")
    parser.add_argument("--quick", action="store_true", help="dense case only, 2 repetitions")
    opts = parser.parse_args()
    cases = CASES[:1] if opts.quick else CASES
    reps = 2 if opts.quick else opts.reps
    load = os.getloadavg()[0]
    started = time.perf_counter()
    start = time.perf_counter()
    with ray_session():
        session_s = time.perf_counter() - start
        rows = [
            {**run_case(name, s, d, head_dim, opts.synchronizer, reps), "kind": kind}
            for name, kind, s, d, head_dim in cases
        ]

    print("# bench_ray: bytes per second of a full sync, Ray vs in process vs memcpy (issue 6)\n")
    print(
        f"torch {torch.__version__}, {os.cpu_count()} cores, load average {load:.1f} at start;"
        f" synchronizer {opts.synchronizer}, trace off, {reps} reps, medians; Ray: gloo,"
        f" one actor per rank on this machine; syncviz from {Path(syncviz.__file__).parent}.\n"
    )
    print(
        table(
            [
                "case",
                "kind",
                "ranks",
                "dst bytes",
                "broadcast payload",
                "in process",
                "Ray",
                "memcpy",
                "Ray / in process",
                "in process / memcpy",
                "Ray / memcpy",
            ],
            [
                [
                    r["case"],
                    r["kind"],
                    str(r["world"]),
                    f"{r['bytes'] / 1e6:.2f} MB",
                    f"{r['payload'] / 1e6:.2f} MB",
                    rate(r["bytes"], r["seconds"]["inprocess"]),
                    rate(r["bytes"], r["seconds"]["ray"]),
                    rate(r["bytes"], r["seconds"]["memcpy"]),
                    f"{r['seconds']['inprocess'] / r['seconds']['ray']:.3f}",
                    f"{r['seconds']['memcpy'] / r['seconds']['inprocess']:.2e}",
                    f"{r['seconds']['memcpy'] / r['seconds']['ray']:.2e}",
                ]
                for r in rows
            ],
        )
    )
    print(
        "\nRates are dst bytes / median wall time. Each `A / B` column is A's throughput"
        " divided by B's (= B's median time / A's median time).\n"
    )
    print(
        table(
            [
                "case",
                "in process s",
                "Ray s",
                "of which group creation s",
                "memcpy ms",
                "RayWorld start-up s (excluded)",
                "check",
                "Ray same as in process",
            ],
            [
                [
                    r["case"],
                    f"{r['seconds']['inprocess']:.3f}",
                    f"{r['seconds']['ray']:.3f}",
                    f"{r['groups']:.3f}",
                    f"{r['seconds']['memcpy'] * 1e3:.3f}",
                    f"{r['startup']:.1f}",
                    r["report"],
                    "yes" if r["ray_same"] else "**no**",
                ]
                for r in rows
            ],
        )
    )
    print(f"\nRay session start-up (excluded): {session_s:.1f} s.")
    print(f"\nBenchmark wall time: {time.perf_counter() - started:.0f} s.")


if __name__ == "__main__":
    main()
