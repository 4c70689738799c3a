"""How fast the explorer answers a parameter or step change (targets: first view of a
parameter p50 <= 150 ms, step p50 <= 30 ms), beside the eager path it took before.

Run: ``python benchmarks/bench_explorer.py [--rounds N] [--real-sizes] [--open] [--journey]``.

``--journey`` times only blocks' journeys, picked as the page picks them (setting the
block list's ``.value``: the journey's words and its picture of steps), at real sizes
beside ``scaled=True`` in the same process, interleaved, on o_proj and qkv_proj of
llama3-8b tp2 -> tp4 and llama3-70b tp8 -> tp16, each journey cold (the run's
journeys forgotten first; the vLLM ranks' local maps are kept from the parameter's
earlier blocks, as on the page); and the journey alone (``block_journey``, right after,
with the collector running), without its picture (target: at most 1 s at real sizes
on the 2-core machine).

``--open`` times only the opening, constructor call to first picture (the PNG is in
the picture widget when ``Explorer(...)`` returns), at real sizes beside
``scaled=True`` in the same process, interleaved, for llama3-8b tp2 -> tp4,
llama3-70b tp8 -> tp16 and qwen2-57b-a14b tp2 ep2 -> tp4 (targets: real at most
2x scaled and 1.5 s), the hover words p50 there (target 50 ms) and a block's journey
(the second block, picked as the page picks it: its words and its picture of steps;
target 1 s).

Each change is made the way the page makes it (setting ``.value`` of the
parameter dropdown or step slider); the observers run synchronously, so the
time until ``.value`` returns is the time until the new PNG is in the picture
widget. A first view is timed cold (picture and step caches emptied before each
round; the font's rendered strings are kept for the process, as in a notebook),
a revisit warm; sync runs are cached either way.

Side by side, on the same parameters, interleaved so that load hits both alike:

- *eager* (the explorer's path before): replay every step of the parameter
  (``journey.param_steps``), the diagram model with those steps, the PIL picture
  written by PIL's PNG encoder with text rendered anew each time, and the report's
  text for the status line;
- *lazy* (the path now): the diagram model without steps (they are replayed when
  the slider or a hover first needs them), the PIL picture written unfiltered at
  zlib level 1 with rendered text kept.

Then the parts of a first view (diagram model, PIL picture, matplotlib figure of
the same diagram for scale), the step strip, and a hover (the first one on a
parameter replays its steps). Last, on a run of every layer, the first view of
layer 0's parameters beside those of layers 1-3 (their kind drawn already, same
ids: the diagram is reused, only the picture is drawn). ``--real-sizes`` adds
llama3-8b at its real sizes (a symbolic run): the opening, every first view, a
hover and two steps, and the peak resident memory (slow: a minute or more).
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
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


def _pil_encoder(image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def eager_view(result, report, key: str) -> bytes:
    """The first view as the explorer drew it before: steps, model, PIL PNG, status text."""
    from PIL import ImageFont

    import syncviz.diagram.pil_layout as pil_layout
    from syncviz.diagram.model import layout_diagram
    from syncviz.journey import param_steps

    steps = param_steps(result, key)
    d = layout_diagram(result, key, report, steps=steps)
    encoder, font = pil_layout.png_bytes, pil_layout._font
    pil_layout.png_bytes = _pil_encoder
    pil_layout._font = lambda size=pil_layout.FONT_PX: ImageFont.load_default(size=size)
    try:
        png, _ = pil_layout.layout_png(d)
    finally:
        pil_layout.png_bytes, pil_layout._font = encoder, font
    report.text().splitlines()[0]
    return png


def lazy_view(result, report, key: str) -> bytes:
    """The first view as the explorer draws it now (the same calls, outside the widget)."""
    from syncviz.diagram.model import layout_diagram
    from syncviz.diagram.pil_layout import layout_png

    return layout_png(layout_diagram(result, key, report, steps=[]))[0]


def measure(explorer: Explorer, rounds: int) -> dict[str, list[float]]:
    """Cold and warm parameter changes, eager vs lazy, every step, hovers, the parts (ms)."""
    from syncviz.diagram import layout_diagram, render
    from syncviz.diagram.model import frame
    from syncviz.diagram.pil import frame_png
    from syncviz.diagram.pil_layout import layout_png

    keys = [key for _, key in explorer.param.options]

    def show(key: str) -> None:
        explorer.param.value = key

    out: dict[str, list[float]] = {k: [] for k in ("cold", "cold1", "warm", "step", "hover")}
    for r in range(rounds):
        explorer.session.forget()
        order = keys[1:] + keys[:1]  # the one on screen last, so that every change is one
        cold = [timed(lambda k=k: show(k)) for k in order]
        out["cold"] += cold
        if r == 0:
            out["cold1"] = cold
    out["warm"] = [timed(lambda k=k: show(k)) for k in keys for _ in range(2)]
    for key in keys:
        show(key)
        panel = next(p for p in explorer.image.panels if p["side"] == "vLLM holds")
        ni, nj = panel["cells"]
        cells = [(0, 0), (ni // 2, nj // 3), (ni - 1, nj - 1)]
        for i, j in cells:
            cell = [panel["side"], panel["rank"], i, j]
            out["hover"].append(timed(lambda c=cell: setattr(explorer.image, "hover", c)))
        for i in range(1, explorer.step.max + 1):
            out["step"].append(timed(lambda i=i: setattr(explorer.step, "value", i)))
    result, report = explorer.result, explorer.report
    out.update(eager=[], lazy=[], model=[], figure=[], pil=[], strip=[])
    for _ in range(rounds):
        for key in keys:
            out["eager"].append(timed(lambda k=key: eager_view(result, report, k)))
            out["lazy"].append(timed(lambda k=key: lazy_view(result, report, k)))
    for key in keys:
        holder = {}
        out["model"].append(
            timed(lambda k=key, h=holder: h.update(d=layout_diagram(result, k, report, steps=[])))
        )
        out["figure"].append(timed(lambda h=holder: render(h["d"])._repr_png_()))
        out["pil"].append(timed(lambda h=holder: layout_png(h["d"])))
        d = layout_diagram(result, key, report)
        if d.steps:
            f = frame(d, 1)
            out["strip"].append(timed(lambda f=f: frame_png(f)))
    return out


def measure_layers(model: str, src: Parallel, dst: Parallel) -> dict[str, list[float]]:
    """First views on a run of every layer: layer 0 (fresh) and layers 1-3 (kind reused)."""
    explorer = Explorer(model, src, dst, layer=-1, scaled=True)
    explorer.param.value = explorer.param.options[-1][1]  # off layers 0-3
    explorer.session.forget()
    out: dict[str, list[float]] = {"layer0": [], "later": []}
    for _, key in explorer.param.options:
        layer = key.split("layers.")[1].split(".")[0] if "layers." in key else None
        if layer in ("0", "1", "2", "3"):
            ms = timed(lambda k=key: setattr(explorer.param, "value", k))
            out["layer0" if layer == "0" else "later"].append(ms)
    return out


def measure_real_sizes() -> None:
    """llama3-8b tp2 -> tp4 layer 0 at real sizes: opening, first views, hover, steps."""
    import resource

    start = time.perf_counter()
    ex = Explorer("llama3-8b", Parallel(tp=2), Parallel(tp=4), scaled=False)
    opened = ex.param.value.split("layers.0.")[-1]
    print("llama3-8b src tp2 -> dst tp4, layer 0, real sizes (symbolic run)")
    print(f"  open (run, check, {opened}): {time.perf_counter() - start:.2f} s {ex.message.value}")
    for _, key in ex.param.options:
        if key != ex.param.value:
            ms = timed(lambda k=key: setattr(ex.param, "value", k))
            print(f"  first view {key.split('layers.0.')[-1]}: {ms:.0f} ms")
    panel = next(p for p in ex.image.panels if p["side"] == "vLLM holds")
    first = timed(lambda: setattr(ex.image, "hover", [panel["side"], panel["rank"], 0, 0]))
    second = timed(lambda: setattr(ex.image, "hover", [panel["side"], panel["rank"], 1, 1]))
    print(f"  hover: first {first:.0f} ms, next {second:.0f} ms")
    steps = [timed(lambda i=i: setattr(ex.step, "value", i)) for i in (1, 2)]
    print(f"  step 1 (replays the steps): {steps[0]:.0f} ms, step 2: {steps[1]:.0f} ms")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"  peak resident memory {peak:.2f} GiB")


OPEN_CASES = [
    ("llama3-8b", Parallel(tp=2), Parallel(tp=4)),
    ("llama3-70b", Parallel(tp=8), Parallel(tp=16)),
    ("qwen2-57b-a14b", Parallel(tp=2, ep=2), Parallel(tp=4)),
]


def hover_ms(explorer: Explorer) -> list[float]:
    """Hover words of nine cells of every panel of the picture on screen (ms each)."""
    out = []
    for panel in explorer.image.panels:
        ni, nj = panel["cells"]
        for i, j in itertools.product((0, ni // 2, ni - 1), (0, nj // 3, nj - 1)):
            cell = [panel["side"], panel["rank"], i, j]
            out.append(timed(lambda c=cell: setattr(explorer.image, "hover", c)))
            assert explorer.image.words_for == cell and explorer.image.words
    return out


def load_average() -> str:
    """The machine's 1-minute load average (other work sways the wall clock)."""
    return f"{os.getloadavg()[0]:.1f}"


