"""matplotlib renderers for the diagram model (the only module here that imports matplotlib).

Colour = block family (shaded by the block's index), outline = the trainer
rank the data came from (one fixed colour per rank in every figure), hatched
red = wrong, with the explanations written under the panels.

>>> from syncviz.diagram.model import Panel, Rect, LayoutDiagram
>>> panel = Panel("src pp0 tp0 (rank 0)", 0, (4, 8), (4, 8), [Rect(0, 4, 0, 8, "down", "down")])
>>> fig = render_layout(LayoutDiagram("w", "down", (4, 8), "w", [panel], [], [panel]))
>>> fig.size_px[0] > 0
True
"""

from __future__ import annotations

import colorsys
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg", force=False)

import matplotlib.colors as mcolors
from matplotlib.figure import Figure as MplFigure
from matplotlib.patches import FancyArrowPatch, Patch, Rectangle

from syncviz.diagram.model import LayoutDiagram, Panel, Rect, TransferDiagram

FAMILY_COLORS: dict[str, str] = {
    "q": "#4c72b0",
    "k": "#dd8452",
    "v": "#55a868",
    "o": "#8172b3",
    "gate": "#2a9d8f",
    "up": "#e9c46a",
    "down": "#937860",
    "expert": "#da8bc3",
    "vocab": "#64b5cd",
    "norm": "#8c8c8c",
    "router": "#ccb974",
    "padding": "#e6e6e6",
    "unwritten": "#ffffff",
}
"""The colour of each block family; shade 0 of a family is exactly this colour."""

RANK_COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
WARNING_COLOR = "#d00000"
DPI = 100
MAX_EXPLANATIONS = 8


def family_color(family: str, shade: int = 0) -> tuple[float, float, float]:
    """RGB of ``family`` shaded by index: shade 0 is the family colour, others lighter/darker.

    >>> family_color("q") == mcolors.to_rgb(FAMILY_COLORS["q"])
    True
    >>> family_color("q", 1) != family_color("q", 0)
    True
    """
    base = mcolors.to_rgb(FAMILY_COLORS.get(family, "#bbbbbb"))
    if shade == 0:
        return base
    h, lum, s = colorsys.rgb_to_hls(*base)
    step = (0.0, 0.12, -0.1, 0.22, -0.18)[shade % 5]
    return colorsys.hls_to_rgb(h, min(0.92, max(0.12, lum + step)), s)


