"""The layout view drawn with PIL: the same picture as mpl_layout.py, in a few tens of ms.

The Explorer draws with this (a first view must come back fast); the command
line and the notebooks use matplotlib (PNG and SVG, text kept as text). Both
place panels with the same :class:`~syncviz.diagram.layout_geometry.PanelLayout`, so the
two pictures agree cell for cell.

>>> from syncviz.diagram.model import layout_diagram
>>> from syncviz.run.inprocess import tiny_run
>>> result = tiny_run()
>>> d = layout_diagram(result, "model.model.layers.0.self_attn.qkv_proj.weight")
>>> png, panels = layout_png(d)
>>> png[:4], sorted({p["side"] for p in panels})
(b'\\x89PNG', ['trainer', 'vLLM expected', 'vLLM holds'])
"""

from __future__ import annotations

import functools
import struct
import zlib

import numpy as np

from syncviz.diagram import layout_geometry as scene
from syncviz.diagram.layout_geometry import PanelLayout
from syncviz.diagram.model import LayoutDiagram
from syncviz.diagram.palette import WRONG, family_rgb, hex_rgb
from syncviz.diagram.raster import small_work

WIDTH = 1080
FONT_PX = 14  # shrunk to a 970 px cell, 12.6 px: still above 9 pt (12 px)
LEFT, RIGHT, TOP = 80, 20, 78
LINE = 18
LABEL_OFFSET_PX = (4, 3)  # a block label's distance from its panel: beside rows, above columns


MAX_MASKS = 4096  # rendered strings kept per font (each a few KB at most)


@functools.lru_cache(maxsize=4)
def _font(size: int = FONT_PX):
    """The default font, remembering every string it renders (see :func:`_mask_cache`)."""
    from io import BytesIO

    from PIL import ImageFont

    base = ImageFont.load_default(size=size)
    if not isinstance(base, ImageFont.FreeTypeFont):  # a Pillow without FreeType
        return base
    return _mask_cache()(BytesIO(base.font_bytes), size, layout_engine=base.layout_engine)


@functools.cache
def _mask_cache() -> type:
    """A FreeType font whose rendered masks are kept: head labels and rank titles recur on
    every panel of every parameter, and rendering them was a tenth of a first view.
    Masks are rendered at whole-pixel positions (text may sit up to 1 px off its
    fractional position), so one mask serves every place a string is drawn."""
    from PIL import ImageFont

    class MaskCachingFont(ImageFont.FreeTypeFont):
        def getmask2(self, text, mode="", *args, **kwargs):
            # ImageDraw.text passes direction, features, language, stroke_width, anchor,
            # ink and start positionally: everything but start makes the mask.
            args, _ = args[:6], kwargs.pop("start", None)
            key = (text, mode, repr(args), repr(sorted(kwargs.items())))
            masks = self.__dict__.setdefault("_masks", {})
            hit = masks.get(key)
            if hit is None:
                if len(masks) >= MAX_MASKS:
                    masks.clear()
                hit = masks[key] = super().getmask2(text, mode, *args, start=(0, 0), **kwargs)
            return hit

    return MaskCachingFont


def layout_png(d: LayoutDiagram, width: int = WIDTH) -> tuple[bytes, list[dict]]:
    """The PNG of ``d`` and its panels' pixel boxes (as ``Figure.panel_boxes`` gives them)."""
    with small_work(0):
        return _layout_png(d, width)


class _Geometry:
    """Where the picture of ``d`` goes in pixels: the panel layout, with room beside every
    panel for the widest block label in this font, its margins and scale."""

    def __init__(self, d: LayoutDiagram, width: int, font) -> None:
        anchor = "rm" if d.axis == 0 else "mb"
        reach = [_reach(font, t, anchor, d.axis) for t in scene.label_texts(d)]
        label_px = max(reach, default=0) + LABEL_OFFSET_PX[d.axis] + scene.LABEL_CLEARANCE_PX
        self.left = max(LEFT, round(label_px)) if d.axis == 0 else LEFT + 30
        self.top = TOP if d.axis == 0 else TOP + 20
        self.plot_w = width - self.left - RIGHT
        self.lay = PanelLayout(d, label_room=lambda lay: label_px / self._across_scale(lay))
        span_x, span_y = self._spans(self.lay)
        self.plot_h = self._plot_h(self.lay)
        self.sx, self.sy = self.plot_w / span_x, self.plot_h / span_y

    def px(self, x: float, y: float) -> tuple[float, float]:
        """Pixel of data point (x, y)."""
        return self.left + x * self.sx, self.top + y * self.sy

    @staticmethod
    def _spans(lay: PanelLayout) -> tuple[float, float]:
        """(x, y) spans of the plot in data units."""
        across, along = lay.span_across, lay.span_along
        return (across, along) if lay.axis == 0 else (along, across)

    def _plot_h(self, lay: PanelLayout) -> int:
        span_x, span_y = self._spans(lay)
        return int(np.clip(self.plot_w * span_y / span_x * 1.5, 300, 750))

    def _across_scale(self, lay: PanelLayout) -> float:
        """Pixels per data unit across the block axis, were ``lay`` drawn."""
        return (self.plot_w if lay.axis == 0 else self._plot_h(lay)) / lay.span_across


