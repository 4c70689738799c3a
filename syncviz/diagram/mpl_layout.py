"""The layout view in matplotlib: trainer rasters, movement bands, vLLM actual | expected.

Panels of one side stack along the axis that carries the blocks (rows for
QKV, columns for o_proj), to scale, so bands run straight from where a block
starts to where it lands. Wrong cells carry a magenta outline; a cell holding
more than one block is dotted; labels sit on the block axis, thinned so they
never overprint. With a step frame, the trainer cells it read are outlined in
black, the vLLM cells its result lands in in orange, and the vLLM panels show
the tensors as written by steps 1..k. At 100 dpi the default figure is at most 1100 px wide and no
text is smaller than 9 pt.

>>> from syncviz.diagram.model import layout_diagram
>>> from syncviz.run.inprocess import tiny_run
>>> result = tiny_run()
>>> fig = render_layout(layout_diagram(result, "model.model.layers.0.self_attn.qkv_proj.weight"))
>>> fig.size_px[0] <= 1100
True
"""

from __future__ import annotations

import functools

import numpy as np
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.figure import Figure as MplFigure
from matplotlib.patches import Patch

from syncviz.diagram import layout_geometry as scene
from syncviz.diagram.frames import READ, WROTE
from syncviz.diagram.layout_geometry import PanelLayout
from syncviz.diagram.model import LayoutDiagram, Panel
from syncviz.diagram.mpl_figure import DPI, Figure
from syncviz.diagram.palette import WRONG, WRONG_BAND, family_rgb
from syncviz.diagram.raster import small_work

WIDTH_IN = 10.8  # 1080 px at 100 dpi: fits a notebook cell
FONT = 9.0  # the smallest text in a figure, in points
MAX_FRAME_LINES = 4  # a step's "reads ..."/"writes ..." lines inside the figure
LEFT_IN, RIGHT_IN = 1.2, 0.4  # margins beside the plot (the trainer's labels sit left)
LABEL_OFFSET = 0.015  # a label's distance from its panel, in panel widths across


def render_layout(d: LayoutDiagram, width_in: float = WIDTH_IN) -> Figure:
    """Draw ``d``; ``Figure.cell_pixel(side, rank, i, j)`` locates any cell in the PNG."""
    with small_work(0):  # rasters are a few hundred cells a side
        return _render_layout(d, width_in)


def label_extent_px(texts, axis: int) -> float:
    """How far the widest of ``texts`` reaches across the block axis in PNG pixels, in the
    font metrics the figure draws with: its width beside rows, its height above columns.

    >>> 30 < label_extent_px({"Q0", "Q127 rope"}, 0) < 80 < label_extent_px({"Q0"}, 0) + 80
    True
    """
    extents = [_text_px(t)[0 if axis == 0 else 1] for t in texts]
    return max(extents, default=0.0)


@functools.cache
def _text_px(text: str) -> tuple[float, float]:
    """(width, height) of ``text`` at :data:`FONT` as Agg draws it at :data:`DPI`."""
    from matplotlib.font_manager import FontProperties

    font = FontProperties(size=FONT)
    w, h, _ = _measurer().get_text_width_height_descent(text, font, False)
    _, line, _ = _measurer().get_text_width_height_descent("lp", font, False)
    return float(w), float(max(h, line))  # one line is at least as tall as "lp"


@functools.cache
def _measurer():
    """An Agg renderer at the figures' dpi, only to measure text."""
    from matplotlib.backends.backend_agg import RendererAgg

    return RendererAgg(1, 1, DPI)


def _plot_h(lay: PanelLayout, plot_w: float) -> float:
    """The plot's height in inches: to the panels' aspect, within 3..7.5 in."""
    aspect = lay.span_along / lay.span_across if lay.axis == 0 else lay.span_across / lay.span_along
    return float(np.clip(plot_w * aspect * 1.5, 3.0, 7.5))


