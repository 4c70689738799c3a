"""Step frames: one recorded op of a parameter drawn as rasters of what it read and wrote.

>>> from syncviz import Parallel
>>> from syncviz.spec import ModelSpec
>>> from syncviz.run.inprocess import run_sync
>>> from syncviz.diagram.model import layout_diagram
>>> spec = ModelSpec("tiny", "llama-mcore", 1, 8, 4, 2, 8, 64, head_dim=2)
>>> result = run_sync(spec, Parallel(tp=1), Parallel(tp=2), layers=[0])
>>> d = layout_diagram(result, "model.model.layers.0.self_attn.qkv_proj.weight")
>>> f = frame(d, 2)
>>> f.text.split(": ", 1)[0], f.step.blocks
('step 2/15', ('Q head 0', 'Q head 1'))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from syncviz.diagram.model import Panel
from syncviz.diagram.raster import MAX_CELLS, BlockTable, Raster, raster, small_work
from syncviz.journey import TraceStep

if TYPE_CHECKING:
    from syncviz.diagram.model import LayoutDiagram


@dataclass
class Frame:
    """One recorded step drawn: the rasters of what it read and what it wrote."""

    number: int
    total: int
    step: TraceStep
    inputs: list[Panel]
    outputs: list[Panel]

    @property
    def text(self) -> str:
        moved = ", ".join(self.step.blocks) if self.step.blocks else "not replayed on ids"
        return f"step {self.number}/{self.total}: {self.step.text} (holds {moved})"


def _step_raster(t: torch.Tensor, table: BlockTable, cell: tuple[int, int] | None) -> Raster:
    """A step tensor's raster at the diagram's scale, unless that scale would give more
    than MAX_CELLS cells a side (a flat buffer): then its own downsampling."""
    from syncviz.diagram.raster import as_grid

    grid, _ = as_grid(t)
    if cell is not None:
        rows, cols = int(grid.shape[0]), int(grid.shape[1])
        if math.ceil(rows / cell[0]) > 2 * MAX_CELLS or math.ceil(cols / cell[1]) > MAX_CELLS:
            cell = None
    return raster(t, table, cell=cell)


def frame(d: LayoutDiagram, number: int, cell: tuple[int, int] | None = None) -> Frame:
    """Step ``number`` (1-based) of ``d.steps``, its inputs and outputs drawn as rasters."""
    with small_work(0):
        return _frame(d, number, cell)


def _frame(d: LayoutDiagram, number: int, cell: tuple[int, int] | None) -> Frame:
    from syncviz.errors import SyncvizError

    total = len(d.steps)
    if not 1 <= number <= total:
        raise SyncvizError(
            f"step {number} is out of range: {d.key} has {total} recorded steps",
            fix=f"use --step 1..{total}" if total else "leave --step out",
        )
    step = d.steps[number - 1]

    def panels(tensors, refs, kind: str) -> list[Panel]:
        out = []
        for t, ref in zip(tensors or (), refs, strict=False):
            if t is None:
                continue
            title = f"rank {step.rank} {kind} #{ref.ref} {list(ref.shape)}"
            out.append(
                Panel(title, step.rank, "step", tuple(t.shape), _step_raster(t, d.table, cell))
            )
        return out

    return Frame(
        number,
        total,
        step,
        panels(step.inputs, step.op.inputs, "reads"),
        panels(step.outputs, step.op.outputs, "writes"),
    )