@functools.lru_cache(maxsize=MAX_MASKS)
def _reach(font, text: str, anchor: str, axis: int) -> float:
    """How far ``text`` drawn at ``anchor`` reaches from it, away from its panel (kept:
    the same head labels are measured for every parameter of every layer)."""
    x0, y0, _, _ = font.getbbox(text, anchor=anchor)
    return float(-x0 if axis == 0 else -y0)


def label_boxes(d: LayoutDiagram, width: int = WIDTH) -> list[dict]:
    """Every block label :func:`layout_png` draws, with its ink box in pixels:
    ``{"side", "rank", "text", "box": [x0, y0, x1, y1]}``.

    >>> from syncviz.diagram.model import layout_diagram
    >>> from syncviz.run.inprocess import tiny_run
    >>> d = layout_diagram(tiny_run(), "model.model.layers.0.self_attn.qkv_proj.weight")
    >>> [(b["side"], b["text"]) for b in label_boxes(d)][:2]
    [('trainer', 'Q0'), ('trainer', 'Q1')]
    """
    with small_work(0):
        font = _font()
        geo = _Geometry(d, width, font)
        out = []
        for s, i, p, r in scene.drawn_panels(d):
            for xy, text, anchor in _label_places(geo.lay, s, i, p, r, geo.px):
                x0, y0, x1, y1 = font.getbbox(text, anchor=anchor)
                box = [xy[0] + x0, xy[1] + y0, xy[0] + x1, xy[1] + y1]
                out.append({"side": scene.SIDES[s], "rank": p.rank, "text": text, "box": box})
        return out


def _layout_png(d: LayoutDiagram, width: int) -> tuple[bytes, list[dict]]:
    from PIL import Image, ImageDraw

    font = _font()
    geo = _Geometry(d, width, font)
    lay, top, plot_h, px = geo.lay, geo.top, geo.plot_h, geo.px
    regions = d.regions()
    lines = [(f"WRONG {t}", WRONG) for t in regions[: scene.MAX_REGION_LINES]]
    if len(regions) > scene.MAX_REGION_LINES:
        lines.append((f"{len(regions) - scene.MAX_REGION_LINES} further wrong regions", "#000000"))
    lines += [(p, "#000000") for p in d.problems[:3]]
    lines = [(part, color) for text, color in lines for part in _wrap(text, font, width - 16)]
    height = top + plot_h + 24 + LINE * len(lines) + 8
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((width / 2, 6), d.title[:150], fill="black", font=font, anchor="mt")
    _legend(draw, d, width, font)
    _bands(image, lay, d, px)
    draw = ImageDraw.Draw(image)
    panels = []
    for s, i, p, r in scene.drawn_panels(d):
        x0, x1, y0, y1 = lay.extent(s, i, p)
        (a, b), (c, e) = px(x0, y0), px(x1, y1)
        box = [round(a, 1), round(b, 1), round(c, 1), round(e, 1)]
        tile = Image.fromarray(scene.panel_image(r), "RGB").resize(
            (max(1, round(c - a)), max(1, round(e - b))), Image.NEAREST
        )
        image.paste(tile, (round(a), round(b)))
        draw.rectangle(
            (round(a) - 1, round(b) - 1, round(a) + tile.width, round(b) + tile.height),
            outline="#333333",
        )
        if s == 1:
            _outline(draw, r, box)
        _labels(draw, lay, s, i, p, r, px, font)
        title = p.title.split(" ", 1)[-1]  # without the side's word
        if (e - b) > 18 and (c - a) > 8 * len(title):
            draw.rectangle(
                (a + 2, b + 1, a + 6 + draw.textlength(title, font=font), b + FONT_PX + 3),
                fill="#333333",
            )
            draw.text((a + 4, b + 2), title, fill="white", font=font)
        panels.append({"side": scene.SIDES[s], "rank": p.rank, "box": box, "cells": list(r.cells)})
    for mid, label in scene.side_titles(d, lay):
        if d.axis == 0:
            x, y = px(mid, 0)
            draw.text((x, y - 4), label, fill="black", font=font, anchor="mb")
        else:
            x, y = px(0, mid)
            draw.text((x - 8, y), label, fill="black", font=font, anchor="rm")
    y = top + plot_h + 22
    for text, color in lines:
        draw.text((8, y), text, fill=color if color != WRONG else "#A0105A", font=font)
        y += LINE
    return png_bytes(image), panels


