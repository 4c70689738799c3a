"""Text renderings of the diagram model: what tests compare, and what the CLI prints.

>>> from syncviz.diagram.model import Edge, RankBox, TransferDiagram
>>> d = TransferDiagram("m: src tp1 -> dst tp2", [RankBox(0, "src", "tp 0 (rank 0)")],
...     [RankBox(1, "dst", "tp 0 (rank 1)")], [Edge(0, 1, "stage1", 3072, 4)], [])
>>> print(transfer_text(d))
transfer m: src tp1 -> dst tp2
source ranks: tp 0 (rank 0)
destination ranks: tp 0 (rank 1)
stage1: 0 -> 1  3.0 KiB, 4 params
"""

from __future__ import annotations

from syncviz.diagram.model import Band, LayoutDiagram, Panel, TransferDiagram
from syncviz.diagram.raster import raster_text


def panel_text(panel: Panel, indent: str = "  ", inner: bool = False) -> list[str]:
    """A panel's header, its raster (and the expected one), its wrong regions."""
    rs, cs = panel.actual.cell
    cell = "" if (rs, cs) == (1, 1) else f", cells of {rs}x{cs}"
    bands = f", {panel.actual.bands} experts" if panel.actual.bands else ""
    lines = [f"{indent}{panel.title} {list(panel.shape)}{bands}{cell}"]
    holds = raster_text(panel.actual, inner).splitlines()
    if panel.expected is None:
        return lines + [f"{indent}  {line}" for line in holds]
    lines.append(f"{indent}  holds")
    lines += [f"{indent}    {line}" for line in holds]
    if panel.regions or panel.wrong_cells:
        lines.append(f"{indent}  expected")
        lines += [f"{indent}    {line}" for line in raster_text(panel.expected, inner).splitlines()]
    for label, ranks in panel.shared.items():
        lines.append(f"{indent}  {label} shared with rank(s) {', '.join(map(str, ranks))}")
    lines += [f"{indent}  WRONG {r.text}" for r in panel.regions]
    return lines


def band_text(b: Band, table) -> str:
    """One band: ``rank 0 rows 4-5 -> rank 2 rows 0-1: K head 0 wrong``."""
    return (
        f"rank {b.src} {_span(*b.src_span)} -> rank {b.dst} {_span(*b.dst_span)}:"
        f" {table.labels[b.block]}{' WRONG' if b.wrong else ''}"
    )


def _span(a: int, b: int) -> str:
    return str(a) if b - a == 1 else f"{a}-{b - 1}"


def layout_text(d: LayoutDiagram, inner: bool = False) -> str:
    """The whole layout diagram as text; ``inner`` adds each cell's row inside its block."""
    unit = "rows" if d.axis == 0 else "cols"
    lines = [f"layout {d.title}", "trainer"]
    for panel in d.src:
        lines += panel_text(panel, inner=inner)
    lines.append(d.engine)
    for panel in d.dst:
        lines += panel_text(panel, inner=inner)
    lines.append(f"movement ({unit})")
    lines += [f"  {band_text(b, d.table)}" for b in d.bands]
    if d.frame is not None:
        lines.append(d.frame.text)
        for panel in d.frame.inputs + d.frame.outputs:
            lines += panel_text(panel, inner=inner)
        lines += [f"  {line}" for line in d.frame.region_lines()]
        lines.append(f"{d.engine} as written by steps 1-{d.frame.number}")
        for panel in d.frame.filled:
            lines.append(f"  {panel.title}")
            lines += [f"    {line}" for line in raster_text(panel.actual, inner).splitlines()]
    if d.problems:
        lines.append("synchronizer errors")
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