def rank_color(rank: int) -> str:
    """The fixed colour of world rank ``rank`` in every figure.

    >>> rank_color(0) == rank_color(10)
    True
    """
    return RANK_COLORS[rank % len(RANK_COLORS)]


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
            from syncviz.errors import SyncvizError

            raise SyncvizError(
                f"output suffix {path.suffix!r} is not supported",
                fix="name the file *.png or *.svg",
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fig.savefig(path, format=fmt, dpi=DPI)
        return path

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.fig.savefig(buf, format="png", dpi=DPI)
        return buf.getvalue()

    def rect_pixel(self, rect: Rect, fx: float = 0.5, fy: float = 0.5) -> tuple[float, float]:
        """A point of ``rect`` (fractions fx, fy of its size) in PNG pixels from top left."""
        ax, x0, y0, w, h = self._placed[id(rect)]
        self.fig.canvas.draw()
        px, py = ax.transData.transform((x0 + fx * w, y0 + fy * h))
        return float(px), float(self.size_px[1] - py)


def render(diagram: LayoutDiagram | TransferDiagram) -> Figure:
    """Draw either kind of diagram."""
    if isinstance(diagram, LayoutDiagram):
        return render_layout(diagram)
    return render_transfer(diagram)


# ---------------------------------------------------------------- layout view


def render_layout(d: LayoutDiagram) -> Figure:
    """Source panels (left) -> steps (middle) -> destination panels (right), to scale."""
    gap = 0.25
    src_h = _stack_height(d.src, gap)
    dst_h = _stack_height(d.dst, gap)
    width = max([p.grid[1] for p in d.src + d.dst] + [1])
    height = max(src_h, dst_h, 1)
    explanations = [r for p in d.dst for r in p.rects if r.status == "wrong"]
    n_text = min(len(explanations), MAX_EXPLANATIONS) + len(d.problems[:4]) + len(d.notes)
    fig_w, panel_h = 15.0, min(9.0, max(3.5, 5.0 * height / width))
    fig_h = panel_h + 1.2 + 0.22 * n_text
    fig = MplFigure(figsize=(fig_w, fig_h), dpi=DPI)
    bottom = (0.3 + 0.22 * n_text) / fig_h
    top = 1 - 0.9 / fig_h
    placed: dict[int, tuple] = {}
    ax_src = fig.add_axes((0.05, bottom, 0.3, top - bottom))
    ax_steps = fig.add_axes((0.37, bottom, 0.2, top - bottom))
    ax_dst = fig.add_axes((0.59, bottom, 0.3, top - bottom))
    for ax, panels, label in ((ax_src, d.src, "trainer"), (ax_dst, d.dst, "vLLM")):
        _draw_stack(ax, panels, width, height, gap, placed)
        ax.set_title(f"{label} tensors", fontsize=10)
    _draw_steps(ax_steps, d)
    fig.suptitle(d.title, fontsize=10)
    _legend(fig, d)
    lines = [
        f"WRONG {p.title}: {_rect_where(r)}: {r.explanation}"
        for p in d.dst
        for r in p.rects
        if r.status == "wrong"
    ]
    if len(lines) > MAX_EXPLANATIONS:
        lines = [
            *lines[:MAX_EXPLANATIONS],
            f"... {len(lines) - MAX_EXPLANATIONS} more wrong blocks",
        ]
    lines += d.problems[:4] + d.notes
    for i, line in enumerate(lines):
        color = WARNING_COLOR if line.startswith("WRONG") else "black"
        fig.text(
            0.02,
            (0.15 + 0.22 * (len(lines) - 1 - i)) / fig_h,
            line[:190],
            fontsize=7.5,
            color=color,
            family="monospace",
        )
    return Figure(fig, placed)


def _stack_height(panels: list[Panel], gap: float) -> float:
    if not panels:
        return 0.0
    rows = sum(p.grid[0] for p in panels)
    return rows * (1 + gap * 0) + gap * max(p.grid[0] for p in panels) * (len(panels) - 1)


def _draw_stack(ax, panels: list[Panel], width: int, height: float, gap: float, placed) -> None:
    """Panels stacked top to bottom in one axes, one data unit per element, so all to scale."""
    ax.set_xlim(-0.02 * width, width * 1.02)
    ax.set_ylim(height * 1.01, -0.06 * height)
    ax.set_axis_off()
    step = gap * max((p.grid[0] for p in panels), default=0)
    y0 = 0.0
    for panel in panels:
        rows, cols = panel.grid
        for r in panel.rects:
            _draw_rect(ax, r, y0, placed, height)
        ax.add_patch(Rectangle((0, y0), cols, rows, fill=False, lw=1.2, ec="black"))
        for b in range(1, panel.bands):
            band_y = y0 + b * rows / panel.bands
            ax.plot([0, cols], [band_y, band_y], color="black", lw=0.8, ls=":")
        title = f"{panel.title} {list(panel.shape)}"
        if panel.notes:
            title += "  " + "; ".join(panel.notes)
        ax.text(0, y0 - 0.01 * height, title, fontsize=8, va="bottom", color=rank_color(panel.rank))
        y0 += rows + step


def _draw_rect(ax, r: Rect, y0: float, placed, stack_height: float) -> None:
    face = family_color(r.family, r.shade)
    edge = rank_color(r.src_rank) if r.src_rank is not None else "#999999"
    patch = Rectangle(
        (r.col0, y0 + r.row0),
        r.cols,
        r.rows,
        facecolor=face,
        edgecolor=edge,
        lw=1.0,
        hatch=".." if r.replicated else None,
    )
    ax.add_patch(patch)
    if r.status in ("wrong", "unwritten"):
        ax.add_patch(
            Rectangle(
                (r.col0, y0 + r.row0),
                r.cols,
                r.rows,
                fill=False,
                edgecolor=WARNING_COLOR,
                lw=1.4,
                hatch="///",
            )
        )
    placed[id(r)] = (ax, r.col0, y0 + r.row0, r.cols, r.rows)
    if r.rows >= stack_height / 30:  # label only rects tall enough to read
        ax.text(
            r.col0 + r.cols / 2,
            y0 + r.row0 + r.rows / 2,
            r.label,
            fontsize=6.5,
            ha="center",
            va="center",
            clip_on=True,
        )


def _rect_where(r: Rect) -> str:
    from syncviz.diagram.text import rect_text

    return rect_text(r).split(":", 1)[0]


def _draw_steps(ax, d: LayoutDiagram) -> None:
    ax.set_axis_off()
    ax.set_title("recorded steps", fontsize=10)
    lines = [f"rank {s.rank} {s.phase}: {s.text}" for s in d.steps] or ["(no steps recorded)"]
    if len(lines) > 30:
        lines = [*lines[:30], f"... {len(lines) - 30} more steps"]
    ax.text(
        0.5,
        0.5,
        "\n".join(lines),
        fontsize=7,
        ha="center",
        va="center",
        family="monospace",
        transform=ax.transAxes,
    )
    ax.annotate(
        "",
        xy=(1.0, 0.9),
        xytext=(0.0, 0.9),
        xycoords="axes fraction",
        arrowprops={"arrowstyle": "->", "lw": 1.5},
    )


def _legend(fig: MplFigure, d: LayoutDiagram) -> None:
    handles = [Patch(facecolor=family_color(f), edgecolor="black", label=f) for f in d.families()]
    ranks = sorted({r.src_rank for p in d.src + d.dst for r in p.rects if r.src_rank is not None})
    handles += [
        Patch(facecolor="white", edgecolor=rank_color(k), lw=2, label=f"from rank {k}")
        for k in ranks[:10]
    ]
    if d.wrong_count:
        handles.append(
            Patch(facecolor="white", edgecolor=WARNING_COLOR, hatch="///", label="wrong")
        )
    fig.legend(
        handles=handles,
        loc="upper right",
        fontsize=7.5,
        frameon=False,
        bbox_to_anchor=(0.995, 0.93),
    )


# ---------------------------------------------------------------- transfer map


def render_transfer(d: TransferDiagram) -> Figure:
    """Rank boxes (trainer left, vLLM right), arrows labelled with bytes and parameters."""
    n = max(len(d.src), len(d.dst), 1)
    fig_h = 1.6 + 0.55 * n + 0.25 * (len(d.exchanges) + len(d.notes))
    fig = MplFigure(figsize=(11, fig_h), dpi=DPI)
    ax = fig.add_axes((0.02, 0.02, 0.96, 0.9))
    ax.set_xlim(0, 10)
    ax.set_ylim(n + 0.5, -0.7)
    ax.set_axis_off()
    pos: dict[int, tuple[float, float]] = {}
    for column, boxes, x in ((0, d.src, 0.5), (1, d.dst, 6.0)):
        ax.text(
            x + 1.25,
            -0.45,
            ("trainer" if column == 0 else "vLLM") + " ranks",
            ha="center",
            fontsize=10,
            weight="bold",
        )
        for i, box in enumerate(boxes):
            ax.add_patch(
                Rectangle(
                    (x, i),
                    2.5,
                    0.7,
                    facecolor=rank_color(box.rank),
                    alpha=0.25,
                    edgecolor=rank_color(box.rank),
                    lw=2,
                )
            )
            ax.text(x + 1.25, i + 0.35, box.label, ha="center", va="center", fontsize=8)
            pos[box.rank] = (x, i + 0.35)
    for e in d.edges:
        if e.src not in pos or e.dst not in pos:
            continue
        (xa, ya), (xb, yb) = pos[e.src], pos[e.dst]
        if e.stage == "stage1":
            start, end, rad = (xa + 2.5, ya), (xb, yb), 0.0
        else:  # inside the vLLM side: arc on the right of the boxes
            start, end, rad = (xa + 2.5, ya), (xb + 2.5, yb), -0.5
        ax.add_patch(
            FancyArrowPatch(
                start,
                end,
                arrowstyle="-|>",
                mutation_scale=12,
                connectionstyle=f"arc3,rad={rad}",
                lw=1.3,
                color=rank_color(e.src),
            )
        )
        mx = (start[0] + end[0]) / 2 + (0.6 if rad else 0)
        my = (start[1] + end[1]) / 2
        ax.text(
            mx,
            my - 0.08,
            f"{e.stage}: {e.text}",
            fontsize=7,
            ha="center",
            color=rank_color(e.src),
            bbox={"fc": "white", "ec": "none", "pad": 0.5},
        )
    lines = [x.text for x in d.exchanges] + d.notes
    for i, line in enumerate(lines):
        ax.text(0.1, n + 0.1 + 0.3 * i, line, fontsize=8)
    fig.suptitle("transfer map " + d.title, fontsize=10)
    return Figure(fig)
