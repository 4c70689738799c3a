"""Fingerprinting a rank's weights at real shapes, beside a copy of the same bytes.

``gpu``: one vLLM rank's bf16 weights at their real shapes, filled with random bits
on the device: a llama3-70b TP 8 rank (80 layers of qkv [1280, 8192], o [8192, 1024],
gate_up [7168, 8192], down [8192, 3584] and two norms of 8192) and a Qwen3-235B-A22B
EP 8 rank (94 layers of 16 experts' w13 [3072, 4096] and w2 [4096, 1536] and two
norms of 4096). Timed side by side in one run, CUDA events, median of ``--reps``:

- ``fingerprint``: :func:`syncviz.fingerprint_dump.rank_prints` of every tensor (the
  fused kernel, one launch per row width, then one per group size to compose narrow
  rows in groups), what ``save_fingerprints`` computes; ``rows_only``: without the
  composing;
- ``copy``: ``scratch[:n].copy_(tensor)`` of every tensor (device to device).

Rates count the weights' bytes once (bytes described per second) for both, so
``ratio`` = copy time / fingerprint time; a copy also writes, so a fingerprint
reading at the copy's memory speed would show 2.0. Also: the plain-torch path on
the GPU, the fingerprint file's size against the bytes it describes, and what a
full dump costs on that machine (device-to-host copy, disk write).

``cpu``: the expected side. A Hugging Face checkpoint of one llama3-70b layer at
real shapes (vocabulary cut to 1024 so the file stays small) and the fingerprint
files of its 8 TP ranks; timed: one bare pass over the checkpoint's bytes (read each
tensor through diagnose's reader, ``.sum()``), the expected fingerprints of every
rank (each checkpoint tensor read once and fingerprinted where it lies, as diagnose
does, every rank's segments looked up and composed into its groups), the same with
each parameter's tensors joined first (``joined``, the way before), the same from
memory (tensors already read and joined) against a ``.sum()`` of them, the reading
and the joining alone, the whole fingerprint diagnosis, and the full-dump diagnosis.

``project``: from the two runs' JSON, DeepSeek-V3 671B at TP 8 / EP 8 (bf16): what
a full dump and fingerprints write, hold and take (the README's table).

Run:  python benchmarks/bench_fingerprint.py gpu|cpu [--reps 5] [--json OUT]
      python benchmarks/bench_fingerprint.py project --gpu-json G --cpu-json C

>>> [round(torch.Size(s).numel() * 2 / 2**30, 2) for s in rank_shapes("llama3-70b")[:4]]
[0.02, 0.02, 0.11, 0.05]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

import syncviz.fingerprint as fp_module
from syncviz.fingerprint import fingerprint, fingerprint_many, fingerprint_torch
from syncviz.fingerprint_dump import rank_prints, save_fingerprints, tensor_group


def rank_shapes(name: str) -> list[tuple[int, ...]]:
    """One rank's weight shapes at real sizes, every layer."""
    if name == "llama3-70b":
        return [(1280, 8192), (8192, 1024), (7168, 8192), (8192, 3584), (8192,), (8192,)] * 80
    if name == "qwen3-235b-a22b":
        return [(16, 3072, 4096), (16, 4096, 1536), (4096,), (4096,)] * 94
    raise ValueError(name)


def _random_bf16(shape: tuple[int, ...], device: str) -> torch.Tensor:
    bits = torch.randint(-(2**15), 2**15, shape, dtype=torch.int16, device=device)
    return bits.view(torch.bfloat16)


def _cuda_time(fn, reps: int) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(stop) / 1e3)
    return statistics.median(times)


