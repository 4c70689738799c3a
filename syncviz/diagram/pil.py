"""A fast PNG of one recorded step, drawn with PIL only.

Row one: what the step read -> what it wrote, as rasters. Row two (``panels``):
the trainer shards with the cells it read outlined in black, and every vLLM
tensor as written by steps 1..k with the cells its result lands in outlined
in orange, so walking the steps shows the destination filling in. The
Explorer's step slider redraws only this strip, never the matplotlib figure,
so walking the steps stays fast at any tensor size (rasters are at most a few
hundred cells a side).

>>> from syncviz.diagram.model import layout_diagram
>>> from syncviz.run.inprocess import tiny_run
>>> result = tiny_run()
>>> d = layout_diagram(result, "model.model.layers.0.self_attn.qkv_proj.weight", step=1)
>>> frame_png(d.frame)[:4]
b'\\x89PNG'
"""

from __future__ import annotations

import io
import weakref

import numpy as np

from syncviz.diagram.frames import READ, WROTE, Frame
from syncviz.diagram.palette import FAMILY_COLORS, hex_rgb, raster_rgb
from syncviz.diagram.panel import Panel
from syncviz.diagram.raster import UNWRITTEN, Raster, small_work

HEIGHT = 170  # px of the tallest raster in the strip
PANEL_HEIGHT = 130  # px of the tallest big panel in row two
MAX_WIDTH = 1080
FONT_PX = 14  # at most 1080 px wide, shrunk to a 970 px cell: 12.6 px, above 9 pt
TILE_WIDTH = 260  # px a tile may take at most


_RGB: dict[int, tuple[weakref.ref, np.ndarray]] = {}


def _rgb(r: Raster) -> np.ndarray:
    """The RGB of a big panel's raster, kept while the raster lives (every frame draws it)."""
    held = _RGB.get(id(r))
    if held is not None and held[0]() is r:
        return held[1]
    rgb = raster_rgb(r).numpy()
    _RGB[id(r)] = (weakref.ref(r), rgb)
    weakref.finalize(r, _RGB.pop, id(r), None)
    return rgb


def _filled_rgb(filled: Raster, final: Raster) -> np.ndarray:
    """A destination as written so far: the final tensor's colours, unwritten cells white."""
    rgb = _rgb(final).copy()
    rgb[filled.block.numpy() == UNWRITTEN] = hex_rgb(FAMILY_COLORS["unwritten"])
    return rgb


