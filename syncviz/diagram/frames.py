"""Step frames: one recorded op of a parameter, and where it sits on the big panels.

Frame k draws step k's input and output tensors as rasters, and on the big
panels marks where it sits:

- read: the trainer cells holding the data its result carries (a getitem of a
  view reads only the part it takes); when it runs on a trainer rank, on its
  own shard, and on other shards only for data its own does not hold (routed
  experts gathered from the other ranks); on a vLLM rank, on every shard
  holding that data;
- wrote: the vLLM cells its result ends up in; only its own rank's tensor
  when it runs on a vLLM rank;
- filled: every vLLM tensor as written by steps 1..k. A vLLM element is
  written by the first step on its rank whose result holds its data; on a
  rank with no replayed step, by the last step anywhere that moved that data.
  Padding appears with the rank's first written element; what no replayed
  step accounts for appears at the last step, so the last frame is the tensor
  as the sync left it.

Downsampling never hides a mark: a cell is read or written when any of its
elements is. A cell is drawn filled once all its elements are written; while
only some are, it is drawn in its colour marked mixed (the rasters' sign for
a cell holding more than one thing: dotted with the unwritten white in the
figures, ``~`` in text), with no wrong mark until it is complete.

A vLLM tensor's elements are known from its raster and the oracle: where the
checker calls a cell right they are what the oracle expects. A cell with a
wrong element is read from the rank's last replayed result of the tensor's
size that agrees with every known element (each cell's first, every right
cell); without one, only its first element is known and the others are taken
as the oracle expects.

Every mark is a question on the *set* of ids a step carries
(:class:`~syncviz.idset.IdSet`): which cells of a trainer shard hold one of them
(the shard's map, cell by cell), which vLLM cells' first ids are among them,
which step first (or last) carried each vLLM cell. So a frame costs the maps'
runs of ids and the rasters' cells, never a tensor's elements, at any size.

>>> from syncviz.diagram.model import layout_diagram
>>> from syncviz.run.inprocess import tiny_run
>>> result = tiny_run()
>>> d = layout_diagram(result, "model.model.layers.0.self_attn.qkv_proj.weight")
>>> f = frame(d, 2)
>>> f.text.split(": ", 1)[0], f.step.blocks
('step 2/15', ('Q head 0', 'Q head 1'))
>>> f.region_lines()
['reads trainer tp 0 (rank 0) rows 0-3', 'writes vLLM tp 0 (rank 1) rows 0-3']
>>> [p.actual.cells for p in f.filled], int((f.filled[0].actual.block == -2).sum())
([(8, 8), (8, 8)], 64)
"""

from __future__ import annotations

import math
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from syncviz.diagram.frame_cells import Fill, cell_ids, filled, spans
from syncviz.diagram.panel import Panel
from syncviz.diagram.raster import (
    MAX_CELLS,
    BlockTable,
    Raster,
    cells_touched,
    grid_map,
    grid_shape,
    map_raster,
    small_work,
)
from syncviz.errors import SyncvizError
from syncviz.idset import IdSet, cells_meeting
from syncviz.journey import TraceStep, carried_words, step_ids
from syncviz.provenance import RegionMap, map_of

if TYPE_CHECKING:
    from syncviz.diagram.model import LayoutDiagram
    from syncviz.oracle import ParamLayout

READ = "#000000"  # outline of the trainer cells a step read (over white)
WROTE = "#EE7733"  # outline of the vLLM cells its result lands in (Tol vibrant orange)


@dataclass
class Frame:
    """One recorded step drawn: the rasters of what it read and what it wrote, and on the
    big panels where that is.

    ``read[i]`` marks the cells of trainer panel ``d.src[i]`` holding data the
    step read (None: none); ``wrote[i]`` the cells of vLLM panel ``d.dst[i]``
    its result ends up in; ``filled[i]`` is ``d.dst[i]`` as written by steps
    1..number (unwritten cells hold the unwritten block, status 0).
    """

    number: int
    total: int
    step: TraceStep
    inputs: list[Panel]
    outputs: list[Panel]
    read: list[torch.Tensor | None] = field(default_factory=list)
    wrote: list[torch.Tensor | None] = field(default_factory=list)
    filled: list[Panel] = field(default_factory=list)
    src: list[Panel] = field(default_factory=list)  # the trainer panels ``read`` marks
    dst: list[Panel] = field(default_factory=list)  # the vLLM panels as the sync left them
    param: ParamLayout | None = field(default=None, repr=False)  # names the step's blocks

    @property
    def text(self) -> str:
        """``step k/n: <rank> <phase>: <op on shapes> (holds <blocks>)``, the blocks in
        :func:`~syncviz.journey.carried_words` (rows of those it holds in part)."""
        blocks = self.step.blocks
        moved = "not replayed on ids"
        if blocks:
            moved = carried_words(self.param, self.step) if self.param else ", ".join(blocks)
        return f"step {self.number}/{self.total}: {self.step.text} (holds {moved})"

    def region_lines(self) -> list[str]:
        """``reads <panel> rows a-b`` / ``writes <panel> rows a-b``, one per marked panel;
        rows of the drawn grid (a 3-D expert tensor stacks its experts' rows)."""
        lines = []
        for verb, panels, marks in (
            ("reads", self.src, self.read),
            ("writes", self.dst, self.wrote),
        ):
            for p, cells in zip(panels, marks, strict=True):
                if cells is not None:
                    lines.append(f"{verb} {p.title} {spans(cells, p.actual)}")
        return lines


