"""What a diagnosis costs next to reading the same files: time and peak memory, side by side.

Run: ``python benchmarks/bench_diagnose.py`` (``--layers 2 --tp 8`` by default).

Generates a random bf16 checkpoint at the exact llama3-8b shapes (hidden 4096,
32 heads, 8 K/V heads, FFN 14336, vocab 128256) with ``--layers`` layers, and
two dumps cut from it for vLLM TP ``--tp``: a correct one, and one with bugs
planted (tp 0's qkv and gate_up on every rank; lm_head of tp 1 holding tp 0's
rows), so the look-up of wrong segments is measured too. Each measurement runs
in a fresh process (its peak RSS is its own; mapped file pages count in it),
imports done before the clock starts, after one untimed pass that warms the
page cache. Two floors, both tensor by tensor as the diagnosis reads: "copy"
loads every checkpoint and dump tensor into process memory (safetensors maps
files lazily, so an untouched tensor is never read), "touch" makes one pass
over the mapped bytes (a sum of their 64-bit words) without copying.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path


def _child(mode: str, ref: str, dump: str, tp: int) -> None:
    """One measurement in this (fresh) process; prints seconds and peak RSS as JSON.

    Imports happen before the clock starts. The floor copies every tensor into
    process memory (safetensors maps files lazily: a tensor not touched is not read).
    """
    import torch
    from safetensors import safe_open

    from syncviz.diagnose import diagnose
    from syncviz.diagnose.segments import bits

    extra = {}
    start, cpu = time.perf_counter(), time.process_time()
    if mode in ("copy", "touch"):
        files = sorted(Path(ref).glob("*.safetensors")) + sorted(Path(dump).glob("*.safetensors"))
        total = 0
        for path in files:
            with safe_open(str(path), "pt") as f:
                for name in f.keys():  # noqa: SIM118 (a safe_open handle is not a dict)
                    t = f.get_tensor(name)
                    if mode == "copy":
                        total += t.clone().numel()
                    else:
                        total += int(bits(t).reshape(-1).view(torch.int64).sum() != 0)
        extra["elements"] = total
    else:
        report = diagnose(ref, dump, tp)
        extra["counts"] = report.counts()
        extra["first_problem"] = next((line for p in report.bad() for line in p.lines()), "")
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(json.dumps({"seconds": seconds, "cpu": cpu, "peak_gib": peak, **extra}))


def _measure(mode: str, ref: Path, dump: Path, tp: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(ref), str(dump), str(tp)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--tp", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", default=None, help="where to write the files (default: tmp)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, ref, dump, tp = args.child
        _child(mode, ref, dump, int(tp))
        return

    from syncviz import preset
    from syncviz.diagnose.fixtures import write_checkpoint, write_dumps

    spec = replace(preset("llama3-8b"), name="llama3-8b", num_layers=args.layers)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="bench_diagnose_"))
    ref, good, buggy = root / "ref", root / "dump-ok", root / "dump-bugs"
    start = time.perf_counter()
    if not (ref / "config.json").is_file():
        write_checkpoint(spec, ref)
        write_dumps(spec, ref, good, tp=args.tp)
        bugs = {"qkv": "shard0", "gate_up": "shard0", "lm_head": "tp0"}
        write_dumps(spec, ref, buggy, tp=args.tp, bugs=bugs)
    size = sum(p.stat().st_size for p in ref.rglob("*.safetensors")) / 2**30
    print(
        f"llama3-8b shapes, {args.layers} layers + embedding/lm_head, bf16, d={args.tp}:"
        f" checkpoint {size:.2f} GiB, each dump the same; files ready in"
        f" {time.perf_counter() - start:.0f} s ({root})"
    )
    print(
        "CPU seconds (user + system, all threads; stable on a shared machine), best of"
        f" {args.repeats}; wall seconds in brackets"
    )
    print(
        f"{'case':<14} {'copy':>13} {'touch':>13} {'diagnose':>13} {'vs copy':>8}"
        f" {'vs touch':>9} {'copy GiB':>9} {'diagnose GiB':>13}  result"
    )
    for label, dump in (("correct dump", good), ("planted bugs", buggy)):
        _measure("touch", ref, dump, args.tp)  # warm the page cache
        runs: dict[str, list[dict]] = {"copy": [], "touch": [], "diagnose": []}
        for _ in range(args.repeats):  # interleaved, so all see the same cache state
            for mode, seen in runs.items():
                seen.append(_measure(mode, ref, dump, args.tp))
        best = {mode: min(seen, key=lambda r: r["cpu"]) for mode, seen in runs.items()}
        copy, touch, diag = best["copy"], best["touch"], best["diagnose"]
        cells = " ".join(f"{r['cpu']:6.2f} [{r['seconds']:5.1f}]" for r in (copy, touch, diag))
        print(
            f"{label:<14} {cells} {diag['cpu'] / copy['cpu']:8.2f}"
            f" {diag['cpu'] / touch['cpu']:9.2f}"
            f" {copy['peak_gib']:9.2f} {diag['peak_gib']:13.2f}  {diag['counts']}"
        )
        if diag["first_problem"]:
            print(f"{'':<14} first problem: {diag['first_problem'].strip()}")


if __name__ == "__main__":
    main()