def _wrap(text: str, font, width: float) -> list[str]:
    """``text`` cut at spaces into lines at most ``width`` px wide (continuations indented),
    so that long region lines stay inside the picture instead of running off its edge."""
    out, line = [], ""
    for word in text.split(" "):
        trial = f"{line} {word}" if line else word
        if line.strip() and font.getlength(trial) > width:
            out.append(line)
            line = "    " + word
        else:
            line = trial
    return [*out, line]


def png_bytes(image) -> bytes:
    """``image`` (RGB) as a PNG, written here: rows unfiltered, zlib level 1.

    PIL's encoder tries every PNG filter on every row, which took a third of
    a first view even at ``compress_level=0``; these pictures are flat colour
    areas, which deflate well without filtering (same size within 10 %, 2-4x faster).

    >>> import io
    >>> from PIL import Image
    >>> im = Image.new("RGB", (3, 2), (10, 20, 30)); im.putpixel((2, 1), (255, 0, 7))
    >>> back = Image.open(io.BytesIO(png_bytes(im)))
    >>> back.mode, back.size, back.getpixel((2, 1)), back.getpixel((0, 0))
    ('RGB', (3, 2), (255, 0, 7), (10, 20, 30))
    """
    w, h = image.size
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    pixels = np.frombuffer(rgb.tobytes(), dtype=np.uint8)
    raw = np.zeros((h, 3 * w + 1), dtype=np.uint8)  # a 0 byte opens each row: filter "none"
    raw[:, 1:] = pixels.reshape(h, 3 * w)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", header),
            chunk(b"IDAT", zlib.compress(raw, 1)),
            chunk(b"IEND", b""),
        )
    )


def _legend(draw, d: LayoutDiagram, width: int, font) -> None:
    items = [(tuple(round(c * 255) for c in family_rgb(f)), w) for f, w in scene.legend_entries(d)]
    if d.wrong_count:
        items.append((None, "not right (checker)"))
    x = max(8, width / 2 - 60 * len(items))
    for color, text in items:
        if color is None:
            draw.rectangle((x, 30, x + 18, 42), outline=hex_rgb(WRONG), width=2)
        else:
            draw.rectangle((x, 30, x + 18, 42), fill=color, outline="#333333")
        draw.text((x + 24, 29), text, fill="black", font=font)
        x += 34 + draw.textlength(text, font=font)


def _pale(rgb, alpha: float) -> tuple[int, ...]:
    """``rgb`` (0..1) seen at ``alpha`` over white, as opaque 0..255 ints."""
    return tuple(round(255 * (1 - alpha + alpha * c)) for c in rgb)


def _bands(image, lay: PanelLayout, d: LayoutDiagram, px) -> None:
    """Bands drawn opaque, pale, right ones first and wrong ones on top (no alpha pass)."""
    from PIL import ImageDraw

    draw = ImageDraw.Draw(image)
    colors: dict[tuple[int, bool], tuple[int, ...]] = {}
    wrong = tuple(c / 255 for c in hex_rgb(WRONG))
    for b, corners in sorted(scene.band_polygons(d, lay), key=lambda bc: bc[0].wrong):
        color = colors.get((b.block, b.wrong))
        if color is None:
            family = d.table.families[b.block]
            rgb = wrong if b.wrong else family_rgb(family, d.table.shades[b.block])
            color = colors[b.block, b.wrong] = _pale(rgb, 0.6 if b.wrong else 0.4)
        draw.polygon([px(*xy) for xy in corners], fill=color, outline="white")


def _outline(draw, r, box) -> None:
    bad = r.status.numpy() != 0
    if not bad.any():
        return
    x0, y0, x1, y1 = box
    segs = scene.outline_segments(bad, x0, x1, y0, y1)
    for seg in segs:
        draw.line(seg, fill="black", width=4)
    for seg in segs:
        draw.line(seg, fill=hex_rgb(WRONG), width=2)


def _labels(draw, lay: PanelLayout, s: int, i: int, p, r, px, font) -> None:
    """Block labels along the block axis, chosen by diagram.labels (thinned to fit)."""
    for xy, text, anchor in _label_places(lay, s, i, p, r, px):
        draw.text(xy, text, fill="black", font=font, anchor=anchor)


def _label_places(lay: PanelLayout, s: int, i: int, p, r, px) -> list[tuple]:
    """``((x, y), text, anchor)`` of each label of a panel: left of rows, above columns."""
    gap = FONT_PX + 3 if lay.axis == 0 else 34
    out = []
    for xy, text in scene.block_labels(lay, s, i, p, r, lambda xy: px(*xy), gap):
        x, y = px(*xy)
        if lay.axis == 0:
            out.append(((x - LABEL_OFFSET_PX[0], y), text, "rm"))
        else:
            out.append(((x, y - LABEL_OFFSET_PX[1]), text, "mb"))
    return out
