"""How fast the explorer answers a parameter or step change (target: under 150 ms).

Run: ``python benchmarks/bench_explorer.py``.

Each change is made the way the page makes it (setting ``.value`` of the
parameter dropdown or step slider); the observers run synchronously, so the
time until ``.value`` returns is the time until the new PNG is in the image
widget. Parameter changes are timed twice: cold (the first view of a
parameter: diagram model + matplotlib render) and warm (a revisit, or after
:meth:`Explorer.prefetch`); sync runs are cached either way.
"""

from __future__ import annotations

import statistics
import time

from syncviz import Parallel
from syncviz.widgets.explorer import Explorer

CASES = [
    ("llama3-8b", Parallel(tp=2), Parallel(tp=4)),
    ("qwen2-57b-a14b", Parallel(tp=2, ep=2), Parallel(tp=4)),
]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return 1000 * (time.perf_counter() - start)


def quantiles(ms: list[float]) -> str:
    ms = sorted(ms)
    p90 = ms[min(len(ms) - 1, round(0.9 * (len(ms) - 1)))]
    return f"p50 {statistics.median(ms):7.1f} ms  p90 {p90:7.1f} ms  (n={len(ms)})"


def measure(explorer: Explorer) -> tuple[list[float], list[float], list[float]]:
    """Cold and warm parameter changes, then every step of every parameter (ms)."""
    keys = [key for _, key in explorer.param.options]
    first = explorer.param.value

    def show(key: str) -> None:
        explorer.param.value = key

    cold = [timed(lambda k=k: show(k)) for k in keys if k != first]
    explorer.prefetch()
    warm = [timed(lambda k=k: show(k)) for k in keys for _ in range(2)]
    steps = []
    for key in keys:
        show(key)
        for i in range(1, explorer.step.max + 1):
            steps.append(timed(lambda i=i: setattr(explorer.step, "value", i)))
    return cold, warm, steps


def main() -> None:
    for model, src, dst in CASES:
        cold, warm, steps = measure(Explorer(model, src, dst))
        print(f"{model} src tp{src.tp} ep{src.ep} -> dst tp{dst.tp} (scaled)")
        print(f"  parameter, cold: {quantiles(cold)}")
        print(f"  parameter, warm: {quantiles(warm)}")
        print(f"  step:            {quantiles(steps)}")


if __name__ == "__main__":
    main()