def _layout(d: LayoutDiagram, width_in: float) -> tuple[PanelLayout, float, float]:
    """The panel layout with room for every label, the left margin and the plot's width
    (inches): across, the x limits span 1.02 spans (axis 0) and the y limits 1.06 (axis 1)."""
    label_px = label_extent_px(scene.label_texts(d), d.axis) + scene.LABEL_CLEARANCE_PX
    left_in = max(LEFT_IN, label_px / DPI) if d.axis == 0 else LEFT_IN
    plot_w = width_in - left_in - RIGHT_IN

    def room(lay: PanelLayout) -> float:
        px = plot_w * DPI if lay.axis == 0 else _plot_h(lay, plot_w) * DPI
        per_unit = px / ((1.02 if lay.axis == 0 else 1.06) * lay.span_across)
        return lay.across * LABEL_OFFSET + label_px / per_unit

    return PanelLayout(d, label_room=room), left_in, plot_w


def _render_layout(d: LayoutDiagram, width_in: float) -> Figure:
    lay, left_in, plot_w = _layout(d, width_in)
    regions = d.regions()
    shown = regions[: scene.MAX_REGION_LINES]
    n_text = len(shown) + (1 if len(regions) > len(shown) else 0) + len(d.problems[:3])
    if d.frame is not None:
        n_text += 1 + len(_frame_lines(d))
    plot_h = _plot_h(lay, plot_w)
    top_h, line_h = 0.95, 0.2
    strip = _strip(d)  # step K: what it read -> what it wrote, as rasters
    below = 0.0 if strip is None else strip.shape[0] / DPI + 0.15
    fig_h = top_h + plot_h + 0.35 + line_h * n_text + below
    fig = MplFigure(figsize=(width_in, fig_h), dpi=DPI)
    ax = fig.add_axes(
        (
            left_in / width_in,
            (0.3 + line_h * n_text + below) / fig_h,
            plot_w / width_in,
            plot_h / fig_h,
        )
    )
    if strip is not None:
        h, w = strip.shape[:2]
        strip_ax = fig.add_axes((0.01, 0.05 / fig_h, w / DPI / width_in, h / DPI / fig_h))
        strip_ax.imshow(strip, interpolation="nearest", aspect="auto")
        strip_ax.set_axis_off()
    ax.set_axis_off()
    if d.axis == 0:
        ax.set_xlim(-0.01 * lay.span_across, lay.span_across * 1.01)
        ax.set_ylim(lay.span_along * 1.01, -0.01 * lay.span_along)
    else:
        ax.set_xlim(-0.01 * lay.span_along, lay.span_along * 1.01)
        ax.set_ylim(lay.span_across * 1.01, -0.05 * lay.span_across)
    placed: dict[tuple, tuple] = {}
    per_px_along = _data_per_px(fig, ax, d.axis)
    f = d.frame
    for s, i, p, r in scene.drawn_panels(d):
        if s == 1 and f is not None:  # the destination as written by steps 1..k
            r = f.filled[i].actual
        x0, x1, y0, y1 = lay.extent(s, i, p)
        ax.imshow(
            scene.panel_image(r), extent=(x0, x1, y1, y0), interpolation="nearest", aspect="auto"
        )
        ax.add_patch(_frame(x0, x1, y0, y1))
        placed[(scene.SIDES[s], p.rank)] = (ax, (x0, x1, y0, y1), r)
        if s == 1:
            _outline_wrong(ax, r, (x0, x1, y0, y1))
        marks = None if f is None else (f.read if s == 0 else f.wrote if s == 1 else [])
        if marks and marks[i] is not None:
            color = READ if s == 0 else WROTE
            _outline(ax, marks[i].numpy(), (x0, x1, y0, y1), color, "white", zorder=6)
        _labels(ax, lay, s, i, p, r, per_px_along)
        _panel_title(ax, lay, s, i, p, per_px_along)
    _bands(ax, lay, d)
    for c0, title in scene.side_titles(d, lay):
        xy = (c0, -0.01 * lay.span_along) if d.axis == 0 else (-0.01 * lay.span_along, c0)
        ax.text(
            *xy,
            title,
            ha="center" if d.axis == 0 else "right",
            va="bottom" if d.axis == 0 else "center",
            fontsize=FONT + 1,
            weight="bold",
            rotation=0 if d.axis == 0 else 90,
        )
    fig.text(
        0.5, 1 - 0.12 / fig_h, _wrap(d.title, width_in), ha="center", va="top", fontsize=FONT + 0.5
    )
    _legend(fig, d, fig_h)
    lines = [("WRONG " + t, WRONG) for t in shown]
    if len(regions) > len(shown):
        lines.append(
            (f"{len(regions) - len(shown)} further wrong regions: see the text form", "black")
        )
    lines += [(p, "black") for p in d.problems[:3]]
    if d.frame is not None:
        lines.append((d.frame.text, "black"))
        lines += [(t, "black") for t in _frame_lines(d)]
    for k, (line, color) in enumerate(lines):
        fig.text(
            0.01,
            (0.2 + below + line_h * (len(lines) - 1 - k)) / fig_h,
            _clip(line, width_in),
            fontsize=FONT,
            color=color if color == "black" else "#A0105A",
        )
    return Figure(fig, placed)