def bench_gpu(name: str, reps: int, sweep: bool = False) -> dict:
    """Fingerprint vs device copy of one rank's weights (``name``) on the CUDA device."""
    tensors = [_random_bf16(s, "cuda") for s in rank_shapes(name)]
    nbytes = sum(t.numel() * t.element_size() for t in tensors)
    scratch = torch.empty(max(t.numel() for t in tensors), dtype=torch.bfloat16, device="cuda")
    runs = [None if t.dim() > 1 else 16 for t in tensors]
    groups = [tensor_group(tuple(t.shape), t.element_size()) for t in tensors]

    def prints():
        return rank_prints(tensors, runs, groups)

    def rows_only():
        return fingerprint_many(tensors, runs)

    def one_by_one():
        return [fingerprint(t, r) for t, r in zip(tensors, runs, strict=True)]

    def copy():
        for t in tensors:
            scratch[: t.numel()].copy_(t.view(-1))

    tiles = {}
    if sweep:
        default = fp_module.TRITON_TILE
        for tile in [(4096, 1024, 4), (4096, 2048, 4), (2048, 1024, 4), (8192, 1024, 8)]:
            fp_module.TRITON_TILE = tile
            tiles[str(tile)] = nbytes / _cuda_time(prints, reps) / 1e9
        fp_module.TRITON_TILE = default
    fp_s, copy_s = _cuda_time(prints, reps), _cuda_time(copy, reps)
    rows_s = _cuda_time(rows_only, reps)
    single_s = _cuda_time(one_by_one, reps)
    torch_s = _cuda_time(
        lambda: [fingerprint_torch(t, None if t.dim() > 1 else 16) for t in tensors[:24]], 1
    ) * (len(tensors) / 24)
    with tempfile.TemporaryDirectory() as tmp:
        path = save_fingerprints({f"w{i}": t for i, t in enumerate(tensors)}, tmp, tp_rank=0)
        file_bytes = path.stat().st_size
    tensors.clear()
    torch.cuda.empty_cache()
    return {
        "model": name,
        "bytes": nbytes,
        "fingerprint_s": fp_s,
        "copy_s": copy_s,
        "fingerprint_GBps": nbytes / fp_s / 1e9,
        "copy_GBps": nbytes / copy_s / 1e9,
        "ratio": copy_s / fp_s,
        "rows_only_GBps": nbytes / rows_s / 1e9,
        "one_launch_per_tensor_GBps": nbytes / single_s / 1e9,
        "tile_sweep_GBps": tiles,
        "torch_path_s_est": torch_s,
        "file_bytes": file_bytes,
        "file_share": file_bytes / nbytes,
    }


