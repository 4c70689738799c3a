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
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg", force=False)

import matplotlib.colors as mcolors
from matplotlib.figure import Figure as MplFigure
from matplotlib.patches import FancyArrowPatch, Patch, Rectangle

from syncviz.diagram.experts import Cell, ExpertDiagram
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
UNWRITTEN_COLOR = "#b0b0b0"  # grey: a slice the sync never wrote
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


def render(diagram: LayoutDiagram | TransferDiagram | ExpertDiagram) -> Figure:
    """Draw any kind of diagram."""
    if isinstance(diagram, LayoutDiagram):
        return render_layout(diagram)
    if isinstance(diagram, ExpertDiagram):
        return render_experts(diagram)
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


# ---------------------------------------------------------------- expert view

# Sizes in inches: every row and column has a fixed size on paper, so labels
# never overlap however many experts there are (the model caps rows and columns).
ROW_H = 0.34
SRC_COL_W = 0.8
DST_COL_W = 0.95
HEADER_H = 0.55
LINE_H = 0.2
CELL_FONT = 8.0
CHAR_W = 0.6 / 72  # inches per point of font size, per character (a safe average)


def expert_cell_color(cell: Cell) -> tuple[float, float, float]:
    """The face colour of an expert-view cell.

    Before: the holding trainer rank's colour (white where it holds nothing);
    after: ok is the expert family colour, wrong the warning colour, unwritten grey.

    >>> expert_cell_color(Cell(1, "whole")) == mcolors.to_rgb(rank_color(1))
    True
    >>> expert_cell_color(Cell(4, "ok")) == family_color("expert")
    True
    """
    if cell.status in ("whole", "part"):
        return mcolors.to_rgb(rank_color(cell.rank))
    if cell.status == "ok":
        return family_color("expert")
    if cell.status == "wrong":
        return mcolors.to_rgb(WARNING_COLOR)
    if cell.status == "unwritten":
        return mcolors.to_rgb(UNWRITTEN_COLOR)
    return (1.0, 1.0, 1.0)


def _fit_font(text: str, width_in: float, largest: float = CELL_FONT) -> float:
    """The largest font size (down to 5 pt) at which ``text`` fits ``width_in`` inches."""
    if not text:
        return largest
    return max(5.0, min(largest, 0.92 * width_in / (CHAR_W * len(text))))


def render_experts(d: ExpertDiagram) -> Figure:
    """Two grids side by side: experts x trainer ranks (before) | experts x vLLM ranks (after).

    ``Figure.rect_pixel(cell)`` locates any drawn :class:`Cell`.

    >>> from syncviz.diagram.experts import ExpertRow, RankColumn
    >>> row = ExpertRow(0, 3, (Cell(0, "whole", "whole"),), (Cell(1, "ok"),))
    >>> d = ExpertDiagram("w", "experts_w2", (4, 4, 4), "w", [RankColumn(0, "rank 0 tp0 ep0")],
    ...     [RankColumn(1, "rank 1 tp0")], [row])
    >>> render_experts(d).size_px[0] >= 800
    True
    """
    explained = _wrong_numbers(d)
    bottom_lines = [f"({n}) {where}: {text}" for text, (n, where) in explained.items()]
    n_wrong = sum(c.status == "wrong" for c in d.cells("after"))
    if len(bottom_lines) > MAX_EXPLANATIONS:
        extra = len(bottom_lines) - MAX_EXPLANATIONS
        bottom_lines = [*bottom_lines[:MAX_EXPLANATIONS], f"... {extra} more explanations"]
    if any(c.status == "part" for c in d.cells("before")):
        bottom_lines.append("1/2, 1/4 ...: the share of the expert that rank holds (a TP slice)")
    bottom_lines += d.notes
    label_font = 8.5
    label_w = max([CHAR_W * label_font * len(r.label) for r in d.rows] + [1.0]) + 0.15
    src_w = SRC_COL_W * max(len(d.src), 1)
    dst_w = DST_COL_W * max(len(d.dst), 1)
    gap, legend_w, margin = 0.55, 1.9, 0.2
    fig_w = max(8.0, margin + label_w + src_w + gap + dst_w + 0.3 + legend_w)
    title = textwrap.fill(d.title, width=int(fig_w / (CHAR_W * 9.5)))
    title_h = 0.3 + 0.18 * (title.count("\n") + 1)
    grid_top = title_h + 0.3 + HEADER_H
    grid_h = ROW_H * max(len(d.rows), 1)
    fig_h = grid_top + grid_h + 0.25 + LINE_H * len(bottom_lines) + 0.2
    fig_h = max(fig_h, grid_top + 0.19 * (len(d.src) + 4) + 0.2)  # room for the legend
    fig = MplFigure(figsize=(fig_w, fig_h), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, fig_w)
    ax.set_ylim(fig_h, 0)  # data units are inches from the top left
    ax.set_axis_off()
    ax.text(fig_w / 2, 0.15, title, ha="center", va="top", fontsize=9.5)
    placed: dict[int, tuple] = {}
    x_src = margin + label_w
    x_dst = x_src + src_w + gap
    for i, row in enumerate(d.rows):
        y = grid_top + i * ROW_H + ROW_H / 2
        ax.text(x_src - 0.1, y, row.label, ha="right", va="center", fontsize=label_font)
    grids = (
        ("before: trainer ranks", d.src, "before", x_src, SRC_COL_W),
        ("after: vLLM ranks", d.dst, "after", x_dst, DST_COL_W),
    )
    for heading, columns, side, x0, col_w in grids:
        ax.text(
            x0 + col_w * len(columns) / 2,
            title_h + 0.15,
            heading,
            ha="center",
            va="center",
            fontsize=9.5,
            weight="bold",
        )
        for j, col in enumerate(columns):
            words = col.label.split(" ", 2)  # "rank 3", "tp1 ep0"
            text = " ".join(words[:2]) + ("\n" + words[2] if len(words) > 2 else "")
            ax.text(
                x0 + (j + 0.5) * col_w,
                grid_top - 0.06,
                text,
                ha="center",
                va="bottom",
                fontsize=_fit_font(max(text.split("\n"), key=len), col_w, 7.5),
                color=rank_color(col.world),
            )
        for i, row in enumerate(d.rows):
            for j, cell in enumerate(getattr(row, side)):
                xy = (x0 + j * col_w, grid_top + i * ROW_H)
                _draw_cell(ax, cell, xy, col_w, explained, placed)
        ax.add_patch(
            Rectangle((x0, grid_top), col_w * len(columns), grid_h, fill=False, ec="black", lw=1.2)
        )
    ax.annotate(
        "",
        xy=(x_dst - 0.08, grid_top + grid_h / 2),
        xytext=(x_src + src_w + 0.08, grid_top + grid_h / 2),
        arrowprops={"arrowstyle": "-|>", "lw": 1.5},
    )
    for k, line in enumerate(bottom_lines):
        is_wrong = line.startswith("(")
        ax.text(
            margin,
            grid_top + grid_h + 0.3 + k * LINE_H,
            line[:200],
            va="center",
            fontsize=7.5,
            family="monospace",
            color=WARNING_COLOR if is_wrong else "black",
        )
    _expert_legend(fig, d, (fig_w - legend_w) / fig_w, 1 - grid_top / fig_h, n_wrong)
    return Figure(fig, placed)


