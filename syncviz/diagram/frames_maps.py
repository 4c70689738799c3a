"""Step frames of a symbolic run: the same marks as :mod:`syncviz.diagram.frames`, read
from maps.

A symbolic run's replayed steps hold their ids as maps
(:class:`~syncviz.provenance.SymbolicTensor`). Every mark of a frame is a
question on the *set* of ids a step carries (:class:`~syncviz.idset.IdSet`):
which cells of a trainer shard hold one of them (the shard's map, cell by
cell), which vLLM cells' first ids are among them, which step first (or last)
carried each vLLM cell. So a frame costs the maps' runs of ids and the
rasters' cells, never a tensor's elements, and equals the frame of the same
run with materialized ids (tests/test_frames_maps.py).

>>> from syncviz import Parallel
>>> from syncviz.spec import ModelSpec
>>> from syncviz.run.inprocess import run_sync
>>> from syncviz.diagram.model import layout_diagram
>>> from syncviz.diagram.frames import frame
>>> spec = ModelSpec("tiny", "llama-mcore", 1, 8, 4, 2, 8, 64, head_dim=2)
>>> result = run_sync(spec, Parallel(tp=1), Parallel(tp=2), layers=[0], provenance="symbolic")
>>> d = layout_diagram(result, "model.model.layers.0.self_attn.qkv_proj.weight")
>>> frame(d, 2).region_lines()
['reads trainer pp0 tp0 (rank 0) rows 0-3', 'writes vLLM pp0 tp0 (rank 1) rows 0-3']
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from syncviz.diagram.frame_cells import Fill, cell_ids, filled
from syncviz.diagram.raster import BlockTable, Raster
from syncviz.diagram.raster_maps import grid_map, map_raster
from syncviz.idset import IdSet, cells_meeting
from syncviz.journey import step_ids
from syncviz.provenance import RegionMap, map_of
from syncviz.run.symbolic_state import shard_map

if TYPE_CHECKING:
    from syncviz.diagram.frames import Frame
    from syncviz.diagram.model import LayoutDiagram


def grid_shape(t: torch.Tensor) -> tuple[int, int]:
    """The raster grid's shape of a step tensor (:func:`~syncviz.diagram.raster.as_grid`)."""
    shape = tuple(t.shape)
    if len(shape) == 1:
        return 1, shape[0]
    if len(shape) == 3:
        return shape[0] * shape[1], shape[2]
    return shape[0], math.prod(shape[1:])


def step_raster(t: torch.Tensor, table: BlockTable, cell: tuple[int, int] | None) -> Raster:
    """The raster of a step tensor held as a map (local ids)."""
    return map_raster(map_of(t), table, cell=cell)


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
    shards = [shard_map(s.index, 0) for s in d.table.param.src]
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
    """As :func:`syncviz.diagram.frames._fill_steps`, on id sets: per vLLM panel a
    :class:`~syncviz.diagram.frame_cells.Fill` (or, where the panel has no grid map, each
    cell's first element's step)."""

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
    padding and other markers count as written at the panel's first write), as
    :func:`syncviz.diagram.frames._fill_steps` does element by element."""
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
    rs, cs = cell
    out = torch.zeros(shape, dtype=torch.bool)
    for r in grid.regions:
        if r.is_constant and r.offset < 0:
            (r0, c0), (r1, c1) = r.start, r.stop
            out[r0 // rs : (r1 - 1) // rs + 1, c0 // cs : (c1 - 1) // cs + 1] = True
    return out


def mark(d: LayoutDiagram, f: Frame) -> None:
    """As :func:`syncviz.diagram.frames._mark`, on id sets."""
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
        f.mark_read(p, cells)
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
        f.mark_wrote(p, cells)
    for p, fill in zip(d.dst, k.fills, strict=True):
        # Without a grid map a cell is judged by its first element: written whole at once.
        whole = fill if isinstance(fill, Fill) else Fill(fill, fill)
        f.filled.append(filled(p, whole, f.number))
