"""Traced vs untraced wall time of regroup-like op sequences, side by side.

Each case runs untraced and traced in alternating order, ``--reps`` times, and
reports the medians and their ratio. The cases imitate the seed's regroup code
on a llama3-70b-sized qkv shard (10240 / 8 x 8192); a small case shows the fixed
per-op cost of tracing when the ops themselves are nearly free.

Columns: median untraced and traced milliseconds (traced includes making the
Tracer, the scope, track() and writing the OpRecords), their ratio, ops recorded,
and the extra microseconds per recorded op (fixed costs included).

Run:  python benchmarks/bench_tracing.py [--reps 15] [--quick] [--device cuda]

>>> rows = run_case(Case("tiny", column_regroup, (4, 8), torch.float32, 2), reps=2)
>>> rows["ops"]
5
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from syncviz.trace import Tracer


def column_regroup(param: torch.Tensor, tp_division: int) -> torch.Tensor:
    """Row-parallel weight: column slices stacked as rows (seed: self_attention.dense)."""
    shape = param.shape
    width = shape[1] // tp_division
    pieces = [param[:, i * width : (i + 1) * width] for i in range(tp_division)]
    return torch.concat(pieces, dim=0).contiguous().view(shape)


def gate_up_regroup(param: torch.Tensor, tp_division: int) -> torch.Tensor:
    """Fused gate/up: pair row blocks of each half per slice (seed: mlp.dense_h_to_4h)."""
    shape = param.shape
    rows = shape[0] // tp_division // 2
    pieces = []
    for i in range(tp_division):
        gate = param[i * rows : (i + 1) * rows, :]
        up = param[(i + tp_division) * rows : (i + tp_division + 1) * rows, :]
        pieces.append(torch.concat([gate, up], dim=0))
    return torch.concat(pieces, dim=0).contiguous().view(shape)


def chunk_regroup(param: torch.Tensor, tp_division: int) -> torch.Tensor:
    """Column chunks stacked as rows, written with chunk instead of slices."""
    return torch.cat(param.chunk(tp_division, dim=1), dim=0).contiguous().view(param.shape)


@dataclass(frozen=True)
class Case:
    """One benchmark case: an op sequence, a tensor shape and dtype, and tp_division."""

    name: str
    fn: Callable[[torch.Tensor, int], torch.Tensor]
    shape: tuple[int, ...]
    dtype: torch.dtype
    tp_division: int


def _sync(x: torch.Tensor) -> None:
    # GPU kernels run asynchronously: wait for them so the clock sees their work.
    if x.is_cuda:
        torch.cuda.synchronize(x.device)


def _time_untraced(case: Case, x: torch.Tensor) -> float:
    _sync(x)
    start = time.perf_counter()
    case.fn(x, case.tp_division)
    _sync(x)
    return time.perf_counter() - start


def _time_traced(case: Case, x: torch.Tensor) -> tuple[float, int]:
    _sync(x)
    start = time.perf_counter()
    tracer = Tracer()
    with tracer.scope(param=case.name, rank=0, phase="regroup"):
        case.fn(tracer.track(x, "src"), case.tp_division)
    _sync(x)
    elapsed = time.perf_counter() - start
    return elapsed, len(tracer.trace.params[0].ops)


def run_case(case: Case, reps: int, device: str = "cpu") -> dict[str, float]:
    """Median untraced and traced seconds, their ratio, ops recorded, cost per op."""
    numel = torch.Size(case.shape).numel()
    x = torch.arange(numel, dtype=torch.float32, device=device).to(case.dtype).view(case.shape)
    # Warm up allocator and caches for both paths before measuring.
    _time_untraced(case, x)
    _time_traced(case, x)
    untraced, traced, ops = [], [], 0
    for rep in range(reps):
        # Alternate which runs first, so drift and cache effects fall on both sides.
        if rep % 2:
            untraced.append(_time_untraced(case, x))
            seconds, ops = _time_traced(case, x)
            traced.append(seconds)
        else:
            seconds, ops = _time_traced(case, x)
            traced.append(seconds)
            untraced.append(_time_untraced(case, x))
    plain, with_trace = statistics.median(untraced), statistics.median(traced)
    return {
        "untraced_ms": plain * 1e3,
        "traced_ms": with_trace * 1e3,
        "ratio": with_trace / plain,
        "ops": ops,
        "us_per_op": (with_trace - plain) / max(ops, 1) * 1e6,
    }


def cases(quick: bool) -> list[Case]:
    """The benchmark cases; ``quick`` uses a quarter of the rows."""
    rows = 10240 // 8 // (4 if quick else 1)
    big = (rows, 8192)
    out = []
    for dtype in (torch.float32, torch.bfloat16):
        tag = str(dtype).removeprefix("torch.")
        out += [
            Case(f"column_regroup {tag}", column_regroup, big, dtype, 4),
            Case(f"gate_up_regroup {tag}", gate_up_regroup, big, dtype, 4),
            Case(f"chunk_regroup {tag}", chunk_regroup, big, dtype, 4),
        ]
    out.append(Case("column_regroup small 64x64", column_regroup, (64, 64), torch.float32, 4))
    return out


def main() -> None:
    """Print one line per case: shape, medians, ratio, ops and tracing cost per op."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=15, help="timed repetitions per side")
    parser.add_argument("--quick", action="store_true", help="smaller tensors, for a smoke run")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    opts = parser.parse_args()
    where = torch.cuda.get_device_name() if opts.device.startswith("cuda") else "cpu"
    print(
        f"torch {torch.__version__}, {where}, {torch.get_num_threads()} threads, {opts.reps} reps"
    )
    header = f"{'case':34} {'shape':>12} {'untraced ms':>12} {'traced ms':>10} {'ratio':>6}"
    print(header + f" {'ops':>4} {'us/op':>7}")
    for case in cases(opts.quick):
        r = run_case(case, opts.reps, opts.device)
        shape = "x".join(map(str, case.shape))
        print(
            f"{case.name:34} {shape:>12} {r['untraced_ms']:12.3f} {r['traced_ms']:10.3f}"
            f" {r['ratio']:6.3f} {r['ops']:4d} {r['us_per_op']:7.1f}"
        )


if __name__ == "__main__":
    main()
