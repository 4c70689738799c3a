"""A figure drawn with matplotlib (:class:`Figure`): saved as PNG or SVG, shown inline in
notebooks, and asked where a cell landed in pixels. Shared by every matplotlib renderer
(:mod:`~syncviz.diagram.mpl`, :mod:`~syncviz.diagram.mpl_layout`).

>>> from matplotlib.figure import Figure as MplFigure
>>> Figure(MplFigure(figsize=(2.0, 1.0), dpi=DPI)).size_px
(200, 100)
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg", force=False)

from matplotlib.figure import Figure as MplFigure

from syncviz.errors import SyncvizError

DPI = 100


class Figure:
    """A rendered figure: ``save(path)`` (PNG or SVG by suffix), shown inline in notebooks.

    ``rect_pixel(rect)`` gives a rect's centre in pixels of the saved PNG (x, y from top left).
    """

    def __init__(self, fig: MplFigure, placed: dict[int, tuple] | None = None) -> None:
        self.fig = fig
        self._placed = placed or {}

    @property
    def size_px(self) -> tuple[int, int]:
        w, h = self.fig.get_size_inches()
        return round(w * DPI), round(h * DPI)

    def save(self, path: str | Path) -> Path:
        """Write PNG or SVG (by the suffix of ``path``); returns the path."""
        path = Path(path)
        fmt = path.suffix.lstrip(".").lower()
        if fmt not in ("png", "svg"):
            raise SyncvizError(
                f"output suffix {path.suffix!r} is not supported",
                fix="name the file *.png or *.svg",
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        # SVG text stays text (searchable, scalable), never paths.
        with matplotlib.rc_context({"svg.fonttype": "none"}):
            self.fig.savefig(path, format=fmt, dpi=DPI)
        return path

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.fig.savefig(buf, format="png", dpi=DPI)
        return buf.getvalue()

    def rect_pixel(self, rect, fx: float = 0.5, fy: float = 0.5) -> tuple[float, float]:
        """A point of a drawn expert-view cell (fractions fx, fy of it) in PNG pixels."""
        ax, x0, y0, w, h = self._placed[id(rect)]
        return self._to_px(ax, x0 + fx * w, y0 + fy * h)

    def cell_pixel(self, side: str, rank: int, i: int, j: int) -> tuple[float, float]:
        """The centre of cell (i, j) of a layout panel in PNG pixels from the top left.

        ``side`` is "trainer", "vLLM holds" or "vLLM expected"; ``rank`` the world rank.
        """
        ax, (x0, x1, y0, y1), r = self._placed[(side, rank)]
        nr, nc = r.cells
        return self._to_px(ax, x0 + (j + 0.5) * (x1 - x0) / nc, y0 + (i + 0.5) * (y1 - y0) / nr)

    def panels(self) -> list[tuple[str, int]]:
        """(side, rank) of every drawn layout panel."""
        return [k for k in self._placed if isinstance(k, tuple)]

    def panel_boxes(self) -> list[dict]:
        """Every layout panel's box in PNG pixels and its cell grid, for pointer lookups:
        ``{"side", "rank", "box": [x0, y0, x1, y1], "cells": [rows, cols]}``.
        No layout engine moves axes here, so the transforms hold before any draw."""
        height = self.size_px[1]
        out = []
        for (side, rank), (ax, (x0, x1, y0, y1), r) in (
            (k, v) for k, v in self._placed.items() if isinstance(k, tuple)
        ):
            (ax0, ay0), (ax1, ay1) = ax.transData.transform([(x0, y0), (x1, y1)])
            left, right = sorted((float(ax0), float(ax1)))
            top, bottom = sorted((height - float(ay0), height - float(ay1)))
            box = [round(v, 1) for v in (left, top, right, bottom)]
            out.append({"side": side, "rank": rank, "box": box, "cells": list(r.cells)})
        return out

    def _to_px(self, ax, x: float, y: float) -> tuple[float, float]:
        self.fig.canvas.draw()
        px, py = ax.transData.transform((x, y))
        return float(px), float(self.size_px[1] - py)

    def _repr_svg_(self) -> str:
        buf = io.BytesIO()
        self.fig.savefig(buf, format="svg", dpi=DPI)
        return buf.getvalue().decode()
