"""How fast the explorer answers a parameter or step change (targets: first view of a
parameter p50 <= 150 ms, step p50 <= 30 ms).

Run: ``python benchmarks/bench_explorer.py``.

Each change is made the way the page makes it (setting ``.value`` of the
parameter dropdown or step slider); the observers run synchronously, so the
time until ``.value`` returns is the time until the new PNG is in the picture
widget. Parameter changes are timed cold (the first view of a parameter:
diagram model + matplotlib render + PNG) and warm (a revisit); sync runs are
cached either way. The cold view is also split into its parts, measured on the
same parameters in the same run: the diagram model (rasters, bands, steps),
the explorer's PIL picture beside the matplotlib figure of the same diagram
(the path the explorer took before; both PNG), and the step strip. The rect-based
pictures the explorer drew before (one rect per block, a "drawn by status"
fallback) no longer exist, so there is no old path left to time beside them.
"""

from __future__ import annotations

import statistics
import time

from syncviz import Parallel
from syncviz.widgets.explorer import Explorer

CASES = [
    ("llama3-8b", Parallel(tp=2), Parallel(tp=4)),
    ("llama3-70b", Parallel(tp=4), Parallel(tp=8)),
    ("qwen2-57b-a14b", Parallel(tp=2, ep=2), Parallel(tp=4)),
]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return 1000 * (time.perf_counter() - start)


def quantiles(ms: list[float]) -> str:
    if not ms:
        return "(none)"
    ms = sorted(ms)
    p90 = ms[min(len(ms) - 1, round(0.9 * (len(ms) - 1)))]
    return f"p50 {statistics.median(ms):7.1f} ms  p90 {p90:7.1f} ms  (n={len(ms)})"


def measure(explorer: Explorer) -> dict[str, list[float]]:
    """Cold and warm parameter changes, every step of every parameter, and the parts (ms)."""
    from syncviz.diagram import layout_diagram, render
    from syncviz.diagram.model import frame
    from syncviz.diagram.pil import frame_png

    keys = [key for _, key in explorer.param.options]
    first = explorer.param.value

    def show(key: str) -> None:
        explorer.param.value = key

    out: dict[str, list[float]] = {"cold": [], "warm": [], "step": []}
    out["cold"] = [timed(lambda k=k: show(k)) for k in keys if k != first]
    out["warm"] = [timed(lambda k=k: show(k)) for k in keys for _ in range(2)]
    for key in keys:
        show(key)
        for i in range(1, explorer.step.max + 1):
            out["step"].append(timed(lambda i=i: setattr(explorer.step, "value", i)))
    result, report = explorer.result, explorer.report
    from syncviz.diagram.pil_layout import layout_png

    out.update(model=[], figure=[], pil=[], strip=[])
    for key in keys:
        holder = {}
        out["model"].append(
            timed(lambda k=key, h=holder: h.update(d=layout_diagram(result, k, report)))
        )
        out["figure"].append(timed(lambda h=holder: render(h["d"])._repr_png_()))
        out["pil"].append(timed(lambda h=holder: layout_png(h["d"])))
        if holder["d"].steps:
            f = frame(holder["d"], 1)
            out["strip"].append(timed(lambda f=f: frame_png(f)))
    return out


def main() -> None:
    for model, src, dst in CASES:
        ms = measure(Explorer(model, src, dst))
        print(f"{model} src tp{src.tp} ep{src.ep} -> dst tp{dst.tp} (scaled)")
        print(f"  parameter, first view: {quantiles(ms['cold'])}")
        print(f"  parameter, revisit:    {quantiles(ms['warm'])}")
        print(f"  step:                  {quantiles(ms['step'])}")
        print(f"    parts: diagram model {quantiles(ms['model'])}")
        print(f"           PIL picture   {quantiles(ms['pil'])}")
        print(f"           matplotlib    {quantiles(ms['figure'])}")
        ratio = statistics.median(ms["figure"]) / statistics.median(ms["pil"])
        print(f"           matplotlib / PIL (p50): {ratio:.1f}x")
        print(f"           step strip    {quantiles(ms['strip'])}")


if __name__ == "__main__":
    main()
