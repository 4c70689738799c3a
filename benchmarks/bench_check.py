"""How long a whole-model check takes, and what tracing costs on real-size tensors.

Run from the repository root: ``PYTHONPATH=. python benchmarks/bench_check.py``
(``--quick`` for a smoke run); the output names the syncviz it imported.

Three parts, printed as markdown tables:

1. Whole-model check (``run_sync`` + ``check``) of scaled models, every
   configuration timed once per repetition in rotating order; medians.
   Target (issue 4): under 10 s on 2 cores, with tracing on (as ``syncviz check``).
2. Exact-shape llama3-70b layer 0 at s=8 -> d=16 (no scaling). Provenance ids
   are float64, and a sync holds several copies of every tensor (the trainer
   shards, the vLLM tensors, the regrouped and broadcast buffers, the staged
   copies), so a full exact layer does not fit in memory here: the part measured
   is the layer's parameters, in model order, that fit ``--mem-budget-gib``.
   It runs in a process of its own; the table says which parameters were
   measured and that process's peak memory.
3. Tracing overhead: traced / untraced wall time of the faithful synchronizer's
   ``regroup_params_to_sync`` on exact llama3-70b trainer shards (s=8 -> d=16),
   alternating sides, medians. Target (issue 4): under 1.3x.

>>> sizes(preset("llama3-70b"), ["model.model.layers.0.input_layernorm.weight"])
{'model.model.layers.0.input_layernorm.weight': 196608}
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import math
import os
import resource
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path
from typing import TypeVar
from unittest import mock

import torch

import syncviz
import syncviz.run.inprocess as inprocess
from syncviz import Parallel, preset
from syncviz.check import check
from syncviz.oracle import model_layout
from syncviz.oracle.layout import ModelLayout
from syncviz.run.plan import SyncPlan, build_plan
from syncviz.spec import ModelSpec
from syncviz.sync import get_synchronizer
from syncviz.sync.adapter import StageActor, models_for
from syncviz.trace import Tracer

T = TypeVar("T")
WHOLE_MODEL = [("qwen2-57b-a14b", 2, 4), ("llama3-70b", 8, 16)]
TARGET_CHECK_S = 10.0
TARGET_TRACE_RATIO = 1.3
# Peak resident bytes per id element (source + destination) of a traced sync + check of
# the exact llama3-70b qkv_proj, measured here (32-34); used to choose what fits the budget.
BYTES_PER_ELEMENT = 34
# Exact trainer shards whose regroup is timed (names as in the Megatron-Core model).
REGROUPED = ("linear_qkv.weight", "linear_fc1.weight", "linear_fc2.weight")


def synchronizers() -> list[str]:
    """The synchronizers to compare: the faithful port, and the corrected one if present."""
    corrected = importlib.util.find_spec("syncviz.sync.corrected") is not None
    return ["chatlearn", "corrected"] if corrected else ["chatlearn"]


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def available_gib() -> float | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def counts_text(report) -> str:
    return ", ".join(f"{n} {s}" for s, n in sorted(report.counts().items()))


# ------------------------------------------------------------------ 1. whole model


def check_once(
    spec: ModelSpec,
    src: Parallel,
    dst: Parallel,
    synchronizer: str,
    trace: bool,
    layers: list[int] | None = None,
) -> dict[str, object]:
    """Seconds of run_sync and of check for one configuration, and the report's counts."""
    sync_s, result = timed(
        lambda: inprocess.run_sync(
            spec, src, dst, synchronizer=synchronizer, layers=layers, trace=trace
        )
    )
    check_s, report = timed(lambda: check(result, synchronizer))
    return {"sync": sync_s, "check": check_s, "counts": counts_text(report)}