def _tile(r: Raster, height: int, width: int = TILE_WIDTH, mark=None, color: str = READ, rgb=None):
    """A raster scaled up by whole pixels; ``mark`` (cells) outlined 2 px in ``color``;
    ``rgb`` its colours when already known."""
    from PIL import Image

    rgb = raster_rgb(r).numpy() if rgb is None else rgb
    nr, nc = rgb.shape[:2]
    scale = max(1, min(height // max(nr, 1), width // max(nc, 1)))
    tall = scale if nr * scale >= 14 else 14 // nr + 1  # a 1-D tensor still shows as a band
    img = np.repeat(np.repeat(rgb, tall, axis=0), scale, axis=1)
    if mark is not None:
        m = np.repeat(np.repeat(np.asarray(mark, dtype=bool), tall, axis=0), scale, axis=1)
        img[_edge(m, 2)] = hex_rgb(color)
    return Image.fromarray(np.ascontiguousarray(img), "RGB")


def _edge(m: np.ndarray, width: int) -> np.ndarray:
    """The pixels of ``m`` within ``width`` px of its border (all of it when thinner)."""
    inner = m.copy()
    for _ in range(width):
        pad = np.pad(inner, 1)
        inner = inner & pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
    return m & ~inner


def _step_title(p: Panel, who: str) -> str:
    """A step tensor's title in the strip: ``reads [16, 8]`` (the rank is in the step's words)."""
    return f"{p.title.removeprefix(who)} {list(p.shape)}"


def _panel_title(p: Panel, color: str) -> str:
    """A big panel's title in the strip's second row: its rank by name, as ``check`` names
    it, and ``read`` on a trainer panel whose cells the step read."""
    return f"{p.title}: read" if color == READ else p.title


def _wrapped(tiles: list, font, gap: int) -> list[list]:
    """The second row's (title, tile) pairs cut into rows of at most MAX_WIDTH px, so
    many ranks' titles stay full size instead of the strip being shrunk."""
    rows: list[list] = [[]]
    used = gap
    for title, tile in tiles:
        w = max(tile.width, int(font.getlength(title))) + gap
        if rows[-1] and used + w > MAX_WIDTH:
            rows.append([])
            used = gap
        rows[-1].append((title, tile))
        used += w
    return rows


def frame_png(frame: Frame | None, height: int = HEIGHT, panels: bool = True) -> bytes:
    """The step strip of ``frame`` (row two only with ``panels``); b"" for no frame."""
    if frame is None:
        return b""
    with small_work(0):
        return _frame_png(frame, height, panels)


def _frame_png(frame: Frame, height: int, panels: bool) -> bytes:
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=FONT_PX)
    gap, top = 14, FONT_PX + 8
    # Row one: inputs -> outputs, titled "reads [16, 8]" (the rank is in the step's words).
    who = frame.step.who + " "
    row = [(_step_title(p, who), _tile(p.actual, height)) for p in frame.inputs]
    row.append(("->", None))
    row += [(_step_title(p, who), _tile(p.actual, height)) for p in frame.outputs]
    rows = [row]
    if panels:
        big = [
            (p, m, READ, _rgb(p.actual))
            for p, m in zip(frame.src, frame.read, strict=True)
            if m is not None
        ]
        big += [
            (p, m, WROTE, _filled_rgb(p.actual, final.actual))
            for p, m, final in zip(frame.filled, frame.wrote, frame.dst, strict=True)
        ]
        each = max(8, (MAX_WIDTH - gap * (len(big) + 1)) // max(len(big), 1))
        tiles = [
            (_panel_title(p, c), _tile(p.actual, PANEL_HEIGHT, min(each, TILE_WIDTH), m, c, rgb))
            for p, m, c, rgb in big
        ]
        rows += _wrapped(tiles, font, gap)
    layout = []  # (title, tile, width) per row
    for parts in rows:
        widths = [max(t.width, int(font.getlength(title))) if t else 40 for title, t in parts]
        layout.append((parts, widths, max([t.height for _, t in parts if t] + [20])))
    caption = f"after step {frame.number}: vLLM as written so far" if panels else ""
    width = max(sum(w + gap for w in ws) + gap for _, ws, _ in layout)
    width = max(width, int(font.getlength(caption)) + 2 * gap)
    height_px = sum(tall + top + 6 for _, _, tall in layout) + (top if panels else 0)
    canvas = Image.new("RGB", (min(max(width, 200), MAX_WIDTH * 3), height_px), "white")
    draw = ImageDraw.Draw(canvas)
    y = 0
    for k, (parts, widths, tall) in enumerate(layout):
        if k == 1:
            draw.text((gap, y + 2), caption, fill="black", font=font)
            y += top
        x = gap
        for (title, tile), w in zip(parts, widths, strict=True):
            if tile is None:
                draw.text((x + 6, y + top + tall // 2 - FONT_PX), "->", fill="black", font=font)
                x += 40 + gap
                continue
            canvas.paste(tile, (x, y + top))
            draw.rectangle(
                (x - 1, y + top - 1, x + tile.width, y + top + tile.height), outline="#333333"
            )
            draw.text((x, y + 2), title, fill="black", font=font)
            x += w + gap
        y += tall + top + 6
    if canvas.width > MAX_WIDTH:
        ratio = MAX_WIDTH / canvas.width
        canvas = canvas.resize((MAX_WIDTH, max(1, int(canvas.height * ratio))), Image.NEAREST)
    out = io.BytesIO()
    canvas.save(out, format="PNG", compress_level=1)
    return out.getvalue()