def measure_open(rounds: int) -> None:
    """Open to first picture, real sizes beside scaled (interleaved), and hover words.

    Each opening is cold: the eager forms of lazy maps kept from earlier runs (a map
    shifted from one seen before reuses its form) are forgotten first, as in a fresh
    kernel. The first real-size opening of the process also pays torch's one-time import
    of ``torch.distributed.tensor`` (its first dispatch of a tensor subclass).
    """
    from syncviz.provenance.regions import forget_eager_forms

    print("open to first picture (Explorer(...) returns with the PNG shown);", end=" ")
    print(f"load {load_average()}")
    for model, src, dst in OPEN_CASES:
        opened: dict[bool, list[float]] = {True: [], False: []}
        cpu: dict[bool, list[float]] = {True: [], False: []}  # the process's CPU time
        hovers: list[float] = []
        journeys: list[float] = []
        journeys_cpu: list[float] = []
        for _ in range(rounds):
            for scaled in (True, False):
                forget_eager_forms()
                start, used = time.perf_counter(), time.process_time()
                ex = Explorer(model, src, dst, scaled=scaled)
                opened[scaled].append(1000 * (time.perf_counter() - start))
                cpu[scaled].append(1000 * (time.process_time() - used))
                assert ex.image.value[:4] == b"\x89PNG", ex.message.value
                if not scaled:
                    hovers += hover_ms(ex)
                    if len(ex.block.options) > 1:  # the page's path: pick a block
                        used = time.process_time()
                        journeys.append(timed(lambda ex=ex: setattr(ex.block, "value", 1)))
                        journeys_cpu.append(1000 * (time.process_time() - used))
                        assert ex.journey_image.value[:4] == b"\x89PNG", ex.journey.value
        real, scaled = statistics.median(opened[False]), statistics.median(opened[True])
        sizes = f"src tp{src.tp} ep{src.ep} -> dst tp{dst.tp}"
        print(f"  {model} {sizes} on {ex.param.value.split('.')[-2]}:")
        print(f"    scaled {quantiles(opened[True])}")
        print(f"    real   {quantiles(opened[False])}")
        print(f"    real / scaled (p50): {real / scaled:.2f}x")
        real, scaled = statistics.median(cpu[False]), statistics.median(cpu[True])
        print("    CPU time (all threads; less swayed by other load than the wall clock):")
        print(f"      scaled {quantiles(cpu[True])}")
        print(f"      real   {quantiles(cpu[False])}")
        print(f"      real / scaled (p50): {real / scaled:.2f}x")
        print(f"    hover words at real sizes: {quantiles(hovers)}")
        if journeys:  # its words and its picture of steps, answered from maps
            print(f"    a block's journey at real sizes: {quantiles(journeys)}")
            print(f"      its CPU time:                   {quantiles(journeys_cpu)}")
        print(f"    load {load_average()}")