def _frame_lines(d: LayoutDiagram) -> list[str]:
    """The step's reads/writes lines shown in the figure; the rest are counted."""
    lines = d.frame.region_lines() if d.frame is not None else []
    if len(lines) <= MAX_FRAME_LINES:
        return lines
    rest = len(lines) - MAX_FRAME_LINES + 1
    return [*lines[: MAX_FRAME_LINES - 1], f"{rest} further reads/writes: see the text form"]


def _strip(d: LayoutDiagram) -> np.ndarray | None:
    """The step strip of ``d.frame`` (the Explorer's, from diagram.pil) as an RGB array."""
    if d.frame is None:
        return None
    import io

    from PIL import Image

    from syncviz.diagram.pil import frame_png

    # The big panels already show where the step read and wrote: only its tensors here.
    png = frame_png(d.frame, panels=False)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def _wrap(text: str, width_in: float) -> str:
    import textwrap

    return textwrap.fill(text, width=int(width_in * 72 / (FONT * 0.58)))


def _clip(text: str, width_in: float) -> str:
    n = int(width_in * 72 / (FONT * 0.56))
    return text if len(text) <= n else text[: n - 3] + "..."


def _data_per_px(fig, ax, axis: int) -> float:
    """Data units along the block axis per pixel of the saved PNG."""
    pos = ax.get_position()
    if axis == 0:
        lo, hi = ax.get_ylim()
        px = pos.height * fig.get_figheight() * DPI
    else:
        lo, hi = ax.get_xlim()
        px = pos.width * fig.get_figwidth() * DPI
    return abs(hi - lo) / max(px, 1)


def _frame(x0, x1, y0, y1):
    from matplotlib.patches import Rectangle

    return Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=0.8, ec="#333333")


def _outline_wrong(ax, r, extent) -> None:
    """A magenta (over black) outline around every connected set of not-right cells."""
    _outline(ax, r.status.numpy() != 0, extent, WRONG, "black", zorder=4)


def _outline(ax, bad: np.ndarray, extent, color, under, zorder: int) -> None:
    """An outline in ``color`` (over ``under``) around every connected set of marked
    cells; edges are merged into runs, so a big region costs a few lines, not one per cell."""
    if not bad.any():
        return
    segs = scene.outline_segments(bad, *extent)
    ax.add_collection(LineCollection(segs, colors=under, linewidths=2.6, zorder=zorder))
    ax.add_collection(LineCollection(segs, colors=color, linewidths=1.4, zorder=zorder + 1))


