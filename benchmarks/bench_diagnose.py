"""What a diagnosis costs next to reading the same files: time and peak memory, side by side.

Run: ``python benchmarks/bench_diagnose.py`` (``--layers 2 --tp 8`` by default).

Generates a random bf16 checkpoint at the exact llama3-8b shapes (hidden 4096,
32 heads, 8 K/V heads, FFN 14336, vocab 128256) with ``--layers`` layers, and
two dumps cut from it for vLLM TP ``--tp``: a correct one, and one with bugs
planted (tp 0's qkv and gate_up on every rank; lm_head of tp 1 holding tp 0's
rows), so the look-up of wrong segments is measured too. Each measurement runs
in a fresh process (its peak RSS is its own), after one untimed read that warms
the page cache; the floor reads every checkpoint and dump tensor once with
safetensors, one tensor at a time, as the diagnosis does.
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
    from safetensors import safe_open

    from syncviz.diagnose import diagnose

    extra = {}
    start = time.perf_counter()
    if mode == "read":
        files = sorted(Path(ref).glob("*.safetensors")) + sorted(Path(dump).glob("*.safetensors"))
        total = 0
        for path in files:
            with safe_open(str(path), "pt") as f:
                for name in f.keys():  # noqa: SIM118 (a safe_open handle is not a dict)
                    total += f.get_tensor(name).clone().numel()
        extra["elements"] = total
    else:
        report = diagnose(ref, dump, tp)
        extra["counts"] = report.counts()
        extra["first_problem"] = next((line for p in report.bad() for line in p.lines()), "")
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(json.dumps({"seconds": seconds, "peak_gib": peak, **extra}))


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
        f"{'case':<14} {'read s':>8} {'diagnose s':>11} {'ratio':>6} "
        f"{'read GiB':>9} {'diagnose GiB':>13} {'ratio':>6}  result"
    )
    for label, dump in (("correct dump", good), ("planted bugs", buggy)):
        _measure("read", ref, dump, args.tp)  # warm the page cache
        reads, diags = [], []
        for _ in range(args.repeats):  # alternate, so both see the same cache state
            reads.append(_measure("read", ref, dump, args.tp))
            diags.append(_measure("diagnose", ref, dump, args.tp))
        read = min(reads, key=lambda r: r["seconds"])
        diag = min(diags, key=lambda r: r["seconds"])
        print(
            f"{label:<14} {read['seconds']:8.2f} {diag['seconds']:11.2f}"
            f" {diag['seconds'] / read['seconds']:6.2f} {read['peak_gib']:9.2f}"
            f" {diag['peak_gib']:13.2f} {diag['peak_gib'] / read['peak_gib']:6.2f}"
            f"  {diag['counts']}"
        )
        if diag["first_problem"]:
            print(f"{'':<14} first problem: {diag['first_problem'].strip()}")


if __name__ == "__main__":
    main()
