"""How fast the oracle builds its metadata, and what materializing ids costs.

Run: ``python benchmarks/bench_oracle.py`` (``--no-ids`` skips the slow part).

Prints, per case, the time to build the layout of every parameter (metadata
only: index maps, names, blocks), the number of parameters and tensors, and,
for reference, the time to materialize the ids of every source and destination
tensor of one layer (tensor by tensor, so memory stays at one tensor).
"""

from __future__ import annotations

import argparse
import time

from syncviz import Parallel, SyncvizError, preset
from syncviz.oracle import describe, model_layout

CASES = [
    ("llama3-70b", Parallel(tp=8), Parallel(tp=16)),
    # The requested s=8, d=16 breaks the head rules for 28 heads (tried first below);
    # s=4 with ep=2 (8 HEP ranks) and d=4 are the largest valid sizes.
    ("qwen2-57b-a14b", Parallel(tp=8), Parallel(tp=16)),
    ("qwen2-57b-a14b", Parallel(tp=4, ep=2), Parallel(tp=4)),
]


def best_of(repeats: int, fn):
    """(first run's seconds, best run's seconds, result)."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times[0], min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-ids", action="store_true", help="skip materializing one layer's ids")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for name, src, dst in CASES:
        spec = preset(name)
        label = f"{name} s={src.tp} ep={src.ep} d={dst.tp}"
        try:
            first, best, layout = best_of(args.repeats, lambda: model_layout(spec, src, dst))  # noqa: B023
        except SyncvizError as err:
            print(f"{label}: not a valid layout ({err})")
            continue
        tensors = sum(len(p.src) + len(p.dst) for p in layout.params)
        pieces = sum(t.index.size_hint for p in layout.params for t in (*p.src, *p.dst))
        print(
            f"{label}: layout of {len(layout.params)} params, {tensors} tensors,"
            f" {pieces} regions built in {first * 1000:.1f} ms (first run),"
            f" {best * 1000:.1f} ms (best of {args.repeats})"
        )
        layer = layout.layer_params(0)
        _, seconds, _ = best_of(
            args.repeats,
            lambda: [p.describe(t.index) for p in layer for t in (*p.src, *p.dst)],  # noqa: B023
        )
        print(f"    describe every tensor of layer 0: {seconds * 1000:.1f} ms")
        if args.no_ids:
            continue
        elements, start = 0, time.perf_counter()
        for p in layer:
            for t in (*p.src, *p.dst):
                elements += t.index.ids().numel()
        seconds = time.perf_counter() - start
        print(
            f"    materialize ids of layer 0 (all src+dst tensors): {elements / 1e6:.0f} M ids"
            f" in {seconds:.2f} s ({elements / seconds / 1e6:.0f} M ids/s)"
        )
        qkv = layer[1]
        start = time.perf_counter()
        text = describe(qkv, qkv.dst[0].index.ids())
        seconds = time.perf_counter() - start
        print(
            f"    describe a materialized {list(qkv.dst[0].shape)} tensor: {seconds * 1000:.0f} ms"
        )
        print(f"      -> {text}")


if __name__ == "__main__":
    main()
