"""matplotlib renderers for the diagram model (with mpl_layout.py and mpl_figure.py, the only
modules here that import matplotlib). Colours come from :mod:`syncviz.diagram.palette`.

>>> from syncviz.diagram.model import RankBox, TransferDiagram
>>> d = TransferDiagram("m", [RankBox(0, "src", "rank 0")], [RankBox(1, "dst", "rank 1")], [], [])
>>> render(d).size_px[0] <= 1100
True
"""

from __future__ import annotations

import math
import textwrap

import matplotlib

matplotlib.use("Agg", force=False)

import matplotlib.colors as mcolors
from matplotlib.figure import Figure as MplFigure
from matplotlib.patches import FancyArrowPatch, Patch, Rectangle

from syncviz.diagram.experts import Cell, ExpertDiagram
from syncviz.diagram.model import LayoutDiagram, TransferDiagram
from syncviz.diagram.mpl_figure import DPI, Figure
from syncviz.diagram.mpl_layout import render_layout
from syncviz.diagram.palette import RANK_COLORS, WRONG

WARNING_COLOR = WRONG
UNWRITTEN_COLOR = "#b0b0b0"  # grey: a slice the sync never wrote
TRANSFER_WIDTH_IN = 9.6
MAX_EXPLANATIONS = 8


def rank_color(rank: int) -> str:
    """The fixed colour of world rank ``rank`` in every figure.

    >>> rank_color(0) == rank_color(len(RANK_COLORS))
    True
    """
    return RANK_COLORS[rank % len(RANK_COLORS)]


def render(diagram: LayoutDiagram | TransferDiagram | ExpertDiagram) -> Figure:
    """Draw any kind of diagram."""
    if isinstance(diagram, LayoutDiagram):
        return render_layout(diagram)
    if isinstance(diagram, ExpertDiagram):
        return render_experts(diagram)
    return render_transfer(diagram)


# ---------------------------------------------------------------- transfer map


def render_transfer(d: TransferDiagram) -> Figure:
    """Rank boxes (trainer left, vLLM right), arrows labelled with bytes and parameters."""
    n = max(len(d.src), len(d.dst), 1)
    fig_h = 1.6 + 0.55 * n + 0.25 * (len(d.exchanges) + len(d.notes))
    # 960 px at 100 dpi with no text under 9 pt: a 970 px notebook cell shows it unshrunk.
    fig = MplFigure(figsize=(TRANSFER_WIDTH_IN, fig_h), dpi=DPI)
    ax = fig.add_axes((0.02, 0.02, 0.96, 0.9))
    ax.set_xlim(0, 10)
    ax.set_ylim(n + 0.5, -0.7)
    ax.set_axis_off()
    pos: dict[int, tuple[float, float]] = {}
    for heading, boxes, x in (("trainer ranks", d.src, 0.2), ("vLLM ranks", d.dst, 5.2)):
        ax.text(x + 1.25, -0.45, heading, ha="center", fontsize=10, weight="bold")
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
            ax.text(x + 1.25, i + 0.35, box.label, ha="center", va="center", fontsize=9)
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
        # stage-2 words to the right of their arc, on two lines, inside the figure
        mx = (start[0] + end[0]) / 2 + (0.55 if rad else 0)
        my = (start[1] + end[1]) / 2
        ax.text(
            mx,
            my - 0.08,
            f"{e.stage}:\n{e.text}" if rad else f"{e.stage}: {e.text}",
            fontsize=9,
            ha="left" if rad else "center",
            va="center" if rad else "baseline",
            color=rank_color(e.src),
            bbox={"fc": "white", "ec": "none", "pad": 0.5},
        )
    lines = [x.text for x in d.exchanges] + d.notes
    for i, line in enumerate(lines):
        ax.text(0.1, n + 0.1 + 0.3 * i, line, fontsize=9)
    fig.suptitle("transfer map " + d.title, fontsize=10)
    return Figure(fig)


# ---------------------------------------------------------------- expert view

# Sizes in inches: every row and column has a fixed size on paper, so labels
# never overlap however many experts there are (the model caps rows and columns).
ROW_H = 0.44  # two lines of 9 pt text
SRC_COL_W = 0.72
DST_COL_W = 0.95
HEADER_H = 0.55
LINE_H = 0.22
CELL_FONT = 9.0
OK_FACE = "#DCD8F0"  # pale indigo: the expert family, light enough for dark text
CHAR_W = 0.6 / 72  # inches per point of font size, per character (a safe average)
MAX_WIDTH_IN = 10.8  # 1080 px at 100 dpi: fits a notebook cell


