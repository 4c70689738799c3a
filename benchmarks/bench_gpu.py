"""Regroup throughput against a plain device copy, and tracing overhead, at real layer sizes.

For each setting (model, trainer tp s, vLLM tp d) the trainer ranks' layer-0 shards
are built at their exact shapes from the oracle, filled with random values, and run
through the synchronizer's name mapping, ``transform_parameters`` and routed-expert
all-gather once (threads, untimed). Then, for trainer rank 0's parameters, three
things are timed side by side in one run:

- ``regroup``: ``sync.regroup_params_to_sync(name, tensor, tp_division, gathered)``;
- ``memcpy``: ``dst.copy_(src)`` of the same number of bytes (a device-to-device copy);
- ``traced``: the regroup under :class:`syncviz.trace.Tracer` (tracer made, scope
  opened, input tracked), against the untraced regroup, by wall clock with
  ``torch.cuda.synchronize`` before and after.

Throughput counts bytes read plus bytes written once each (2 x tensor bytes), so
``ratio`` = regroup GB/s / memcpy GB/s = memcpy time / regroup time: 1.0 would be a
regroup as fast as one copy; a regroup that copies twice lands near 0.5. A regroup
that returns its input untouched (no data moved) is marked ``no copy``.

On a CUDA device the shapes are the real ones (llama3-70b s=8 -> d=16, qwen2-57b-a14b
s=2 -> d=4 and s=4 -> d=4, the largest pairs its 4 K/V groups allow). Without one it
runs the same settings on the CPU with layout-preserving downscaled shapes, as a smoke
test. Timing: warm-up, then the median of ``--reps`` (CUDA events on the GPU).

Run:  python benchmarks/bench_gpu.py --out gpu_bench.md [--reps 20] [--device cpu]

>>> row = time_param(Prepared("w", torch.ones(64, 8), 2, False), _column_halves, 2, "cpu")
>>> row["moved"], row["ratio"] > 0
(True, True)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from syncviz import ModelSpec, Parallel
from syncviz.oracle import model_layout
from syncviz.presets import PRESETS
from syncviz.run.local_world import LocalWorld
from syncviz.sync import get_synchronizer
from syncviz.sync.adapter import StageActor, models_for
from syncviz.sync.base import BaseSync
from syncviz.trace import Tracer

# (preset, s, d): the settings the issue asks for.
SETTINGS = [("llama3-70b", 8, 16), ("qwen2-57b-a14b", 2, 4), ("qwen2-57b-a14b", 4, 4)]
# Parameters smaller than this (norms, router, biases) are launch-bound: left out on the GPU.
MIN_NUMEL_GPU = 1 << 20

Regroup = Callable[[str, torch.Tensor, int, bool], torch.Tensor]


@dataclass
class Prepared:
    """One parameter of trainer rank 0, ready for ``regroup_params_to_sync``.

    ``name`` is the trainer's name (what the regroup switches on); ``label`` the vLLM one.
    """

    name: str
    tensor: torch.Tensor
    tp_division: int
    gathered: bool
    label: str = ""


def _column_halves(name: str, t: torch.Tensor, parts: int, gathered: bool) -> torch.Tensor:
    """A stand-in regroup for the doctest: column blocks stacked as rows."""
    return torch.cat(t.chunk(parts, dim=1), dim=0).contiguous()


def _synchronizers() -> dict[str, Callable[[ModelSpec, Parallel, Parallel], BaseSync]]:
    makers: dict[str, Callable[[ModelSpec, Parallel, Parallel], BaseSync]] = {
        "faithful": lambda spec, s, d: get_synchronizer(*models_for(spec, s, d)),
    }
    try:
        from syncviz.sync.corrected import corrected_synchronizer
    except ImportError:  # written separately; the benchmark runs without it
        return makers
    return {"corrected": corrected_synchronizer, **makers}


def prepare(
    spec: ModelSpec,
    src: Parallel,
    dst: Parallel,
    make_sync: Callable[[ModelSpec, Parallel, Parallel], BaseSync],
    device: str,
    dtype: torch.dtype,
) -> tuple[BaseSync, list[Prepared]]:
    """Rank 0's synchronizer and prepared parameters (all ranks run, for the all-gather)."""
    layout = model_layout(spec, src, dst, layers=[0])

    def rank(coll: Any) -> tuple[BaseSync, list[Prepared]]:
        r = coll.rank()
        shards = [sh for p in layout for sh in p.src if sh.tp == r and sh.ep in (None, 0)]
        gen = torch.Generator(device=device).manual_seed(r)
        # Random values, not zeros: zeros can hide unwritten outputs and copy faster.
        tensors = {
            sh.name: torch.randn(sh.shape, generator=gen, device=device, dtype=dtype)
            for sh in shards
        }
        names = list(tensors)
        sync = make_sync(spec, src, dst)
        sync.collective = coll
        src_names, dst_names = sync.map_name_from_src_to_dst(
            StageActor(0, names), StageActor(0), names, list(names)
        )
        prepared = sync.transform_parameters([(n, tensors[n]) for n in src_names])
        out = []
        for (name, tensor), dst_name in zip(prepared, dst_names, strict=True):
            tensor, gathered = sync.allgather_routed_experts(name, tensor, None, r)
            try:
                want = layout.param(dst_name).dst[0].index.numel
            except Exception:  # a name the faithful map gets wrong: assume a split
                want = -1
            division = 1 if tensor.numel() == want else dst.tp // src.tp
            out.append(Prepared(name, tensor, division, gathered, dst_name))
        return sync, (out if r == 0 else [])

    results = LocalWorld(src.tp, timeout=600.0).run(rank)
    for result in results:
        if result.error is not None:
            raise result.error
    return results[0].value


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _median_seconds(fn: Callable[[], Any], reps: int, device: str) -> float:
    """Median time of ``fn`` (CUDA events on the GPU, perf_counter on the CPU)."""
    for _ in range(3):
        fn()
    _sync(device)
    times = []
    for _ in range(reps):
        if device.startswith("cuda"):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _wall_seconds(fn: Callable[[], Any], device: str) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _traced_ratio(param: Prepared, regroup: Regroup, reps: int, device: str) -> tuple[float, int]:
    """Median traced / untraced wall time (alternating order), and the ops recorded."""
    ops = 0

    def plain() -> None:
        regroup(param.name, param.tensor, param.tp_division, param.gathered)

    def traced() -> None:
        nonlocal ops
        tracer = Tracer()
        with tracer.scope(param=param.name, rank=0, phase="regroup"):
            x = tracer.track(param.tensor, "src")
            regroup(param.name, x, param.tp_division, param.gathered)
        ops = len(tracer.trace.params[0].ops)

    for _ in range(2):
        plain()
        traced()
    untraced, with_trace = [], []
    for rep in range(reps):
        order = [(plain, untraced), (traced, with_trace)]
        for fn, into in order if rep % 2 else order[::-1]:
            into.append(_wall_seconds(fn, device))
    return statistics.median(with_trace) / statistics.median(untraced), ops


