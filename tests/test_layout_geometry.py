"""The layout view's geometry as drawn: every block label inside its own column (matplotlib
Text extents and PIL's label boxes) for the README's MLA and Llama pictures (rows: labels
beside them; o_proj's columns: labels above them), and legends
that name the sub-blocks drawn (MLA's nope/rope rows of q, k_nope/v rows of kv_b)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from syncviz import Parallel, preset
from syncviz.check import check
from syncviz.diagram import layout_diagram, render
from syncviz.diagram.layout_geometry import SIDES, label_texts, legend_entries
from syncviz.diagram.pil_layout import label_boxes, layout_png
from syncviz.run.inprocess import run_sync

ATTN = "model.model.layers.0.self_attn.{}.weight"
QKV = ATTN.format("qkv_proj")
# The pictures of scripts/make_figures.py: (preset, src tp, dst tp, real sizes, synchronizer).
RUNS = {
    "deepseek-v3": ("deepseek-v3", 2, 4, True, "corrected"),
    "moonlight": ("moonlight-16b-a3b", 2, 4, False, "corrected"),
    "llama3-8b": ("llama3-8b", 2, 2, False, "chatlearn"),
}
PICTURES = [
    ("deepseek-v3", ATTN.format("q_b_proj")),
    ("deepseek-v3", ATTN.format("kv_b_proj")),
    ("moonlight", ATTN.format("q_proj")),
    ("moonlight", ATTN.format("kv_b_proj")),
    ("llama3-8b", QKV),
    ("llama3-8b", ATTN.format("o_proj")),  # labels above columns
    ("moonlight", ATTN.format("o_proj")),
]


@pytest.fixture(scope="module")
def diagrams():
    """One layer-0 run per model and one diagram per parameter, made on first use (the
    real DeepSeek-V3 runs on ids)."""
    made: dict = {}

    def get(run: str, key: str):
        if (run, key) not in made:
            result, report = _result(run)
            made[run, key] = layout_diagram(result, key, report)
        return made[run, key]

    def _result(run: str):
        if run not in made:
            name, s, d, real, synchronizer = RUNS[run]
            src, dst = Parallel(tp=s), Parallel(tp=d)
            spec = preset(name) if real else preset(name).scaled(src, dst)
            provenance = "symbolic" if real else "materialized"
            result = run_sync(
                spec, src, dst, synchronizer=synchronizer, layers=[0], provenance=provenance
            )
            made[run] = (result, check(result, synchronizer))
        return made[run]

    return get


def _assert_in_columns(labels, panels, axis: int, size: tuple[int, int]) -> int:
    """Each label (side, text, box) lies, across the block axis (x beside rows, y above
    columns), between the previous column's panels (or the picture's edge) and its own
    side's panels, and inside the picture."""
    lo, hi = (0, 2) if axis == 0 else (1, 3)
    start = {s: min(p["box"][lo] for p in panels if p["side"] == s) for s in SIDES}
    end = {s: max(p["box"][hi] for p in panels if p["side"] == s) for s in SIDES}
    for side, text, box in labels:
        k = SIDES.index(side)
        before = 0.0 if k == 0 else end[SIDES[k - 1]]
        assert box[lo] >= before, f"{side} label {text!r} starts at {box[lo]:.1f}, not {before}"
        assert box[hi] <= start[side], f"{side} label {text!r} ends at {box[hi]:.1f}, in its panel"
        assert box[0] >= 0 and box[2] <= size[0] and box[1] >= 0 and box[3] <= size[1]
    return len(labels)


@pytest.mark.parametrize(("run", "key"), PICTURES)
def test_matplotlib_labels_stay_in_their_columns(diagrams, run, key):
    """matplotlib: every block label's drawn extent (Agg text metrics) lies inside its own
    column: past the panels before it (or the figure's edge), short of its own panel."""
    d = diagrams(run, key)
    figure = render(d)
    renderer = FigureCanvasAgg(figure.fig).get_renderer()
    height = figure.size_px[1]
    panels = figure.panel_boxes()
    texts = label_texts(d)
    labels = []
    for t in figure.fig.axes[0].texts:
        if t.get_text() not in texts:
            continue  # side headings and panel titles
        ext = t.get_window_extent(renderer)
        box = (ext.x0, height - ext.y1, ext.x1, height - ext.y0)  # from the top left
        labels.append((_side(panels, box, d.axis), t.get_text(), box))
    assert {side for side, *_ in labels} == set(SIDES)
    assert _assert_in_columns(labels, panels, d.axis, figure.size_px) >= 3 * len(d.dst)


def _side(panels, box, axis: int) -> str:
    """The side of the first panel (trainer, holds, expected) beside which a label sits:
    its along-axis span holds the label's middle, and it starts after the label across."""
    mid = (box[1] + box[3]) / 2 if axis == 0 else (box[0] + box[2]) / 2
    a, b, across, start = (1, 3, 2, 0) if axis == 0 else (0, 2, 3, 1)
    return next(
        p["side"]
        for p in panels
        if p["box"][a] <= mid <= p["box"][b] and p["box"][start] >= box[across]
    )


@pytest.mark.parametrize(("run", "key"), PICTURES)
def test_pil_labels_stay_in_their_columns(diagrams, run, key):
    """PIL (the Explorer's renderer): every label box the layout computes, in the font it
    draws with, lies inside its own column, as in the matplotlib picture."""
    d = diagrams(run, key)
    png, panels = layout_png(d)
    boxes = label_boxes(d)
    assert {b["text"] for b in boxes} <= label_texts(d)
    labels = [(b["side"], b["text"], b["box"]) for b in boxes]
    assert {side for side, *_ in labels} == set(SIDES)
    size = Image.open(io.BytesIO(png)).size
    assert _assert_in_columns(labels, panels, d.axis, size) >= 3 * len(d.dst)


@pytest.mark.parametrize(
    ("run", "param", "words"),
    [
        ("deepseek-v3", "q_b_proj", ["Q heads (nope, rope)"]),
        ("deepseek-v3", "kv_b_proj", ["K heads (k_nope)", "V heads (v)"]),
        ("moonlight", "q_proj", ["Q heads (nope, rope)"]),
        ("moonlight", "kv_b_proj", ["K heads (k_nope)", "V heads (v)"]),
        ("llama3-8b", "qkv_proj", ["Q heads", "K heads", "V heads"]),
    ],
)
def test_legend_names_the_sub_blocks_drawn(diagrams, run, param, words):
    """The legend (matplotlib's entries and the words PIL draws) names MLA's head parts:
    nope/rope rows of q, k_nope and v rows of kv_b; Llama's fused QKV has none (the
    faithful port's scramble adds the checker's entry)."""
    d = diagrams(run, ATTN.format(param))
    assert [w for _, w in legend_entries(d)] == words
    legend = render(d).fig.legends[0]
    drawn = [t.get_text() for t in legend.get_texts()]
    assert drawn[: len(words)] == words
    assert drawn[len(words) :] == (["not right (checker)"] if d.wrong_count else [])
