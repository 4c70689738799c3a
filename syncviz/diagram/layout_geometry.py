"""Where the layout view puts things, for any renderer: panels placed to scale along the
block axis (:class:`PanelLayout`), with room between them for the widest block label
(:func:`label_texts`), a raster's pixels (:func:`panel_image`), the runs of a cell
outline (:func:`edge_runs`), the legend's words (:func:`legend_entries`), and in data
units the block labels (:func:`block_labels`), the movement bands
(:func:`band_polygons`) and the side titles (:func:`side_titles`). The
matplotlib (:mod:`~syncviz.diagram.mpl_layout`) and PIL (:mod:`~syncviz.diagram.pil_layout`)
renderers both draw from it, so the two pictures agree; it imports neither drawing library.

>>> SIDES
('trainer', 'vLLM holds', 'vLLM expected')
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from syncviz.diagram.labels import panel_labels, short_label
from syncviz.diagram.palette import SPECIAL_FAMILY, family_words, raster_rgb

if TYPE_CHECKING:
    from syncviz.diagram.model import Band, LayoutDiagram
    from syncviz.diagram.panel import Panel
    from syncviz.diagram.raster import Raster

MAX_REGION_LINES = 6  # region lines inside the figure; every region is in the text form
SIDES = ("trainer", "vLLM holds", "vLLM expected")
LABEL_CLEARANCE_PX = 4  # between a block label and the panel before it
MAX_FIT = 50  # rounds of widening the gaps (each round gets within a fraction of the need)


def drawn_panels(d: LayoutDiagram) -> Iterator[tuple[int, int, Panel, Raster]]:
    """``(side, i, panel, raster)`` of every panel in drawing order: the trainer's and what
    vLLM holds (each panel's ``actual``), then what vLLM should hold (``expected``).

    >>> from syncviz.diagram.model import layout_diagram
    >>> from syncviz.run.inprocess import tiny_run
    >>> d = layout_diagram(tiny_run(), "model.model.layers.0.self_attn.qkv_proj.weight")
    >>> [(s, i, r is p.expected) for s, i, p, r in drawn_panels(d)]
    [(0, 0, False), (1, 0, False), (1, 1, False), (2, 0, True), (2, 1, True)]
    """
    for s, group in enumerate((d.src, d.dst, d.dst)):
        for i, p in enumerate(group):
            yield s, i, p, (p.actual if s < 2 else p.expected)


def side_label(side: str, engine: str) -> str:
    """How a side (one of :data:`SIDES`, which stay its keys) is drawn for ``engine``.

    >>> side_label("vLLM holds", "SGLang"), side_label("trainer", "SGLang")
    ('SGLang holds', 'trainer')
    """
    return side.replace("vLLM", engine, 1)


def side_titles(d: LayoutDiagram, lay: PanelLayout) -> list[tuple[float, str]]:
    """``(middle across, words)`` of each side's title (in :data:`SIDES` order), drawn
    above the side's column (axis 0) or left of its row (axis 1).

    >>> from syncviz.diagram.model import layout_diagram
    >>> from syncviz.run.inprocess import tiny_run
    >>> d = layout_diagram(tiny_run(), "model.model.layers.0.self_attn.qkv_proj.weight")
    >>> side_titles(d, PanelLayout(d))[1]  # after the trainer (8) and the band (0.9 * 8)
    (19.2, 'vLLM holds')
    """
    return [
        (lay.offsets[s] + lay.across / 2, side_label(name, d.engine))
        for s, name in enumerate(SIDES)
    ]


def panel_image(panel_raster) -> np.ndarray:
    """RGB of a raster, two pixels per cell so mixed cells can be dotted.

    >>> from syncviz.diagram.raster import BlockTable, raster
    >>> from syncviz.run.inprocess import tiny_run
    >>> qkv = tiny_run().plan.layout.params[1]
    >>> panel_image(raster(qkv.dst[0].index.ids(), BlockTable(qkv))).shape
    (16, 16, 3)
    """
    rgb = raster_rgb(panel_raster).numpy()
    img = np.repeat(np.repeat(rgb, 2, axis=0), 2, axis=1)
    mixed = np.repeat(np.repeat(panel_raster.mixed.numpy(), 2, axis=0), 2, axis=1)
    dots = np.zeros_like(mixed)
    dots[::2, ::2] = True
    img[mixed & dots] = (255, 255, 255)
    return img


def drawn_rasters(d: LayoutDiagram) -> list:
    """Every raster the layout view draws: trainer and vLLM tensors as held, vLLM tensors
    as expected, and with a step frame the vLLM tensors as written by steps 1..k."""
    out = [p.actual for p in d.src + d.dst] + [p.expected for p in d.dst]
    if d.frame is not None:
        out += [p.actual for p in d.frame.filled]
    return out


def _drawn_blocks(d: LayoutDiagram) -> list[int]:
    """Block numbers (and negative markers) of every drawn cell, in first-seen order."""
    seen: dict[int, None] = {}
    for r in drawn_rasters(d):
        seen.update(dict.fromkeys(torch.unique(r.block).tolist()))
    return list(seen)


def label_texts(d: LayoutDiagram) -> set[str]:
    """Every block label a panel of ``d`` can show: the labels actually drawn are a
    thinned subset of these (thinning depends on the height the gaps change), so a gap
    sized for the widest of them holds every drawn label.

    >>> from syncviz.diagram.model import layout_diagram
    >>> from syncviz.run.inprocess import tiny_run
    >>> d = layout_diagram(tiny_run(), "model.model.layers.0.self_attn.qkv_proj.weight")
    >>> sorted(label_texts(d))[:4]
    ['K0', 'K1', 'Q0', 'Q1']
    """
    return {t for b in _drawn_blocks(d) if (t := short_label(d.table, b)) is not None}


def legend_entries(d: LayoutDiagram) -> list[tuple[str, str]]:
    """``(colour family, words)`` for each family drawn, first seen first; the words name
    the sub-blocks (a block's ``part``) its drawn blocks have, as the labels do, so a
    picture of MLA's q rows says "nope, rope" and one of kv_b "k_nope" and "v".

    >>> from syncviz.diagram.model import layout_diagram
    >>> from syncviz.run.inprocess import tiny_run
    >>> d = layout_diagram(tiny_run(), "model.model.layers.0.self_attn.qkv_proj.weight")
    >>> legend_entries(d)
    [('q', 'Q heads'), ('k', 'K heads'), ('v', 'V heads')]
    """
    parts: dict[str, dict[str, None]] = {}
    for b in _drawn_blocks(d):
        if b < 0:
            parts.setdefault(SPECIAL_FAMILY[b], {})
            continue
        block = d.table.blocks[b]
        seen = parts.setdefault(block.family, {})
        part = getattr(block, "part", None)
        if part:
            seen[part] = None
    return [(family, family_words(family, list(ps))) for family, ps in parts.items()]


class PanelLayout:
    """Where each panel goes: 'along' the block axis, 'across' it; data units = elements.

    ``label_room(layout)``, where given, is how many data units across the widest block
    label needs beside a panel (label, its offset and a clearance) at ``layout``'s span
    across, in the renderer's scale; the gaps before the vLLM columns are widened until
    it fits, so no label runs into the panel before it.

    >>> from syncviz.diagram.model import layout_diagram
    >>> from syncviz.run.inprocess import tiny_run
    >>> result = tiny_run()
    >>> d = layout_diagram(result, "model.model.layers.0.self_attn.qkv_proj.weight")
    >>> lay = PanelLayout(d)
    >>> lay.extent(0, 0, d.src[0])[:2], lay.extent(1, 1, d.dst[1])[1] > lay.across
    ((0.0, 8.0), True)
    >>> lay.side_gap, lay.across
    (0.96, 8.0)

    A label 40 px wide where the whole span across is drawn 400 px wide needs a tenth of
    the span, 3.47 once the gap has widened the span to 34.7 (the band, 7.2, had room):

    >>> wide = PanelLayout(d, label_room=lambda lay: 40 * lay.span_across / 400)
    >>> round(wide.side_gap, 2), round(wide.span_across, 1), wide.band_w == lay.band_w
    (3.47, 34.7, True)
    """

    def __init__(
        self, d: LayoutDiagram, label_room: Callable[[PanelLayout], float] | None = None
    ) -> None:
        self.axis = d.axis
        sides = [d.src, d.dst, d.dst]
        along = [self.along_of(p) for p in d.src + d.dst]
        total = max(sum(along[: len(d.src)]), sum(along[len(d.src) :]), 1)
        self.min_along = total * 0.035  # a one-row tensor still gets a visible strip
        self.gap = total * 0.02
        self.across = max(self.across_of(p) for p in d.src + d.dst)
        self.spans: dict[tuple[int, int], tuple[float, float]] = {}  # (side, i) -> along
        for s, panels in enumerate(sides):
            pos = 0.0
            for i, p in enumerate(panels):
                n = max(self.along_of(p), self.min_along)
                self.spans[s, i] = (pos, pos + n)
                pos += n + self.gap
        self.span_along = max(v[1] for v in self.spans.values())
        self._across(
            self.across * (0.9 if d.axis == 0 else 0.7),
            self.across * (0.12 if d.axis == 0 else 0.3),
        )
        # The room a label needs in data units grows with the span it widens (the span is
        # drawn at a fixed width): widen by a hair more than asked until it fits.
        for _ in range(MAX_FIT if label_room is not None else 0):
            need = label_room(self)
            if need <= min(self.band_w, self.side_gap):
                break
            self._across(max(self.band_w, need * 1.001), max(self.side_gap, need * 1.001))

    def _across(self, band_w: float, side_gap: float) -> None:
        """Place the three columns across: trainer, band, vLLM holds, gap, vLLM expected."""
        self.band_w, self.side_gap = band_w, side_gap
        self.offsets = [0.0, self.across + band_w, 2 * self.across + band_w + side_gap]
        self.span_across = self.offsets[2] + self.across

    def along_of(self, p: Panel) -> float:
        return float(p.actual.rows if self.axis == 0 else p.actual.cols)

    def across_of(self, p: Panel) -> float:
        return float(p.actual.cols if self.axis == 0 else p.actual.rows)

    def extent(self, side: int, i: int, p: Panel) -> tuple[float, float, float, float]:
        """(x0, x1, y0, y1) of a panel, y growing downward."""
        a0, a1 = self.spans[side, i]
        c0 = self.offsets[side]
        c1 = c0 + self.across_of(p)
        return (c0, c1, a0, a1) if self.axis == 0 else (a0, a1, c0, c1)

    def point(self, side: int, i: int, p: Panel, along: float, across: float):
        """Data (x, y) of element position (along, across) of a panel."""
        x0, _, y0, _ = self.extent(side, i, p)
        a0, a1 = self.spans[side, i]
        scale = (a1 - a0) / max(self.along_of(p), 1)
        if self.axis == 0:
            return x0 + across, y0 + along * scale
        return x0 + along * scale, y0 + across


def edge_runs(edges: np.ndarray) -> list[tuple[int, int, int]]:
    """Runs of true along the last axis of a 2-D mask: (line, start, stop).

    >>> edge_runs(np.array([[1, 1, 0, 1], [0, 0, 0, 0]], dtype=bool))
    [(0, 0, 2), (0, 3, 4)]
    """
    pad = np.zeros((edges.shape[0], edges.shape[1] + 2), dtype=np.int8)
    pad[:, 1:-1] = edges
    step = np.diff(pad, axis=1)
    starts, stops = np.nonzero(step == 1), np.nonzero(step == -1)
    return list(zip(starts[0].tolist(), starts[1].tolist(), stops[1].tolist(), strict=True))


def outline_segments(
    bad: np.ndarray, x0: float, x1: float, y0: float, y1: float
) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """The line segments around every connected set of marked cells of ``bad`` drawn over
    ``[x0, x1] x [y0, y1]`` (y down); edges are merged into runs, so a big region costs a
    few lines, not one per cell.

    >>> segs = outline_segments(np.array([[True, True], [False, False]]), 0, 2, 0, 2)
    >>> segs[:2]  # above and below the top row; then its left and right sides
    [((0.0, 0.0), (2.0, 0.0)), ((0.0, 1.0), (2.0, 1.0))]
    >>> segs[2:]
    [((0.0, 0.0), (0.0, 1.0)), ((2.0, 0.0), (2.0, 1.0))]
    """
    nr, nc = bad.shape
    sx, sy = (x1 - x0) / nc, (y1 - y0) / nr
    pad = np.pad(bad, 1)
    across = pad[1:, 1:-1] != pad[:-1, 1:-1]  # [nr + 1, nc]: edge above cell row i
    down = (pad[1:-1, 1:] != pad[1:-1, :-1]).T  # [nc + 1, nr]: edge left of cell col j
    segs = [
        ((x0 + a * sx, y0 + i * sy), (x0 + b * sx, y0 + i * sy)) for i, a, b in edge_runs(across)
    ]
    segs += [
        ((x0 + j * sx, y0 + a * sy), (x0 + j * sx, y0 + b * sy)) for j, a, b in edge_runs(down)
    ]
    return segs


def block_labels(
    lay: PanelLayout,
    s: int,
    i: int,
    p: Panel,
    r: Raster,
    scale: Callable[[tuple[float, float]], tuple[float, float]],
    gap: float,
) -> list[tuple[tuple[float, float], str]]:
    """``((x, y), text)`` of each block label of panel ``i`` of side ``s`` (raster ``r``):
    the data point on the panel's edge beside the label's block, chosen by
    ``diagram.labels`` and thinned so that no two stand closer than ``gap`` along the
    block axis, in the units ``scale`` maps a data point to (the renderer's).

    >>> from syncviz.diagram.model import layout_diagram
    >>> from syncviz.run.inprocess import tiny_run
    >>> d = layout_diagram(tiny_run(), "model.model.layers.0.self_attn.qkv_proj.weight")
    >>> block_labels(PanelLayout(d), 0, 0, d.src[0], d.src[0].actual, lambda xy: xy, 1.0)[:2]
    [((0.0, 1.0), 'Q0'), ((0.0, 3.0), 'Q1')]
    """
    along = 1 if lay.axis == 0 else 0

    def place(mid: float) -> float:
        return scale(lay.point(s, i, p, mid, 0))[along]

    return [
        (lay.point(s, i, p, label.mid, 0), label.text)
        for label in panel_labels(r, lay.axis, place, gap)
    ]


def band_polygons(
    d: LayoutDiagram, lay: PanelLayout
) -> list[tuple[Band, list[tuple[float, float]]]]:
    """Each band of ``d`` (in order) with its quadrilateral in data units: its trainer span
    on the trainer panel's far edge, then its vLLM span, reversed, on the vLLM panel's
    near edge.

    >>> from syncviz.diagram.model import layout_diagram
    >>> from syncviz.run.inprocess import tiny_run
    >>> d = layout_diagram(tiny_run(), "model.model.layers.0.self_attn.qkv_proj.weight")
    >>> band, corners = band_polygons(d, PanelLayout(d))[0]
    >>> band.src_span, band.dst_span, corners
    ((0, 2), (0, 2), [(8.0, 0.0), (8.0, 2.0), (15.2, 2.0), (15.2, 0.0)])
    """
    # Per panel: where its along axis starts and how far one element goes (lay.point's
    # arithmetic, once per panel rather than four times per band).
    starts: dict[tuple[int, int], tuple[float, float]] = {}
    for side, panels in ((0, d.src), (1, d.dst)):
        for i, p in enumerate(panels):
            x0, _, y0, _ = lay.extent(side, i, p)
            a0, a1 = lay.spans[side, i]
            origin = y0 if lay.axis == 0 else x0
            starts[side, p.rank] = (origin, (a1 - a0) / max(lay.along_of(p), 1))
    src_edge = {p.rank: lay.offsets[0] + lay.across_of(p) for p in d.src}
    out = []
    for b in d.bands:
        corners = []
        for side, rank, span in ((0, b.src, b.src_span), (1, b.dst, b.dst_span)):
            origin, scale = starts[side, rank]
            edge = src_edge[rank] if side == 0 else lay.offsets[1]
            for k in (0, 1) if side == 0 else (1, 0):
                along = origin + span[k] * scale
                corners.append((edge, along) if lay.axis == 0 else (along, edge))
        out.append((b, corners))
    return out
