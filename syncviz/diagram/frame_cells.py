"""What a step frame (:mod:`syncviz.diagram.frames`) reads off a raster cell by cell: each
cell's first global id, the element rows of marked cells, and a vLLM panel as written by
steps 1..k.

>>> fill = Fill(some=torch.tensor([[1, 2]]), all=torch.tensor([[3, 2]]))
>>> (fill.all <= 2).tolist()  # after step 2, the second cell is whole, the first in part
[[False, True]]
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from syncviz.diagram.panel import Panel
from syncviz.diagram.raster import UNWRITTEN, Raster


def cell_ids(r: Raster) -> torch.Tensor:
    """The global id of each cell's first element (negative blocks keep their number),
    rebuilt from its block and row-major offset inside the block's box.

    >>> from syncviz.run.inprocess import tiny_run
    >>> from syncviz.diagram.raster import BlockTable, raster
    >>> qkv = tiny_run().plan.layout.params[1]
    >>> ids = qkv.dst[1].index.ids()
    >>> bool((cell_ids(raster(ids, BlockTable(qkv))) == ids).all())
    True
    """
    table = r.table
    b = r.block.to(torch.int64)
    safe = b.clamp(min=0)
    rest = r.offset.to(torch.int64).clone()
    ext, start = table.extent[safe], table.start[safe]  # [nr, nc, dims]
    coords = []
    for dim in reversed(range(len(table.shape))):
        coords.insert(0, start[..., dim] + rest % ext[..., dim])
        rest = rest // ext[..., dim]
    ids = torch.zeros_like(b)
    for dim, n in enumerate(table.shape):
        ids = ids * n + coords[dim]
    return torch.where(b >= 0, ids, b)


def spans(cells: torch.Tensor, r: Raster) -> str:
    """The element rows (and columns, when not all) of the marked cells: ``rows 0-3``."""
    rows = cells.any(dim=1)
    cols = cells.any(dim=0)
    rs, cs = r.cell
    text = "rows " + _runs(rows, rs, r.rows)
    if not bool(cols.all()):
        text += ", cols " + _runs(cols, cs, r.cols)
    return text


def _runs(flags: torch.Tensor, per: int, limit: int) -> str:
    out: list[list[int]] = []
    for i in torch.nonzero(flags).flatten().tolist():
        a, b = i * per, min(limit, (i + 1) * per) - 1
        if out and out[-1][1] == a - 1:
            out[-1][1] = b
        else:
            out.append([a, b])
    return ", ".join(f"{a}-{b}" if b > a else str(a) for a, b in out)


@dataclass
class Fill:
    """Per cell of one vLLM panel: the first step that writes any of its elements, and the
    one after which all are written."""

    some: torch.Tensor
    all: torch.Tensor


def filled(p: Panel, fill: Fill, number: int) -> Panel:
    """``p`` as written by steps 1..number: whole cells as they end up, cells written in
    part marked mixed (see the module text)."""
    r = p.actual
    done = fill.all <= number
    shown = fill.some <= number
    partly = shown & ~done
    unwritten = torch.full_like(r.block, UNWRITTEN)
    drawn = dataclasses.replace(
        r,
        block=torch.where(shown, r.block, unwritten),
        offset=torch.where(shown, r.offset, torch.zeros_like(r.offset)),
        inner=torch.where(shown, r.inner, torch.zeros_like(r.inner)),
        mixed=(r.mixed & done) | partly,
        status=torch.where(done, r.status, torch.zeros_like(r.status)),
    )
    return Panel(p.title, p.rank, "dst", p.shape, drawn, p.expected)