def whole_model(reps: int, untraced: bool) -> list[dict[str, object]]:
    """Median seconds per configuration; configurations rotate their order each repetition.

    Tracing is on, as in ``syncviz check``; ``untraced`` adds the same runs without it.
    """
    configs = []
    for name, s, d in WHOLE_MODEL:
        src, dst = Parallel(tp=s), Parallel(tp=d)
        spec = preset(name).scaled(src, dst)
        for synchronizer in synchronizers():
            for trace in (True, False) if untraced else (True,):
                configs.append((name, spec, src, dst, synchronizer, trace))
    runs: list[list[dict[str, object]]] = [[] for _ in configs]
    for rep in range(reps):
        shift = rep % len(configs)
        for i in [*range(shift, len(configs)), *range(shift)]:
            _, spec, src, dst, synchronizer, trace = configs[i]
            runs[i].append(check_once(spec, src, dst, synchronizer, trace))
    rows = []
    for (name, _, src, dst, synchronizer, trace), found in zip(configs, runs, strict=True):
        sync_s = statistics.median(r["sync"] for r in found)
        check_s = statistics.median(r["check"] for r in found)
        total = statistics.median(r["sync"] + r["check"] for r in found)
        rows.append(
            {
                "model": f"{name} (scaled)",
                "sizes": f"s={src.tp} -> d={dst.tp}",
                "synchronizer": synchronizer,
                "trace": "on" if trace else "off",
                "sync": sync_s,
                "check": check_s,
                "total": total,
                "counts": found[-1]["counts"],
            }
        )
    return rows


# ------------------------------------------------------------------ 2. one exact layer


def sizes(spec: ModelSpec, keys: list[str] | None = None) -> dict[str, int]:
    """Elements (trainer shards + vLLM tensors) of layer 0's parameters at s=8 -> d=16."""
    layout = model_layout(spec, Parallel(tp=8), Parallel(tp=16), layers=[0])
    return {
        p.key: sum(math.prod(t.shape) for t in (*p.src, *p.dst))
        for p in layout.params
        if keys is None or p.key in keys
    }


def fitting(elements: dict[str, int], budget_gib: float) -> tuple[list[str], list[str]]:
    """The parameters, in model order, whose estimated memory fits the budget together."""
    kept, skipped, used = [], [], 0.0
    for key, n in elements.items():
        need = n * BYTES_PER_ELEMENT / 2**30
        if used + need <= budget_gib:
            kept.append(key)
            used += need
        else:
            skipped.append(key)
    return kept, skipped


def subset(plan: SyncPlan, keys: list[str]) -> SyncPlan:
    """The same plan, moving only the parameters ``keys`` (vLLM names)."""
    layout = plan.layout
    params = [p for p in layout.params if p.key in keys]
    src_names = {s.name for p in params for s in p.src}
    dst_names = {t.name for p in params for t in p.dst}
    return dataclasses.replace(
        plan,
        layout=ModelLayout(
            layout.spec, layout.src, layout.dst, layout.conventions, params, layout.layers
        ),
        src_params={w: tuple(n for n in ns if n in src_names) for w, ns in plan.src_params.items()},
        dst_shapes={
            w: {n: s for n, s in shapes.items() if n in dst_names}
            for w, shapes in plan.dst_shapes.items()
        },
    )


@contextmanager
def only_params(keys: list[str]) -> Iterator[None]:
    """Make run_sync plan only ``keys``: everything else about the run is unchanged."""

    def planned(*args, **kwargs) -> SyncPlan:
        return subset(build_plan(*args, **kwargs), keys)

    with mock.patch.object(inprocess, "build_plan", planned):
        yield


def exact_layer(budget_gib: float, reps: int) -> tuple[list[dict[str, object]], str, float]:
    """Time the part of exact llama3-70b layer 0 that fits: rows, what fits, peak GiB.

    Meant to run in a process of its own (see :func:`in_child`): the peak memory is
    then this part's alone, and the gigabytes it used are given back when it ends.
    """
    spec = preset("llama3-70b")
    elements = sizes(spec)
    full_gib = sum(elements.values()) * BYTES_PER_ELEMENT / 2**30
    free = available_gib()
    if free is not None:
        budget_gib = min(budget_gib, 0.8 * free)
    kept, skipped = fitting(elements, budget_gib)
    short = [k.removeprefix("model.model.layers.0.") for k in kept]
    note = (
        f"Full exact layer 0: {sum(elements.values()) / 1e6:.0f} M ids (src + dst), about"
        f" {full_gib:.0f} GiB at {BYTES_PER_ELEMENT} B/id; budget {budget_gib:.1f} GiB, so"
        f" measured only: {', '.join(short)}; skipped: "
        + ", ".join(k.removeprefix("model.model.layers.0.") for k in skipped)
    )
    rows = []
    measured = sum(elements[k] for k in kept)
    with only_params(kept):
        runs: dict[str, list[dict[str, object]]] = {s: [] for s in synchronizers()}
        for rep in range(reps):
            order = synchronizers()[rep % 2 :] + synchronizers()[: rep % 2]
            for synchronizer in order:
                runs[synchronizer].append(
                    check_once(spec, Parallel(tp=8), Parallel(tp=16), synchronizer, True, [0])
                )
    for synchronizer, found in runs.items():
        rows.append(
            {
                "synchronizer": synchronizer,
                "ids": measured,
                "sync": statistics.median(r["sync"] for r in found),
                "check": statistics.median(r["check"] for r in found),
                "total": statistics.median(r["sync"] + r["check"] for r in found),
                "counts": found[-1]["counts"],
            }
        )
    return rows, note, peak_rss_gib()