def _labels(ax, lay: PanelLayout, s: int, i: int, p: Panel, r, per_px: float) -> None:
    """Block labels along the block axis, chosen by diagram.labels (thinned to fit)."""
    min_gap = (FONT + 3) * DPI / 72 * per_px  # one line of text, in data units along
    if lay.axis == 1:
        min_gap *= 2.6  # horizontal labels need a few characters of room
    for (x, y), text in scene.block_labels(lay, s, i, p, r, lambda xy: xy, min_gap):
        # Left of rows (axis 0) or above columns (axis 1), a little off the panel.
        if lay.axis == 0:
            x, ha, va = x - lay.across * LABEL_OFFSET, "right", "center"
        else:
            y, ha, va = y - lay.across * LABEL_OFFSET, "center", "bottom"
        ax.text(x, y, text, ha=ha, va=va, fontsize=FONT, clip_on=False)


def _panel_title(ax, lay: PanelLayout, s: int, i: int, p: Panel, per_px: float) -> None:
    """'rank 3 tp1' beside the panel, on the far side from the labels."""
    x0, x1, y0, y1 = lay.extent(s, i, p)
    text = p.title.split(" ", 1)[-1]  # without the side's word
    if p.shared and s == 2:
        ranks = sorted({r for rs in p.shared.values() for r in rs})
        text += f", shares {len(p.shared)} blocks with rank {', '.join(map(str, ranks))}"
    # Only where there is room for the words: along rows, their lines; along columns, width.
    if lay.axis == 0:
        room = (y1 - y0) / per_px > 16 * (text.count("\n") + 1)
        x, y = x0 + lay.across * 0.02, y0
    else:
        room = (x1 - x0) / per_px > 9 * len(text)
        x, y = x0 + (x1 - x0) * 0.01, y0 + lay.across * 0.02
    if room:
        box = {"fc": "#333333", "ec": "none", "pad": 1, "alpha": 0.7}
        ax.text(x, y, text, ha="left", va="top", fontsize=FONT, color="white", bbox=box)


def _bands(ax, lay: PanelLayout, d: LayoutDiagram) -> None:
    """Trainer spans -> vLLM spans as filled quadrilaterals, block colour or magenta if wrong."""
    polys, colors, wrong_polys = [], [], []
    for b, poly in scene.band_polygons(d, lay):
        if b.wrong:
            wrong_polys.append(poly)
        else:
            polys.append(poly)
            colors.append((*family_rgb(d.table.families[b.block], d.table.shades[b.block]), 0.45))
    if polys:
        ax.add_collection(PolyCollection(polys, facecolors=colors, edgecolors="none", zorder=1))
    if wrong_polys:
        ax.add_collection(
            PolyCollection(
                wrong_polys,
                facecolors=(0.93, 0.2, 0.47, 0.55),
                edgecolors=WRONG_BAND,
                linewidths=0.5,
                zorder=2,
            )
        )


def _legend(fig: MplFigure, d: LayoutDiagram, fig_h: float) -> None:
    handles = [
        Patch(facecolor=family_rgb(f), edgecolor="#333333", label=words)
        for f, words in scene.legend_entries(d)
    ]
    if d.wrong_count:
        handles.append(Patch(facecolor="white", edgecolor=WRONG, lw=2, label="not right (checker)"))
    if d.frame is not None:
        handles.append(Patch(facecolor="white", edgecolor=READ, lw=2, label="step read"))
        handles.append(Patch(facecolor="white", edgecolor=WROTE, lw=2, label="step result lands"))
    if any(bool(p.actual.mixed.any()) for p in d.src + d.dst):
        handles.append(
            Patch(facecolor="#BBBBBB", edgecolor="white", hatch="..", label="mixed cell")
        )
    fig.legend(
        handles=handles,
        loc="upper center",
        ncol=min(len(handles), 7),
        fontsize=FONT,
        frameon=False,
        bbox_to_anchor=(0.5, 1 - 0.42 / fig_h),
    )
