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

>>> from syncviz.diagram.model import layout_diagram
>>> from syncviz.run.inprocess import tiny_run
>>> result = tiny_run()
>>> d = layout_diagram(result, "model.model.layers.0.self_attn.qkv_proj.weight")
>>> f = frame(d, 2)
>>> f.text.split(": ", 1)[0], f.step.blocks
('step 2/15', ('Q head 0', 'Q head 1'))
>>> f.region_lines()
['reads trainer pp0 tp0 (rank 0) rows 0-3', 'writes vLLM pp0 tp0 (rank 1) rows 0-3']
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

from syncviz.diagram import frames_maps
from syncviz.diagram.frame_cells import Fill, cell_ids, filled, spans
from syncviz.diagram.panel import Panel
from syncviz.diagram.raster import (
    MAX_CELLS,
    BlockTable,
    Raster,
    as_grid,
    cell_reduce,
    raster,
    small_work,
)
from syncviz.journey import TraceStep
from syncviz.provenance import is_symbolic

if TYPE_CHECKING:
    from syncviz.diagram.model import LayoutDiagram

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
    read_titles: list[str] = field(default_factory=list)
    wrote_titles: list[str] = field(default_factory=list)
    read_spans: list[str] = field(default_factory=list)
    wrote_spans: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        moved = ", ".join(self.step.blocks) if self.step.blocks else "not replayed on ids"
        return f"step {self.number}/{self.total}: {self.step.text} (holds {moved})"

    def mark_read(self, p: Panel, cells: torch.Tensor | None) -> None:
        """Mark the cells of trainer panel ``p`` the step read (None: none of them)."""
        self.read.append(cells)
        if cells is not None:
            self.read_titles.append(p.title)
            self.read_spans.append(spans(cells, p.actual))

    def mark_wrote(self, p: Panel, cells: torch.Tensor | None) -> None:
        """Mark the cells of vLLM panel ``p`` the step's result lands in (None: none)."""
        self.wrote.append(cells)
        if cells is not None:
            self.wrote_titles.append(p.title)
            self.wrote_spans.append(spans(cells, p.actual))

    def region_lines(self) -> list[str]:
        """``reads <panel> rows a-b`` / ``writes <panel> rows a-b``, one per marked panel;
        rows of the drawn grid (a 3-D expert tensor stacks its experts' rows)."""
        lines = [f"reads {t} {s}" for t, s in zip(self.read_titles, self.read_spans, strict=True)]
        lines += [
            f"writes {t} {s}" for t, s in zip(self.wrote_titles, self.wrote_spans, strict=True)
        ]
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
        rows, cols = frames_maps.grid_shape(t)
        if math.ceil(rows / cell[0]) > 2 * MAX_CELLS or math.ceil(cols / cell[1]) > MAX_CELLS:
            cell = None
    if is_symbolic(t):  # a symbolic run's step: drawn from its map
        drawn = frames_maps.step_raster(t, table, cell)
    else:
        drawn = raster(t, table, cell=cell)
    _STEP_RASTERS[key] = (weakref.ref(t), drawn)
    while len(_STEP_RASTERS) > STEP_RASTERS_KEPT:
        _STEP_RASTERS.popitem(last=False)
    return drawn


def frame(d: LayoutDiagram, number: int, cell: tuple[int, int] | None = None) -> Frame:
    """Step ``number`` (1-based) of ``d.steps``: its inputs and outputs drawn as rasters,
    its marks on the big panels, and the vLLM tensors as written so far."""
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

    f = Frame(
        number,
        total,
        step,
        panels(step.inputs, step.op.inputs, "reads"),
        panels(step.outputs, step.op.outputs, "writes"),
    )
    _mark(d, f)
    return f


# ---------------------------------------------------------------- the big panels


def _ids_of(tensors) -> torch.Tensor | None:
    """The non-negative ids of some step tensors (repeats kept); None when not replayed."""
    if not tensors:
        return None
    flat = torch.cat([t.reshape(-1).to(torch.int64) for t in tensors])
    return flat[flat >= 0]