def _memcpy_seconds(src: torch.Tensor, reps: int, device: str) -> float:
    """Median time of a device-to-device copy of ``src`` into a fresh buffer."""
    copy_dst = torch.empty_like(src)
    return _median_seconds(lambda: copy_dst.copy_(src), reps, device)


def time_param(
    param: Prepared, regroup: Regroup, reps: int, device: str, trace: bool = False
) -> dict[str, Any]:
    """Regroup and memcpy of one parameter, side by side; optionally the tracing ratio."""
    src = param.tensor
    nbytes = src.numel() * src.element_size()
    result = regroup(param.name, src, param.tp_division, param.gathered)
    # Sharing storage with the input means nothing was moved.
    moved = result.untyped_storage().data_ptr() != src.untyped_storage().data_ptr()
    del result
    regroup_s = _median_seconds(
        lambda: regroup(param.name, src, param.tp_division, param.gathered), reps, device
    )
    memcpy_s = _memcpy_seconds(src, reps, device)
    row: dict[str, Any] = {
        "param": param.label or param.name,
        "shape": list(src.shape),
        "dtype": str(src.dtype).removeprefix("torch."),
        "tp_division": param.tp_division,
        "MB": nbytes / 1e6,
        "moved": moved,
        "regroup_ms": regroup_s * 1e3,
        "memcpy_ms": memcpy_s * 1e3,
        "regroup_GBps": 2 * nbytes / regroup_s / 1e9,
        "memcpy_GBps": 2 * nbytes / memcpy_s / 1e9,
        "ratio": memcpy_s / regroup_s,
    }
    if trace:
        row["traced_ratio"], row["ops"] = _traced_ratio(param, regroup, max(reps // 2, 5), device)
    return row


def _spec_for(name: str, src: Parallel, dst: Parallel, device: str) -> ModelSpec:
    spec = PRESETS[name]
    if device.startswith("cuda"):
        return spec
    # CPU smoke run: the same layout at a fraction of the size.
    return spec.scaled(src, dst, target_head_dim=16, num_layers=1)


def run(reps: int, device: str, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Every row: setting x synchronizer x dtype x large parameter of trainer rank 0."""
    rows = []
    for model, s, d in SETTINGS:
        src, dst = Parallel(tp=s), Parallel(tp=d)
        spec = _spec_for(model, src, dst, device)
        for sync_name, make_sync in _synchronizers().items():
            for dtype in (torch.bfloat16, torch.float32):
                sync, params = prepare(spec, src, dst, make_sync, device, dtype)
                for param in params:
                    if device.startswith("cuda") and param.tensor.numel() < MIN_NUMEL_GPU:
                        continue
                    setting = {"model": spec.name, "s": s, "d": d, "sync": sync_name}
                    try:
                        row = time_param(param, sync.regroup_params_to_sync, reps, device, True)
                    except Exception as exc:  # the faithful port fails on some parameters
                        row = {"param": param.label, "dtype": str(dtype), "error": repr(exc)[:160]}
                    rows.append({**setting, **row})
                    log(_line(rows[-1]))
                del sync, params
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
    return rows


def _short(name: str) -> str:
    return name.removeprefix("model.model.layers.0.")


def _line(row: dict[str, Any]) -> str:
    head = f"{row['model']:>30} s{row['s']}->d{row['d']} {row['sync']:9} {_short(row['param']):44}"
    if "error" in row:
        return f"{head} {row['dtype']:9} error: {row['error']}"
    shape = "x".join(map(str, row["shape"]))
    return (
        f"{head} {row['dtype']:9} {shape:>15} {row['regroup_GBps']:8.1f} {row['memcpy_GBps']:8.1f}"
        f" {row['ratio']:6.3f}{'' if row['moved'] else ' (no copy)'}"
        f" traced x{row['traced_ratio']:.2f} ({row['ops']} ops)"
    )


def markdown(rows: list[dict[str, Any]], where: str, reps: int) -> str:
    """The rows as a markdown report."""
    lines = [
        "# Regroup throughput vs device memcpy, and tracing overhead",
        "",
        f"Device: {where}; torch {torch.__version__}; median of {reps} (CUDA events on the GPU).",
        "GB/s count bytes read + written (2 x tensor bytes). ratio = regroup GB/s / memcpy GB/s.",
        "traced = traced / untraced wall time of the regroup call (synchronized).",
        "Trainer rank 0, layer 0, random values.",
        "",
        "| model | s->d | sync | param | dtype | shape | tp_div | MB | regroup ms | memcpy ms"
        " | regroup GB/s | memcpy GB/s | ratio | traced | ops |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        head = f"| {r['model']} | {r['s']}->{r['d']} | {r['sync']} | {_short(r['param'])}"
        if "error" in r:
            lines.append(f"{head} | {r['dtype']} | error: {r['error']} |" + " |" * 10)
            continue
        note = "" if r["moved"] else " (no copy)"
        lines.append(
            f"{head} | {r['dtype']} | {'x'.join(map(str, r['shape']))} | {r['tp_division']}"
            f" | {r['MB']:.1f} | {r['regroup_ms']:.3f} | {r['memcpy_ms']:.3f}"
            f" | {r['regroup_GBps']:.0f} | {r['memcpy_GBps']:.0f} | {r['ratio']:.3f}{note}"
            f" | {r['traced_ratio']:.2f} | {r['ops']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run every setting; print one line per row; write markdown to --out, JSON beside it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="markdown report path (.json written beside)")
    parser.add_argument("--reps", type=int, default=20, help="timed repetitions per measurement")
    default = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default, help="cuda or cpu (default: cuda if any)")
    opts = parser.parse_args()
    if opts.device.startswith("cuda"):
        where = torch.cuda.get_device_name()
    else:
        where = f"cpu ({platform.processor() or platform.machine()}, downscaled shapes)"
    print(f"torch {torch.__version__}, {where}, {opts.reps} reps")
    rows = run(opts.reps, opts.device)
    out = Path(opts.out)
    out.write_text(markdown(rows, where, opts.reps))
    meta = {"device": where, "torch": torch.__version__, "reps": opts.reps}
    out.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    print(f"wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