def expert_cell_color(cell: Cell) -> tuple[float, float, float]:
    """The face colour of an expert-view cell.

    Before: the holding trainer rank's colour (white where it holds nothing);
    after: ok is a pale expert colour, wrong the warning colour, unwritten grey.

    >>> expert_cell_color(Cell(1, "whole")) == mcolors.to_rgb(rank_color(1))
    True
    >>> expert_cell_color(Cell(4, "ok")) == mcolors.to_rgb(OK_FACE)
    True
    """
    if cell.status in ("whole", "part"):
        return mcolors.to_rgb(rank_color(cell.rank))
    faces = {"ok": OK_FACE, "wrong": WARNING_COLOR, "unwritten": UNWRITTEN_COLOR}
    return mcolors.to_rgb(faces.get(cell.status, "white"))


def render_experts(d: ExpertDiagram, max_width_in: float = MAX_WIDTH_IN) -> Figure:
    """Two grids side by side: experts x trainer ranks (before) | experts x vLLM ranks (after).

    The figure is at most ``max_width_in`` wide (1080 px by default) at any rank
    count: vLLM rank columns that do not fit beside the before grid wrap into
    further after grids below it, each with the expert labels again; no text is
    smaller than 9 pt. ``Figure.rect_pixel(cell)`` locates any drawn :class:`Cell`.

    >>> from syncviz.diagram.experts import ExpertRow, RankColumn
    >>> row = ExpertRow(0, 3, (Cell(0, "whole", "whole"),), (Cell(1, "ok"),))
    >>> d = ExpertDiagram("w", "experts_w2", (4, 4, 4), "w", [RankColumn(0, "rank 0 tp0 ep0")],
    ...     [RankColumn(1, "rank 1 tp0")], [row])
    >>> 800 <= render_experts(d).size_px[0] <= 1100
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
    label_font = 9.0
    label_w = max([CHAR_W * label_font * len(r.label) for r in d.rows] + [1.0]) + 0.15
    longest = max(
        [len(part) for c in d.cells("after") for part in _cell_words(c, {}).split("\n")] + [1]
    )
    gap, margin = 0.55, 0.2
    x_src = margin + label_w
    room = max_width_in - x_src - 0.3  # the width right of the expert labels
    dst_col_w = min(max(DST_COL_W, CHAR_W * CELL_FONT * longest + 0.15), room)
    src_w = SRC_COL_W * max(len(d.src), 1)
    beside = max(0, int((room - src_w - gap) // dst_col_w))
    chunks = _column_chunks(len(d.dst), beside, max(1, int(room // dst_col_w)))
    widest = max([src_w + gap + dst_col_w * len(chunks[0])] + [dst_col_w * len(c) for c in chunks])
    fig_w = min(max_width_in, max(8.0, x_src + widest + 0.3))
    wrap_at = int((fig_w - 2 * margin) / (CHAR_W * 9))  # monospace 9 pt characters a line
    bottom_lines = [
        part
        for line in bottom_lines
        for part in textwrap.wrap(line, wrap_at, subsequent_indent="  ")
    ]
    title = textwrap.fill(d.title, width=int(fig_w / (CHAR_W * 9.5)))
    title_h = 0.3 + 0.18 * (title.count("\n") + 1)
    grid_h = ROW_H * max(len(d.rows), 1)
    block_h = 0.3 + HEADER_H + grid_h  # a heading, the column labels, the grid
    n_blocks = len(chunks) if chunks[0] else len(chunks) + 1
    legend_h = 0.3 * math.ceil((len(d.src) + 3) / 4) + 0.1
    grids_h = n_blocks * block_h + (n_blocks - 1) * 0.25
    fig_h = title_h + grids_h + 0.25 + LINE_H * len(bottom_lines) + legend_h + 0.2
    fig = MplFigure(figsize=(fig_w, fig_h), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, fig_w)
    ax.set_ylim(fig_h, 0)  # data units are inches from the top left
    ax.set_axis_off()
    ax.text(fig_w / 2, 0.15, title, ha="center", va="top", fontsize=10)
    placed: dict[int, tuple] = {}
    # Block 0: before grid, then (if any fit) the first after columns beside it.
    grids = [(0, "before: trainer ranks", list(enumerate(d.src)), "before", x_src, SRC_COL_W)]
    x_dst = x_src + src_w + gap
    first = True
    for k, chunk in enumerate(chunks):
        if not chunk:
            continue
        block = k if chunks[0] else k + 1
        heading = f"after: {d.engine} ranks" + ("" if first else " (continued)")
        x0 = x_dst if block == 0 else x_src
        grids.append((block, heading, [(j, d.dst[j]) for j in chunk], "after", x0, dst_col_w))
        first = False
    for block, heading, columns, side, x0, col_w in grids:
        top = title_h + block * (block_h + 0.25)
        grid_top = top + 0.3 + HEADER_H
        if side == "before" or block > 0:
            for i, row in enumerate(d.rows):
                y = grid_top + i * ROW_H + ROW_H / 2
                ax.text(x_src - 0.1, y, row.label, ha="right", va="center", fontsize=label_font)
        ax.text(
            x0 + col_w * len(columns) / 2,
            top + 0.15,
            heading,
            ha="center",
            va="center",
            fontsize=9.5,
            weight="bold",
        )
        for n, (j, col) in enumerate(columns):
            words = col.label.split(" ", 2)  # "rank 3", "tp1 ep0"
            text = " ".join(words[:2]) + ("\n" + words[2] if len(words) > 2 else "")
            ax.text(
                x0 + (n + 0.5) * col_w,
                grid_top - 0.06,
                text,
                ha="center",
                va="bottom",
                fontsize=9,
                color="black",
            )
            for i, row in enumerate(d.rows):
                cell = getattr(row, side)[j]
                xy = (x0 + n * col_w, grid_top + i * ROW_H)
                _draw_cell(ax, cell, xy, col_w, explained, placed)
        ax.add_patch(
            Rectangle((x0, grid_top), col_w * len(columns), grid_h, fill=False, ec="black", lw=1.2)
        )
    mid = title_h + 0.3 + HEADER_H + grid_h / 2
    if chunks[0]:
        ax.annotate(
            "",
            xy=(x_dst - 0.08, mid),
            xytext=(x_src + src_w + 0.08, mid),
            arrowprops={"arrowstyle": "-|>", "lw": 1.5},
        )
    lines_top = title_h + grids_h
    for k, line in enumerate(bottom_lines):
        is_wrong = line.startswith("(")
        ax.text(
            margin,
            lines_top + 0.3 + k * LINE_H,
            line,
            va="center",
            fontsize=9,
            family="monospace",
            color=WARNING_COLOR if is_wrong else "black",
        )
    _expert_legend(fig, d, 0.02, (legend_h + 0.05) / fig_h, n_wrong)
    return Figure(fig, placed)


def _column_chunks(n: int, beside: int, per_row: int) -> list[list[int]]:
    """vLLM column indices per after grid: ``beside`` next to the before grid (maybe
    none), then ``per_row`` per grid below.

    >>> _column_chunks(8, 3, 6), _column_chunks(2, 0, 6), _column_chunks(4, 5, 6)
    ([[0, 1, 2], [3, 4, 5, 6, 7]], [[], [0, 1]], [[0, 1, 2, 3]])
    """
    chunks = [list(range(min(beside, n)))]
    j = len(chunks[0])
    while j < n:
        chunks.append(list(range(j, min(n, j + per_row))))
        j += per_row
    return chunks


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
    text = _cell_words(cell, explained)
    if text:
        ax.text(
            xy[0] + width / 2,
            xy[1] + ROW_H / 2,
            text,
            ha="center",
            va="center",
            fontsize=CELL_FONT,
            color=_ink(face),
            weight="bold" if cell.status == "wrong" else "normal",
            bbox={"fc": WARNING_COLOR, "ec": "none", "pad": 1} if cell.status == "wrong" else None,
        )


def _cell_words(cell: Cell, explained: dict) -> str:
    """What a cell says on the figure: the FFN slice held (one part per line), or a status."""
    if cell.status == "wrong":
        number = explained.get(cell.text, (0,))[0]
        return f"wrong ({number})" if number else "wrong"
    if cell.status in ("none", "whole"):
        return "" if cell.status == "none" else "whole"
    if cell.status == "unwritten" and cell.text:
        return "part unwritten"
    return (cell.text or cell.status).replace(", ", "\n")


def _ink(face) -> str:
    """Black text on light faces, white on dark ones."""
    r, g, b = face[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "white"


def _expert_legend(fig: MplFigure, d: ExpertDiagram, x: float, y: float, n_wrong: int) -> None:
    handles = [
        Patch(facecolor=rank_color(c.world), edgecolor="black", label=f"held by {c.label}")
        for c in d.src
    ]
    handles += [
        Patch(facecolor=OK_FACE, edgecolor="black", label="ok (the slice it holds)"),
        Patch(facecolor=WARNING_COLOR, edgecolor="white", hatch="///", label="wrong"),
        Patch(facecolor=UNWRITTEN_COLOR, edgecolor="black", label="unwritten"),
    ]
    fig.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(x, y),
        ncol=4,
        fontsize=9,
        frameon=False,
        title=f"{n_wrong} wrong cells" if n_wrong else None,
        title_fontsize=9,
    )