_STEP_RASTERS: OrderedDict[tuple, tuple[weakref.ref, Raster]] = OrderedDict()
STEP_RASTERS_KEPT = 256  # a step's result is the next step's input: drawn once for both


def _step_raster(t: torch.Tensor, table: BlockTable, cell: tuple[int, int] | None) -> Raster:
    """A step tensor's raster at the diagram's scale, unless that scale would give more
    than MAX_CELLS cells a side (a flat buffer): then its own downsampling. Kept while the
    tensor lives, so the frames that show it (its step's and the next's) draw it once."""
    key = (id(t), id(table), cell)
    held = _STEP_RASTERS.get(key)
    if held is not None and held[0]() is t and held[1].table is table:
        return held[1]
    if cell is not None:
        rows, cols = grid_shape(t.shape)
        if math.ceil(rows / cell[0]) > 2 * MAX_CELLS or math.ceil(cols / cell[1]) > MAX_CELLS:
            cell = None
    drawn = map_raster(map_of(t), table, cell=cell)  # a step tensor holds local ids
    _STEP_RASTERS[key] = (weakref.ref(t), drawn)
    while len(_STEP_RASTERS) > STEP_RASTERS_KEPT:
        _STEP_RASTERS.popitem(last=False)
    return drawn


@small_work(0)
def frame(d: LayoutDiagram, number: int, cell: tuple[int, int] | None = None) -> Frame:
    """Step ``number`` (1-based) of ``d.steps``: its inputs and outputs drawn as rasters,
    its marks on the big panels, and the vLLM tensors as written so far."""
    total = len(d.steps)
    if not 1 <= number <= total:
        raise SyncvizError(
            f"step {number} is out of range: {d.key} has {total} recorded steps",
            fix=f"use --step 1..{total}" if total else "leave --step out",
        )
    step = d.steps[number - 1]

    def panels(tensors, kind: str) -> list[Panel]:
        out = []
        for t in tensors or ():
            if t is None:
                continue
            title = f"{step.who} {kind}"  # its shape is the panel's (drawn beside it)
            out.append(
                Panel(title, step.rank, "step", tuple(t.shape), _step_raster(t, d.table, cell))
            )
        return out

    f = Frame(
        number,
        total,
        step,
        panels(step.inputs, "reads"),
        panels(step.outputs, "writes"),
        param=d.table.param,
    )
    mark(d, f)
    return f


# ---------------------------------------------------------------- marks, from maps


@dataclass
class _Known:
    """What every frame of one diagram reads: computed once, held while the diagram lives."""

    shard_grids: list[RegionMap]  # per trainer panel, its shard's ids on the raster grid
    shard_sets: list[IdSet]  # per trainer panel, the ids its shard holds
    cell_ids: list[torch.Tensor]  # per vLLM panel, each cell's first id
    outs: list[IdSet | None]  # per step, the ids its result holds (None: not replayed)
    fills: list  # per vLLM panel: a Fill, or per cell the step that writes its first element


_KNOWN: dict[int, tuple[weakref.ref, _Known]] = {}


def known(d: LayoutDiagram) -> _Known:
    held = _KNOWN.get(id(d))
    if held is not None and held[0]() is d:
        return held[1]
    shards = [s.index for s in d.table.param.src]
    outs = [step_ids(s.outputs) if s.outputs else None for s in d.steps]
    dst_ids = [cell_ids(p.actual) for p in d.dst]
    got = _Known(
        [grid_map(m) for m in shards],
        [IdSet.of([m]) for m in shards],
        dst_ids,
        outs,
        _fill_steps(d, dst_ids, outs),
    )
    _KNOWN[id(d)] = (weakref.ref(d), got)
    weakref.finalize(d, _KNOWN.pop, id(d), None)
    return got