LOOKUP_MAX = 1 << 24  # global sizes up to which membership is a table lookup, not a sort


def _index(ids: torch.Tensor, numel: int) -> torch.Tensor:
    """ids as lookup indices: the negative ones (padding, unwritten) all ``numel``."""
    ids = ids.to(torch.int64)
    return torch.where(ids >= 0, ids, numel)


def _member(index: torch.Tensor, wanted: torch.Tensor, numel: int, table: list) -> torch.Tensor:
    """``torch.isin(index, wanted)`` for an :func:`_index` and non-negative ids ``wanted``;
    for a global size up to LOOKUP_MAX, by a table of every global id (built once into
    ``table``), which is several times faster than sorting."""
    if numel > LOOKUP_MAX:
        return torch.isin(index, wanted)
    if not table:
        lut = torch.zeros(numel + 1, dtype=torch.bool)  # the last entry: negative ids
        lut[wanted] = True
        table.append(lut)
    return table[0][index]


def _any_cells(mask: torch.Tensor, cell: tuple[int, int]) -> torch.Tensor:
    """Per cell of ``cell`` elements: is any element of the (as-grid) mask true."""
    grid = as_grid(mask)[0].to(torch.bool)
    rows, cols = grid.shape
    rs, cs = cell
    if rs * cs == 1:
        return grid
    nr, nc = math.ceil(rows / rs), math.ceil(cols / cs)
    if rows % rs or cols % cs:
        padded = torch.zeros((nr * rs, nc * cs), dtype=torch.bool)
        padded[:rows, :cols] = grid
        grid = padded
    return grid.reshape(nr, rs, nc, cs).any(dim=3).any(dim=1)


@dataclass
class _Known:
    """What every frame of one diagram reads: computed once, held while the diagram lives."""

    shard_index: list[torch.Tensor]  # per trainer panel, its shard's ids as an _index
    dst_index: list[torch.Tensor]  # per vLLM panel, its elements' ids (module text), _index
    fills: list[Fill]  # per vLLM panel, per cell, the steps that write it


_KNOWN: dict[int, tuple[weakref.ref, _Known]] = {}


def _known(d: LayoutDiagram) -> _Known:
    held = _KNOWN.get(id(d))
    if held is not None and held[0]() is d:
        return held[1]
    dst_ids = [_element_ids(p) for p in d.dst]
    numel = math.prod(d.global_shape)
    known = _Known(
        [_index(s.index.ids(), numel) for s in d.table.param.src],
        [_index(ids, numel) for ids in dst_ids],
        _fill_steps(d, dst_ids),
    )
    _KNOWN[id(d)] = (weakref.ref(d), known)
    weakref.finalize(d, _KNOWN.pop, id(d), None)
    return known


def fill_steps(d: LayoutDiagram) -> list[torch.Tensor]:
    """Per vLLM panel of ``d``, per cell: the step number after which all its elements
    are written (see the module text for the rule); computed once per diagram."""
    fills = frames_maps.known(d).fills if frames_maps.symbolic(d) else _known(d).fills
    return [f.all if isinstance(f, Fill) else f for f in fills]


def _element_ids(p: Panel) -> torch.Tensor:
    """A vLLM panel's element ids on the raster grid: the tensor's own; a panel made
    without them (by hand) is judged by each cell's first element."""
    if p.local_ids is not None:
        return as_grid(p.local_ids.to(torch.int64))[0]
    rs, cs = p.actual.cell
    rows, cols = p.actual.rows, p.actual.cols
    first = cell_ids(p.actual)
    return first.repeat_interleave(rs, 0).repeat_interleave(cs, 1)[:rows, :cols]