JOURNEY_CASES = [
    ("llama3-8b", Parallel(tp=2), Parallel(tp=4)),
    ("llama3-70b", Parallel(tp=8), Parallel(tp=16)),
]
JOURNEY_PARAMS = ("self_attn.o_proj.weight", "self_attn.qkv_proj.weight")


def pick_block(explorer: Explorer, block: int) -> None:
    """Pick a block as the page does (the same one again: shown anew, as a click does)."""
    if explorer.block.value == block:
        explorer._refresh_journey()
    else:
        explorer.block.value = block


def journey_ms(explorer: Explorer, name: str) -> tuple[list[float], list[float]]:
    """Cold journeys of three blocks of the parameter ending ``name``: on the page (words
    and picture), and the journey alone (ms each)."""
    from syncviz.journey import block_journey

    key = next(k for _, k in explorer.param.options if k.endswith(name))
    explorer.param.value = key
    run = explorer.session.run
    assert run is not None
    blocks = len(explorer.block.options)
    page, alone = [], []
    for block in sorted({1 % blocks, blocks // 2, blocks - 1}):
        run.journeys.clear()
        page.append(timed(lambda b=block: pick_block(explorer, b)))
        assert explorer.journey_image.value[:4] == b"\x89PNG", explorer.journey.value
        alone.append(timed(lambda b=block: block_journey(run.result, key, b)))
    return page, alone


def measure_journeys(rounds: int) -> None:
    """Blocks' journeys on the page and alone, real sizes beside scaled (interleaved)."""
    print(f"a block's journey, picked on the page (words and picture); load {load_average()}")
    for model, src, dst in JOURNEY_CASES:
        explorers = {scaled: Explorer(model, src, dst, scaled=scaled) for scaled in (True, False)}
        print(f"  {model} src tp{src.tp} -> dst tp{dst.tp}:")
        for name in JOURNEY_PARAMS:
            page: dict[bool, list[float]] = {True: [], False: []}
            alone: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(rounds):
                for scaled, explorer in explorers.items():
                    on_page, by_itself = journey_ms(explorer, name)
                    page[scaled] += on_page
                    alone[scaled] += by_itself
            short = name.split(".")[1]
            for what, ms in (("on the page", page), ("the journey alone", alone)):
                real, scaled = statistics.median(ms[False]), statistics.median(ms[True])
                print(f"    {short}, {what}:")
                print(f"      scaled {quantiles(ms[True])}")
                print(f"      real   {quantiles(ms[False])}")
                print(f"      real / scaled (p50): {real / scaled:.2f}x")
        print(f"    load {load_average()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="cold rounds per case")
    parser.add_argument("--real-sizes", action="store_true", help="add llama3-8b, real sizes")
    parser.add_argument("--open", action="store_true", help="time only the opening, real/scaled")
    parser.add_argument("--journey", action="store_true", help="time only blocks' journeys")
    args = parser.parse_args()
    if args.journey:
        measure_journeys(args.rounds)
        return
    if args.open:
        measure_open(args.rounds)
        return
    for (model, src, dst), scaled in itertools.product(CASES, (True, False)):
        ms = measure(Explorer(model, src, dst, scaled=scaled), args.rounds)
        sizes = "scaled" if scaled else "real sizes, the default"
        print(f"{model} src tp{src.tp} ep{src.ep} -> dst tp{dst.tp} ({sizes})")
        print(f"  parameter, first view: {quantiles(ms['cold'])}")
        print(f"    first round only:    {quantiles(ms['cold1'])}")
        print(f"  parameter, revisit:    {quantiles(ms['warm'])}")
        print(f"  step:                  {quantiles(ms['step'])}")
        print(f"  hover:                 {quantiles(ms['hover'])}")
        print(f"  first view, eager (before): {quantiles(ms['eager'])}")
        print(f"  first view, lazy (now):     {quantiles(ms['lazy'])}")
        ratio = statistics.median(ms["eager"]) / statistics.median(ms["lazy"])
        print(f"    eager / lazy (p50): {ratio:.2f}x")
        print(f"    parts: diagram model {quantiles(ms['model'])}")
        print(f"           PIL picture   {quantiles(ms['pil'])}")
        print(f"           matplotlib    {quantiles(ms['figure'])}")
        ratio = statistics.median(ms["figure"]) / statistics.median(ms["pil"])
        print(f"           matplotlib / PIL (p50): {ratio:.1f}x")
        print(f"           step strip    {quantiles(ms['strip'])}")
    model, src, dst = CASES[0]
    ms = measure_layers(model, src, dst)
    print(f"{model} src tp{src.tp} -> dst tp{dst.tp} (scaled), every layer")
    print(f"  first view, layer 0:    {quantiles(ms['layer0'])}")
    print(f"  first view, layers 1-3: {quantiles(ms['later'])}")
    if args.real_sizes:
        measure_real_sizes()


if __name__ == "__main__":
    main()