def _wrong_numbers(d: ExpertDiagram) -> dict[str, tuple[int, str]]:
    """Each distinct wrong explanation -> its number in the figure and where it first shows."""
    numbers: dict[str, tuple[int, str]] = {}
    for row in d.rows:
        for cell in row.after:
            if cell.status == "wrong" and cell.text not in numbers:
                numbers[cell.text] = (len(numbers) + 1, f"rank {cell.rank}, {row.label}")
    return numbers


def _draw_cell(ax, cell: Cell, xy, width: float, explained: dict, placed) -> None:
    face = expert_cell_color(cell)
    ax.add_patch(Rectangle(xy, width, ROW_H, facecolor=face, edgecolor="black", lw=0.6))
    if cell.status == "wrong":  # hatch over the warning colour so it reads without colour too
        ax.add_patch(Rectangle(xy, width, ROW_H, fill=False, edgecolor="white", lw=0, hatch="///"))
    placed[id(cell)] = (ax, xy[0], xy[1], width, ROW_H)
    if cell.status == "wrong":
        text = f"wrong ({explained[cell.text][0]})"
    elif cell.status in ("none", "whole"):
        text = "" if cell.status == "none" else "whole"
    elif cell.status == "unwritten" and cell.text:
        text = "part unwritten"
    else:
        text = cell.text or cell.status
    if text:
        ax.text(
            xy[0] + width / 2,
            xy[1] + ROW_H / 2,
            text,
            ha="center",
            va="center",
            fontsize=_fit_font(text, width - 0.1),
            color="white" if cell.status in ("wrong", "whole", "part") else "black",
            weight="bold" if cell.status == "wrong" else "normal",
            bbox={"fc": WARNING_COLOR, "ec": "none", "pad": 1} if cell.status == "wrong" else None,
        )


def _expert_legend(fig: MplFigure, d: ExpertDiagram, x: float, y: float, n_wrong: int) -> None:
    handles = [
        Patch(facecolor=rank_color(c.world), edgecolor="black", label=f"held by {c.label}")
        for c in d.src
    ]
    handles += [
        Patch(facecolor=family_color("expert"), edgecolor="black", label="ok"),
        Patch(facecolor=WARNING_COLOR, edgecolor="white", hatch="///", label="wrong"),
        Patch(facecolor=UNWRITTEN_COLOR, edgecolor="black", label="unwritten"),
    ]
    fig.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(x, y),
        fontsize=7.5,
        frameon=False,
        title=f"{n_wrong} wrong cells" if n_wrong else None,
        title_fontsize=7.5,
    )
