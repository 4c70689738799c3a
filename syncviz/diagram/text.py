"""Text renderings of the diagram model: one line per panel, rect, step and arrow.

>>> from syncviz.diagram.model import Edge, RankBox, TransferDiagram
>>> d = TransferDiagram("m: src tp1 -> dst tp2", [RankBox(0, "src", "rank 0: pp0 tp0")],
...     [RankBox(1, "dst", "rank 1: pp0 tp0")], [Edge(0, 1, "stage1", 3072, 4)], [])
>>> print(transfer_text(d))
transfer m: src tp1 -> dst tp2
source ranks: rank 0: pp0 tp0
destination ranks: rank 1: pp0 tp0
stage1: 0 -> 1  3.0 KiB, 4 params
"""

from __future__ import annotations

from syncviz.diagram.model import LayoutDiagram, Panel, Rect, TransferDiagram


def rect_text(r: Rect) -> str:
    """One rect: its rows/cols, block, source rank and status (with the explanation).

    >>> rect_text(Rect(0, 2, 0, 8, "Q head 1", "q", 1, 0, "ok"))
    'rows 0-1 cols 0-7: Q head 1 [q1] from rank 0 ok'
    """
    where = f"rows {_span(r.row0, r.row1)} cols {_span(r.col0, r.col1)}"
    origin = "" if r.src_rank is None else f" from rank {r.src_rank}"
    if r.replicated:
        origin += " (replicated)"
    text = f"{where}: {r.label} [{r.family}{r.shade}]{origin} {r.status}"
    if r.explanation:
        text += f": {r.explanation}"
    return text


def _span(a: int, b: int) -> str:
    return str(a) if b - a == 1 else f"{a}-{b - 1}"


def panel_text(panel: Panel, indent: str = "  ") -> list[str]:
    """A panel's header line then its rects, indented."""
    bands = f", {panel.bands} expert bands" if panel.bands else ""
    lines = [f"{indent}{panel.title} {list(panel.shape)}{bands}"]
    lines += [f"{indent}  {rect_text(r)}" for r in panel.rects]
    lines += [f"{indent}  {note}" for note in panel.notes]
    return lines


def layout_text(d: LayoutDiagram) -> str:
    """The whole layout diagram as text (what tests compare)."""
    lines = [f"layout {d.title}", "source"]
    for panel in d.src:
        lines += panel_text(panel)
    if d.steps:
        lines.append("steps")
        for step in d.steps:
            lines.append(f"  rank {step.rank} {step.phase}: {step.text}")
    lines.append("destination")
    for panel in d.dst:
        lines += panel_text(panel)
    lines += d.notes
    if d.problems:
        lines.append("check")
        lines += [f"  {p}" for p in d.problems]
    return "\n".join(lines)


def transfer_text(d: TransferDiagram) -> str:
    """The transfer map as text: ranks, one line per arrow, expert exchanges, notes."""
    lines = [
        f"transfer {d.title}",
        "source ranks: " + ", ".join(b.label for b in d.src),
        "destination ranks: " + ", ".join(b.label for b in d.dst),
    ]
    lines += [f"{e.stage}: {e.src} -> {e.dst}  {e.text}" for e in d.edges]
    lines += [x.text for x in d.exchanges]
    lines += d.notes
    return "\n".join(lines)