def _fill_steps(d: LayoutDiagram, dst_ids: list[torch.Tensor], outs) -> list:
    """The step that writes each vLLM cell, as the module's opening says, on id sets: per
    vLLM panel a :class:`~syncviz.diagram.frame_cells.Fill` (or, where the panel has no grid
    map, each cell's first element's step)."""
    total = len(d.steps)
    fills: list = []
    for p, ids in zip(d.dst, dst_ids, strict=True):
        own = [k for k, s in enumerate(d.steps) if s.rank == p.rank and outs[k] is not None]
        if own and p.grid is not None:
            fills.append(_grid_fill(p, [(k + 1, outs[k]) for k in own], total))
            continue
        order = own if own else [k for k in range(total) if outs[k] is not None]
        # Own steps: the first that holds it; else the last move of that data anywhere.
        fill = torch.full(ids.shape, total + 1, dtype=torch.int64)
        for k in order:
            hit = outs[k].contains(ids)
            fill = torch.where(hit & (fill > k + 1) if own else hit, k + 1, fill)
        data = ids >= 0
        first = int(fill[data & (fill <= total)].min()) if bool((fill <= total).any()) else total
        fill = torch.where(~data, min(first, total), fill)
        fills.append(fill.clamp(max=max(total, 1)))
    return fills


def _grid_fill(p, steps: list[tuple[int, IdSet]], total: int):
    """Per cell of a vLLM panel: the first of its own ``steps`` that writes any element,
    and the one after which every element is written (every id of the grid map counts;
    padding and other markers count as written at the panel's first write)."""
    grid, cell = p.grid, p.actual.cell
    shape = tuple(p.actual.block.shape)
    never = total + 1
    some = torch.full(shape, never, dtype=torch.int64)
    done = torch.full(shape, never, dtype=torch.int64)
    pending = data = IdSet.of([grid])
    has_data = cells_meeting(grid, cell, data)
    for k, out in steps:
        some = torch.where(cells_meeting(grid, cell, out) & (some > k), k, some)
        pending = pending.minus(out)
        left = cells_meeting(grid, cell, pending)
        done = torch.where(~left & (done > k), k, done)
    written = some[has_data & (some <= total)]
    first = int(written.min()) if written.numel() else total
    markers = _marker_cells(grid, cell, shape)
    some = torch.where(has_data, some, first)
    done = torch.where(has_data, done, first)
    some = torch.where(markers, some.clamp(max=first), some)
    done = torch.where(markers, done.clamp(min=first), done)
    top = max(total, 1)
    return Fill(some.clamp(max=top), done.clamp(max=top))


def _marker_cells(grid: RegionMap, cell: tuple[int, int], shape: tuple[int, int]) -> torch.Tensor:
    """Cells holding any marker (padding, unwritten, another parameter's data)."""
    out = torch.zeros(shape, dtype=torch.bool)
    for r in grid.regions:
        if r.is_constant and r.offset < 0:
            (r0, c0), (r1, c1) = r.start, r.stop
            i0, i1, j0, j1 = cells_touched(r0, r1, c0, c1, *cell)
            out[i0:i1, j0:j1] = True
    return out


def mark(d: LayoutDiagram, f: Frame) -> None:
    """Fill ``f.read``, ``f.wrote`` and ``f.filled`` on the panels of ``d``, on id sets."""
    step = f.step
    f.src, f.dst = list(d.src), list(d.dst)
    k = known(d)
    wrote = k.outs[f.number - 1]
    read = wrote if wrote is not None else (step_ids(step.inputs) if step.inputs else None)
    own_src = [i for i, p in enumerate(d.src) if p.rank == step.rank]
    others = read
    if read is not None and own_src:
        # Its own shard first; other shards only for data it does not hold (an exchange
        # of routed experts), never for a replica of its own (dense weights under ep).
        for i in own_src:
            others = others.minus(k.shard_sets[i])
    for i, p in enumerate(d.src):
        cells = None
        if read is not None:
            wanted = read if i in own_src else others
            if wanted is not None and not wanted.empty:
                hit = cells_meeting(k.shard_grids[i], p.actual.cell, wanted)
                cells = hit if bool(hit.any()) else None
        f.read.append(cells)
    own_dst = [i for i, p in enumerate(d.dst) if p.rank == step.rank]
    for i, p in enumerate(d.dst):
        cells = None
        if wrote is not None and (not own_dst or i in own_dst):
            # Any element of a cell, where the panel keeps its grid map; else its first.
            if p.grid is not None:
                hit = cells_meeting(p.grid, p.actual.cell, wrote)
            else:
                hit = wrote.contains(k.cell_ids[i])
            cells = hit if bool(hit.any()) else None
        f.wrote.append(cells)
    for p, fill in zip(d.dst, k.fills, strict=True):
        # Without a grid map a cell is judged by its first element: written whole at once.
        whole = fill if isinstance(fill, Fill) else Fill(fill, fill)
        f.filled.append(filled(p, whole, f.number))