def bench_full_dump_costs(gib: float = 4.0) -> dict:
    """What a full dump costs here: a device-to-host copy and a safetensors write, per GB."""
    from safetensors.torch import save_file

    t = _random_bf16((int(gib * 2**29),), "cuda")
    nbytes = t.numel() * 2
    t.to("cpu")  # warm
    torch.cuda.synchronize()
    start = time.perf_counter()
    host = t.to("cpu")
    d2h = time.perf_counter() - start
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DISK", "/tmp")) as tmp:
        start = time.perf_counter()
        save_file({"w": host}, f"{tmp}/w.safetensors")
        fd = os.open(f"{tmp}/w.safetensors", os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        write = time.perf_counter() - start
    return {
        "bytes": nbytes,
        "d2h_GBps": nbytes / d2h / 1e9,
        "disk_write_GBps": nbytes / write / 1e9,
    }


def bench_cpu(reps: int) -> dict:
    """The expected side of one llama3-70b layer at TP 8 against a bare pass over its bytes."""
    from syncviz.diagnose.core import REFERENCE, GlobalTensor, run_diagnosis
    from syncviz.diagnose.fingerprints import PrintFiles, PrintTable, fingerprint_dumps
    from syncviz.diagnose.fixtures import write_checkpoint, write_dumps
    from syncviz.diagnose.reference import Reference
    from syncviz.diagnose.segments import segment_length, segment_starts
    from syncviz.fingerprint import compose
    from syncviz.fingerprint_dump import MIN_BYTES, tensor_group, tensor_run
    from syncviz.oracle import model_layout
    from syncviz.parallel import Parallel
    from syncviz.presets import PRESETS

    spec = dataclasses.replace(PRESETS["llama3-70b"], num_layers=1, vocab_size=1024)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ref, dump, prints = root / "ref", root / "dump", root / "prints"
        write_checkpoint(spec, ref)
        write_dumps(spec, ref, dump, tp=8, layers=[0])
        fingerprint_dumps(dump, prints, tp=8, run_1d=16, min_bytes=MIN_BYTES)
        reference = Reference(ref)
        layout = model_layout(spec, REFERENCE, Parallel(tp=8), layers=[0], include_globals=False)
        names = [
            [t.format(i=0) for t in reference.names[p.kind]] for p in layout.params
        ]  # the checkpoint tensors each parameter is assembled from
        nbytes = sum(reference.read(n).numel() * 2 for parts in names for n in parts)
        plans = []  # per parameter: segment length, run, and per rank its starts and group
        for p in layout.params:
            length = segment_length(p.dst[0].index)
            ranks = [
                (segment_starts(t.index, length), tensor_group(t.shape, 2, MIN_BYTES))
                for t in p.dst
            ]
            plans.append((length, tensor_run(p.dst[0].shape), ranks))

        def bare():
            for parts in names:
                for n in parts:
                    reference.read(n).sum()

        def assemble(parts: list[str]) -> torch.Tensor:
            got = [reference.read(n) for n in parts]
            return got[0] if len(got) == 1 else torch.cat(got)

        def expected_prints(table, plan):
            for starts, group in plan[2]:
                mine = table.expected(starts)
                if group > 1:
                    compose(mine, group)

        def expected():  # every rank's expected fingerprints, each tensor read once
            for p, plan in zip(layout.params, plans, strict=True):
                glob = GlobalTensor(reference, p)  # as diagnose does: no joining copy
                expected_prints(PrintTable.of(glob, torch.bfloat16, plan[0], plan[1]), plan)

        def expected_joined():  # the same from the joined tensors (the way before)
            for parts, plan in zip(names, plans, strict=True):
                expected_prints(PrintTable(assemble(parts), plan[0], plan[1]), plan)

        def timed(fn, n):
            fn()
            out = []
            for _ in range(n):
                start = time.perf_counter()
                fn()
                out.append(time.perf_counter() - start)
            return statistics.median(out)

        start = time.perf_counter()
        expected()  # the first call builds the coefficient tables
        first_s = time.perf_counter() - start
        globs = [assemble(parts) for parts in names]
        # Interleaved rounds: a busy machine's load drifts; each round times all three.
        rounds: dict = {bare: [], expected: [], expected_joined: []}
        for _ in range(reps):
            for fn, got in rounds.items():
                start = time.perf_counter()
                fn()
                got.append(time.perf_counter() - start)
        bare_s, expected_s, joined_s = (statistics.median(v) for v in rounds.values())
        read_s = timed(lambda: [reference.read(n) for parts in names for n in parts], reps)
        assemble_s = timed(lambda: [assemble(parts) for parts in names], reps)
        in_memory_s = timed(
            lambda: [
                expected_prints(PrintTable(g, plan[0], plan[1]), plan)
                for g, plan in zip(globs, plans, strict=True)
            ],
            reps,
        )
        sums_only_s = timed(lambda: [g.sum() for g in globs], reps)
        fp_diag_s = timed(lambda: run_diagnosis(ref, prints, 8, layers=[0], files=PrintFiles()), 1)
        full_diag_s = timed(lambda: run_diagnosis(ref, dump, 8, layers=[0]), 1)
        file_bytes = sum(f.stat().st_size for f in prints.glob("*.fingerprints.safetensors"))
        dump_bytes = sum(f.stat().st_size for f in dump.glob("*.safetensors"))
    return {
        "bytes": nbytes,
        "threads": torch.get_num_threads(),
        "bare_pass_s": bare_s,
        "expected_s": expected_s,
        "expected_first_call_s": first_s,
        "expected_joined_s": joined_s,
        "ratio_joined": bare_s / joined_s,
        "read_s": read_s,
        "read_and_assemble_s": assemble_s,
        "bare_GBps": nbytes / bare_s / 1e9,
        "expected_GBps": nbytes / expected_s / 1e9,
        "ratio": bare_s / expected_s,
        "in_memory_expected_GBps": nbytes / in_memory_s / 1e9,
        "in_memory_sum_GBps": nbytes / sums_only_s / 1e9,
        "in_memory_ratio": sums_only_s / in_memory_s,
        "fingerprint_diagnosis_s": fp_diag_s,
        "full_diagnosis_s": full_diag_s,
        "fingerprint_files_bytes": file_bytes,
        "full_dump_bytes": dump_bytes,
        "file_share": file_bytes / dump_bytes,
    }


def deepseek_v3_rank() -> tuple[int, int]:
    """(bf16 bytes, fingerprint bytes) of one DeepSeek-V3 rank at EP 8 / TP 8: 58 MoE layers
    of 32 of the 256 experts (w13 [4096, 7168], w2 [7168, 2048]: rows of 4 KiB in pairs, as
    save_fingerprints stores them); the rest (MLA attention, 3 dense layers, shared experts,
    embeddings: about 17.1B parameters) split 8 ways, its fingerprints taken at the experts'
    share."""
    w13, w2 = (32, 4096, 7168), (32, 7168, 2048)
    prints = (
        58 * 8 * sum(math.prod(s) // (s[-1] * tensor_group(s, 2)) for s in (w13, w2))
    )  # 8 bytes per stored fingerprint
    expert_bytes = 58 * 32 * 3 * 7168 * 2048 * 2
    rest_bytes = (671_000_000_000 - 58 * 256 * 3 * 7168 * 2048) * 2 // 8
    return expert_bytes + rest_bytes, prints + prints * rest_bytes // expert_bytes


def project(gpu: dict, cpu: dict) -> str:
    """A Markdown table: DeepSeek-V3 671B at TP 8 / EP 8 (bf16), full dump vs fingerprints."""
    rank, prints = deepseek_v3_rank()
    fp_rate = min(r["fingerprint_GBps"] for r in gpu["ranks"]) * 1e9
    dump = gpu["full_dump"]
    d2h, disk = dump["d2h_GBps"] * 1e9, dump["disk_write_GBps"] * 1e9
    expected = cpu["cpu"]["expected_GBps"] * 1e9
    rows = [
        ("written, 8 ranks", f"{8 * rank / 1e12:.2f} TB", f"{8 * prints / 1e9:.2f} GB"),
        ("host memory per rank", f"{rank / 1e9:.0f} GB", f"{prints / 1e6:.0f} MB"),
        (
            "time on the engine",
            f"{rank / d2h:.0f} s to the host per rank, {8 * rank / disk / 60:.0f} min to disk",
            f"{rank / fp_rate:.2f} s per rank (GPUs in parallel)",
        ),
        (
            "expected side, CPU",
            "reads the checkpoint and all dumps",
            f"{8 * rank / expected / 60:.1f} min from memory (checkpoint only)",
        ),
    ]
    lines = ["| DeepSeek-V3 671B, TP 8 / EP 8, bf16 | full dump | fingerprints |", "|---|---|---|"]
    return "\n".join(lines + [f"| {a} | {b} | {c} |" for a, b, c in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["gpu", "cpu", "project"])
    parser.add_argument("--gpu-json", default=None, help="project: the gpu run's --json")
    parser.add_argument("--cpu-json", default=None, help="project: the cpu run's --json")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", default=None)
    parser.add_argument("--sweep", action="store_true", help="try a few kernel tile sizes")
    args = parser.parse_args()
    if args.what == "project":
        gpu, cpu = (json.loads(Path(f).read_text()) for f in (args.gpu_json, args.cpu_json))
        print(project(gpu, cpu))
        return
    out: dict = {"torch": torch.__version__}
    if args.what == "gpu":
        out["device"] = torch.cuda.get_device_name()
        out["ranks"] = [
            bench_gpu(m, args.reps, args.sweep) for m in ("llama3-70b", "qwen3-235b-a22b")
        ]
        out["full_dump"] = bench_full_dump_costs()
    else:
        out["cpu"] = bench_cpu(args.reps)
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
