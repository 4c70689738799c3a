"""A fast PNG of one recorded step (what it read -> what it wrote), drawn with PIL only.

The Explorer's step slider redraws only this strip, never the matplotlib figure,
so walking the steps stays fast at any tensor size (rasters are at most a few
hundred cells a side).

>>> from syncviz import Parallel
>>> from syncviz.spec import ModelSpec
>>> from syncviz.run.inprocess import run_sync
>>> from syncviz.diagram.model import layout_diagram
>>> spec = ModelSpec("tiny", "llama-mcore", 1, 8, 4, 2, 8, 64, head_dim=2)
>>> result = run_sync(spec, Parallel(tp=1), Parallel(tp=2), layers=[0])
>>> d = layout_diagram(result, "model.model.layers.0.self_attn.qkv_proj.weight", step=1)
>>> frame_png(d.frame)[:4]
b'\\x89PNG'
"""

from __future__ import annotations

import io

from syncviz.diagram.frames import Frame
from syncviz.diagram.model import Panel
from syncviz.diagram.palette import raster_rgb
from syncviz.diagram.raster import small_work

HEIGHT = 170  # px of the tallest raster in the strip
MAX_WIDTH = 1080
FONT_PX = 13  # about 9.5 pt at 100 dpi


def _tile(panel: Panel, height: int):
    from PIL import Image

    rgb = raster_rgb(panel.actual).numpy()
    image = Image.fromarray(rgb, "RGB")
    nr, nc = rgb.shape[:2]
    scale = max(1, min(height // max(nr, 1), 260 // max(nc, 1)))
    tall = scale if nr * scale >= 14 else 14 // nr + 1  # a 1-D tensor still shows as a band
    return image.resize((max(1, nc * scale), max(1, nr * tall)), Image.NEAREST)


def frame_png(frame: Frame | None, height: int = HEIGHT) -> bytes:
    """The step's input rasters, an arrow, its output rasters, each titled; b"" for no frame."""
    if frame is None:
        return b""
    with small_work(0):
        return _frame_png(frame, height)


def _frame_png(frame: Frame, height: int) -> bytes:
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=FONT_PX)
    parts = [(p, _tile(p, height)) for p in frame.inputs] + [(None, None)]
    parts += [(p, _tile(p, height)) for p in frame.outputs]
    gap, top = 14, FONT_PX + 8
    titles = [p.title.split(" ", 2)[-1] if p else "" for p, _ in parts]  # "reads #1 [16, 8]"
    widths = [
        max(t.width, int(font.getlength(title))) if t else 40
        for (_, t), title in zip(parts, titles, strict=True)
    ]
    width = sum(w + gap for w in widths) + gap
    tall = max([t.height for _, t in parts if t] + [20])
    canvas = Image.new("RGB", (min(max(width, 200), MAX_WIDTH * 3), tall + top + 6), "white")
    draw = ImageDraw.Draw(canvas)
    x = gap
    for (_, tile), title, w in zip(parts, titles, widths, strict=True):
        if tile is None:
            draw.text((x + 6, top + tall // 2 - FONT_PX), "->", fill="black", font=font)
            x += 40 + gap
            continue
        canvas.paste(tile, (x, top))
        draw.rectangle((x - 1, top - 1, x + tile.width, top + tile.height), outline="#333333")
        draw.text((x, 2), title, fill="black", font=font)
        x += w + gap
    if canvas.width > MAX_WIDTH:
        ratio = MAX_WIDTH / canvas.width
        canvas = canvas.resize((MAX_WIDTH, max(1, int(canvas.height * ratio))), Image.NEAREST)
    out = io.BytesIO()
    canvas.save(out, format="PNG", compress_level=1)
    return out.getvalue()