def _fill_steps(d: LayoutDiagram, dst_ids: list[torch.Tensor]) -> list[Fill]:
    outs = [_ids_of(s.outputs) for s in d.steps]
    total = len(d.steps)
    numel = math.prod(d.global_shape)
    fills = []
    for p, ids in zip(d.dst, dst_ids, strict=True):
        own = [k for k, s in enumerate(d.steps) if s.rank == p.rank and outs[k] is not None]
        order = own if own else [k for k in range(total) if outs[k] is not None]
        # Own steps: the first that holds it; else the last move of that data anywhere.
        steps = [(k + 1, outs[k]) for k in order]
        fill = _step_of(ids, steps, "amin" if own else "amax", total, numel)
        data = ids >= 0
        first = int(fill[data & (fill <= total)].min()) if bool((fill <= total).any()) else total
        fill = torch.where(~data, min(first, total), fill).clamp(max=max(total, 1))
        rs, cs = p.actual.cell
        fills.append(Fill(cell_reduce(fill, rs, cs, "min"), cell_reduce(fill, rs, cs, "max")))
    return fills


def _step_of(ids: torch.Tensor, steps: list, how: str, total: int, numel: int) -> torch.Tensor:
    """Per id of ``ids``: the first ("amin") or last ("amax") step number whose ids hold
    it, total + 1 where none does. By a table over the ``numel`` global ids (one scatter
    per step) up to LOOKUP_MAX, else by sorted membership."""
    never = total + 1
    if numel <= LOOKUP_MAX:
        start = never if how == "amin" else 0
        table = torch.full((numel + 1,), start, dtype=torch.int64)
        for k, o in steps:
            table.scatter_reduce_(0, o, torch.full_like(o, k), reduce=how)
        got = table[torch.where(ids >= 0, ids, numel)]
        return torch.where(got == 0, never, got) if how == "amax" else got
    fill = torch.full(ids.shape, never, dtype=torch.int64)
    for k, o in steps:
        hit = torch.isin(ids, o)
        fill = torch.where(hit & (fill > k) if how == "amin" else hit, k, fill)
    return fill


def _mark(d: LayoutDiagram, f: Frame) -> None:
    """Fill ``f.read``, ``f.wrote`` and ``f.filled`` on the panels of ``d``."""
    if frames_maps.symbolic(d):  # the same marks, read from maps
        frames_maps.mark(d, f)
        return
    step = f.step
    f.src, f.dst = list(d.src), list(d.dst)
    # A data-moving op carries into its result only part of what it was handed (a
    # getitem of a view): what it read is that part, where its result came from.
    wrote_ids = _ids_of(step.outputs)
    read_ids = wrote_ids if wrote_ids is not None else _ids_of(step.inputs)
    known = _known(d)
    numel = math.prod(d.global_shape)
    read_table: list = []
    wrote_table: list = []
    own_src = [i for i, p in enumerate(d.src) if p.rank == step.rank]
    others = read_ids
    if read_ids is not None and own_src:
        # Its own shard first; other shards only for data it does not hold (an exchange
        # of routed experts), never for a replica of its own (dense weights under ep).
        own = torch.cat([known.shard_index[i].reshape(-1) for i in own_src])
        others = read_ids[~_member(read_ids, own[own < numel], numel, [])]
    other_table: list = []
    for i, p in enumerate(d.src):
        cells = None
        if read_ids is not None:
            if i in own_src:
                hit = _member(known.shard_index[i], read_ids, numel, read_table)
            elif others is not None and others.numel():
                hit = _member(known.shard_index[i], others, numel, other_table)
            else:
                hit = None
            cells = _any_cells(hit, p.actual.cell) if hit is not None and bool(hit.any()) else None
        f.mark_read(p, cells)
    own_dst = [i for i, p in enumerate(d.dst) if p.rank == step.rank]
    for i, p in enumerate(d.dst):
        cells = None
        if wrote_ids is not None and (not own_dst or i in own_dst):
            hit = _member(known.dst_index[i], wrote_ids, numel, wrote_table)
            cells = _any_cells(hit, p.actual.cell) if bool(hit.any()) else None
        f.mark_wrote(p, cells)
    for p, fill in zip(d.dst, known.fills, strict=True):
        f.filled.append(filled(p, fill, f.number))