def in_child(fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` in a fresh process (after a multi-GiB run, the parent's later
    timings were up to 10x slower on this machine)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


# ------------------------------------------------------------------ 3. tracing overhead


def regroup_cases(dtypes: list[torch.dtype]) -> list[tuple[str, torch.Tensor, int]]:
    """(trainer name, exact tp-rank-0 shard holding its ids, tp_division) per timed shard."""
    spec, src, dst = preset("llama3-70b"), Parallel(tp=8), Parallel(tp=16)
    layout = model_layout(spec, src, dst, layers=[0])
    cases = []
    for dtype in dtypes:
        for param in layout.params:
            shard = param.src[0]
            if shard.name.endswith(REGROUPED):
                # The flow's rule: no regroup when both sides hold the same number of elements.
                same = math.prod(shard.shape) == math.prod(param.dst[0].shape)
                cases.append(
                    (shard.name, shard.index.ids().to(dtype), 1 if same else dst.tp // src.tp)
                )
    return cases


def faithful_sync():
    """The faithful llama3-70b synchronizer, with its name map built as the flow does."""
    spec, src, dst = preset("llama3-70b"), Parallel(tp=8), Parallel(tp=16)
    sync = get_synchronizer(*models_for(spec, src, dst))
    names = [p.src[0].name for p in model_layout(spec, src, dst, layers=[0]).params]
    sync.map_name_from_src_to_dst(StageActor(0, names), StageActor(0), names, list(names))
    return sync


def tracing_overhead(reps: int, dtypes: list[torch.dtype]) -> list[dict[str, object]]:
    """Median untraced and traced ms of each regroup, alternating which side runs first."""
    sync = faithful_sync()

    def plain(name: str, x: torch.Tensor, division: int) -> tuple[float, int]:
        seconds, _ = timed(lambda: sync.regroup_params_to_sync(name, x, division))
        return seconds, 0

    def traced(name: str, x: torch.Tensor, division: int) -> tuple[float, int]:
        start = time.perf_counter()
        with Tracer() as tracer, tracer.scope(param=name, rank=0, phase="regroup"):
            sync.regroup_params_to_sync(name, tracer.track(x, "src"), division)
        seconds = time.perf_counter() - start
        return seconds, len(tracer.trace.params[0].ops)

    rows = []
    for name, x, division in regroup_cases(dtypes):
        plain(name, x, division)  # warm up both paths (allocator, first-call costs)
        traced(name, x, division)
        off, on, ops = [], [], 0
        for rep in range(reps):
            sides = (plain, traced) if rep % 2 else (traced, plain)
            for side in sides:
                seconds, n = side(name, x, division)
                (on if side is traced else off).append(seconds)
                ops = max(ops, n)
        untraced, with_trace = statistics.median(off), statistics.median(on)
        rows.append(
            {
                "shard": name.removeprefix("module.module.decoder.layers.0."),
                "shape": "x".join(map(str, x.shape)),
                "dtype": str(x.dtype).removeprefix("torch."),
                "untraced": untraced * 1e3,
                "traced": with_trace * 1e3,
                "ratio": with_trace / untraced,
                "ops": ops,
            }
        )
    return rows


# ------------------------------------------------------------------ report


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def mark(ok: bool) -> str:
    return "yes" if ok else "**no**"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="whole-model repetitions")
    parser.add_argument(
        "--untraced", action="store_true", help="also time whole-model runs without tracing"
    )
    parser.add_argument("--exact-reps", type=int, default=1, help="exact-layer repetitions")
    parser.add_argument("--trace-reps", type=int, default=15, help="tracing-overhead repetitions")
    parser.add_argument(
        "--mem-budget-gib",
        type=float,
        default=8.0,
        help="memory the exact-layer part may use (estimated)",
    )
    parser.add_argument("--quick", action="store_true", help="one repetition, float32 only")
    opts = parser.parse_args()
    if opts.quick:
        opts.reps, opts.exact_reps, opts.trace_reps = 1, 1, 3
    dtypes = [torch.float32] if opts.quick else [torch.float32, torch.bfloat16]
    started = time.perf_counter()
    load = os.getloadavg()[0]

    whole = whole_model(opts.reps, opts.untraced)
    overhead = tracing_overhead(opts.trace_reps, dtypes)
    exact_rows, exact_note, exact_peak = in_child(exact_layer, opts.mem_budget_gib, opts.exact_reps)

    print("# bench_check: whole-model check time and tracing overhead (issue 4)\n")
    print(
        f"torch {torch.__version__}, {os.cpu_count()} cores, {torch.get_num_threads()} threads,"
        f" load average {load:.1f} at start; reps: whole model {opts.reps},"
        f" exact layer {opts.exact_reps}, tracing {opts.trace_reps}. Times are medians."
        f" syncviz from {Path(syncviz.__file__).parent}.\n"
    )
    print(f"## Whole-model check: run_sync + check (target < {TARGET_CHECK_S:.0f} s)\n")
    print(
        table(
            [
                "model",
                "sizes",
                "synchronizer",
                "trace",
                "run_sync s",
                "check s",
                "total s",
                "< 10 s",
                "report",
            ],
            [
                [
                    r["model"],
                    r["sizes"],
                    r["synchronizer"],
                    r["trace"],
                    f"{r['sync']:.2f}",
                    f"{r['check']:.2f}",
                    f"{r['total']:.2f}",
                    mark(r["total"] < TARGET_CHECK_S),
                    r["counts"],
                ]
                for r in whole
            ],
        )
    )
    print("\n## Exact-shape llama3-70b layer 0, s=8 -> d=16 (no scaling, trace on)\n")
    print(exact_note + "\n")
    print(
        table(
            [
                "synchronizer",
                "ids measured (src + dst)",
                "run_sync s",
                "check s",
                "total s",
                "report",
            ],
            [
                [
                    r["synchronizer"],
                    f"{r['ids'] / 1e6:.0f} M",
                    f"{r['sync']:.2f}",
                    f"{r['check']:.2f}",
                    f"{r['total']:.2f}",
                    r["counts"],
                ]
                for r in exact_rows
            ],
        )
    )
    measured = exact_rows[0]["ids"]
    print(
        f"\nPeak resident memory of the process that ran this part: {exact_peak:.1f} GiB"
        f" ({exact_peak * 2**30 / measured:.0f} B per id measured).\n"
    )
    print(
        "## Tracing overhead: faithful regroup_params_to_sync of exact llama3-70b shards,"
        f" s=8 -> d=16 (target < {TARGET_TRACE_RATIO}x)\n"
    )
    print(
        table(
            [
                "shard (tp rank 0)",
                "shape",
                "dtype",
                "untraced ms",
                "traced ms",
                "ratio",
                "ops recorded",
                f"< {TARGET_TRACE_RATIO}x",
            ],
            [
                [
                    r["shard"],
                    r["shape"],
                    r["dtype"],
                    f"{r['untraced']:.1f}",
                    f"{r['traced']:.1f}",
                    f"{r['ratio']:.2f}",
                    str(r["ops"]),
                    mark(r["ratio"] < TARGET_TRACE_RATIO),
                ]
                for r in overhead
            ],
        )
    )
    print(
        "\nTraced time includes making the Tracer, the scope, track() and writing the"
        " OpRecords; the ops themselves are the synchronizer's own slicing and copying."
    )
    print(f"\nBenchmark wall time: {time.perf_counter() - started:.0f} s.")


if __name__ == "__main__":
    main()
