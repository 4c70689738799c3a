"""The diagram model: plain data saying what to draw, built from a sync run and the oracle.

A :class:`LayoutDiagram` shows one parameter: a provenance raster per trainer
shard; per vLLM rank the raster of what it holds beside the raster of what the
oracle expects, with the checker's verdict per cell and one line per wrong
region; movement bands from trainer rows (columns) to where they land; and the
recorded steps (:func:`syncviz.journey.param_steps`, the one list every view
reads). A :class:`TransferDiagram` says which rank sends how much to which.

>>> from syncviz.run.inprocess import tiny_run
>>> result = tiny_run()
>>> d = layout_diagram(result, "model.model.layers.0.self_attn.o_proj.weight")
>>> [p.title for p in d.dst], d.axis, d.wrong_count > 0
(['vLLM tp 0 (rank 1)', 'vLLM tp 1 (rank 2)'], 1, True)
>>> d.dst[0].regions[0].text
'columns 0-3 (heads 0-1): hold heads 0-3 rows 0-3, expected heads 0-1'
>>> [(e.src, e.dst, e.stage) for e in transfer_diagram(result).edges]
[(0, 1, 'stage1'), (1, 2, 'stage2')]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch

from syncviz.check import findings_words
from syncviz.diagram.frames import Frame, frame
from syncviz.diagram.palette import SPECIAL_FAMILY
from syncviz.diagram.panel import Panel
from syncviz.diagram.ranks import dst_world, src_world
from syncviz.diagram.raster import (
    MAX_CELLS,
    BlockTable,
    Raster,
    cell_size,
    grid_shape,
    local_grid,
    map_raster,
    small_work,
)
from syncviz.engines import DEFAULT_ENGINE, ENGINE
from syncviz.findings import Region
from syncviz.journey import TraceStep, param_steps, sent_records

if TYPE_CHECKING:
    from syncviz.check import CheckReport
    from syncviz.run.result import SyncResult

MAX_EDGES = 64  # arrows per transfer map
MAX_RANK_BOXES = 64  # rank boxes per side of the transfer map


@dataclass(frozen=True)
class Band:
    """Elements ``src_span`` (along the block axis) of trainer rank ``src`` land at
    ``dst_span`` of vLLM rank ``dst``; ``block`` is the block number, ``wrong`` the verdict."""

    src: int
    src_span: tuple[int, int]
    dst: int
    dst_span: tuple[int, int]
    block: int
    wrong: bool


@dataclass
class LayoutDiagram:
    """One parameter: trainer panels, vLLM panels (actual and expected), bands, steps.

    ``axis`` is the dim that carries the blocks (0: rows, e.g. QKV heads; 1:
    columns, e.g. o_proj heads); labels and bands run along it. ``steps`` is a
    sequence of the recorded steps; when :func:`layout_diagram` makes it, it replays
    them on first read (:class:`Replayed`): at real sizes that costs more than the
    picture.
    """

    key: str
    kind: str
    global_shape: tuple[int, ...]
    title: str
    axis: int
    table: BlockTable
    src: list[Panel]
    dst: list[Panel]
    bands: list[Band]
    steps: Sequence[TraceStep] = field(repr=False)
    frame: Frame | None = None
    problems: list[str] = field(default_factory=list)
    engine: str = ENGINE[DEFAULT_ENGINE].display  # the destination's name, as printed

    @property
    def wrong_count(self) -> int:
        """Cells of vLLM tensors the checker calls not right."""
        return sum(p.wrong_cells for p in self.dst)

    def regions(self) -> list[str]:
        """One line per wrong region, every vLLM rank, its rank named as ``check`` names it:
        ``vLLM tp 0 (rank 1): rows 4-5: ...``."""
        return [f"{p.title}: {r.text}" for p in self.dst for r in p.regions]

    def families(self) -> list[str]:
        """The colour families present, in first-seen order (for a legend)."""
        seen: dict[str, None] = {}
        for panel in self.src + self.dst:
            for b in torch.unique(panel.actual.block).tolist():
                seen.setdefault(self.table.families[b] if b >= 0 else SPECIAL_FAMILY[b], None)
        return list(seen)


class Replayed(Sequence):
    """The steps ``make()`` returns, made on first read (length, index or iteration).

    >>> steps = Replayed(lambda: ["a", "b"])
    >>> steps.done, len(steps), steps.done, list(steps)
    (False, 2, True, ['a', 'b'])
    """

    def __init__(self, make: Callable[[], list]) -> None:
        self._make: Callable[[], list] | None = make
        self._items: list = []

    @property
    def done(self) -> bool:
        return self._make is None

    def _all(self) -> list:
        if self._make is not None:
            self._items, self._make = list(self._make()), None
        return self._items

    def __len__(self) -> int:
        return len(self._all())

    def __getitem__(self, index):
        return self._all()[index]


@dataclass(frozen=True)
class RankBox:
    """A rank on the transfer map."""

    rank: int
    side: str  # src | dst
    label: str


@dataclass(frozen=True)
class Edge:
    """An arrow: ``src`` sends ``bytes`` carrying ``params`` parameters to ``dst``."""

    src: int
    dst: int
    stage: str  # stage1 | stage2
    bytes: int = 0
    params: int = 0

    @property
    def text(self) -> str:
        return _traffic(self.bytes, self.params)


@dataclass(frozen=True)
class Exchange:
    """A routed-expert exchange among trainer ranks (allgather or alltoall)."""

    ranks: tuple[int, ...]
    kind: str
    bytes: int = 0
    params: int = 0

    @property
    def text(self) -> str:
        ranks = ", ".join(str(r) for r in self.ranks)
        amount = _traffic(self.bytes, self.params) if self.bytes else "no traffic recorded"
        return f"routed experts {self.kind} among ranks {ranks}: {amount}"


@dataclass
class TransferDiagram:
    """Which trainer rank sends what to which vLLM rank, stage by stage."""

    title: str
    src: list[RankBox]
    dst: list[RankBox]
    edges: list[Edge]
    exchanges: list[Exchange]
    notes: list[str] = field(default_factory=list)


def _traffic(nbytes: int, params: int) -> str:
    return f"{human_bytes(nbytes)}, {params} params"


def human_bytes(n: int) -> str:
    """Bytes in a short unit.

    >>> human_bytes(512), human_bytes(3072), human_bytes(5 * 2**20)
    ('512 B', '3.0 KiB', '5.0 MiB')
    """
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


# ---------------------------------------------------------------- layout diagram


def block_axis(table: BlockTable) -> int:
    """The dim that carries the blocks: 1 when blocks split only the columns (o_proj)."""
    if len(table.shape) == 2 and len(table.cuts[0]) == 2 and len(table.cuts[1]) > 2:
        return 1
    return 0


def layout_diagram(
    result: SyncResult,
    key: str,
    check_report: CheckReport | None = None,
    *,
    step: int | None = None,
    max_cells: int = MAX_CELLS,
    steps: list[TraceStep] | None = None,
    regions: bool = True,
) -> LayoutDiagram:
    """The layout diagram of parameter ``key`` (a vLLM name) in ``result``.

    ``step`` (1-based, into :func:`syncviz.journey.param_steps`) adds that
    step's frame. Every rank is drawn; big tensors are downsampled. ``steps``
    passes that list when the caller already has it. ``regions=False`` leaves the
    wrong regions' words out (panels' ``regions`` empty) for a caller that shows the
    check's words beside the picture: at real sizes they cost a raster per panel.
    """
    numel = math.prod(result.plan.layout.param(key).global_shape)
    with small_work(numel):
        return _layout_diagram(result, key, check_report, step, max_cells, steps, regions)


def _layout_diagram(
    result, key, check_report, step, max_cells, steps, with_regions
) -> LayoutDiagram:
    plan = result.plan
    param = plan.layout.param(key)
    table = BlockTable(param)
    axis = block_axis(table)
    cell = _common_cell(param, axis, max_cells)
    # A result keeps ids as maps: every panel is drawn from maps, never materialized.
    src_panels = []
    for shard in param.src:
        world = src_world(plan, shard.pp, shard.tp, shard.ep)
        title = plan.rank_name(world)
        drawn = map_raster(shard.index, table, cell=cell)
        src_panels.append(Panel(title, world, "src", tuple(shard.index.shape), drawn))
    dst_panels = []
    words: dict = {}
    for t in param.dst:
        world = dst_world(plan, t.pp, t.tp)
        raw = result.dst_tensors[world][t.name]
        words_of = words if with_regions else None
        dst_panels.append(_map_panel(plan, param, table, axis, cell, t, world, raw, words_of))
    _mark_shared(dst_panels, table)
    if check_report is not None:
        pc = next((p for p in check_report.params if p.key == key), None)
        problems = [] if pc is None else [e.line().strip() for e in pc.errors]
    else:  # the synchronizer's errors on this parameter, without checking the whole run
        problems = findings_words(result)[0].get(key, [])
    title = (
        f"{key} {list(param.global_shape)} ({param.kind}): {plan.spec.name},"
        f" trainer {plan.src.sizes_text()} -> {plan.dst.engine_name} {plan.dst.sizes_text()}"
    )
    recorded = Replayed(lambda: param_steps(result, key)) if steps is None else steps
    d = LayoutDiagram(
        key,
        param.kind,
        tuple(param.global_shape),
        title,
        axis,
        table,
        src_panels,
        dst_panels,
        movement(src_panels, dst_panels, table, axis),
        recorded,
        problems=problems,
        engine=plan.dst.engine_name,
    )
    if step is not None:
        d.frame = frame(d, step, cell)
    return d


def _map_panel(plan, param, table, axis, cell, t, world, raw, words) -> Panel:
    """A vLLM panel: held and expected rasters and wrong regions, from maps
    (``words`` None: no regions)."""
    got_map, want_map = raw.region_map(), t.index
    base = plan.id_base[param.key]
    got = map_raster(got_map, table, want_map, base=base, cell=cell)
    want = map_raster(want_map, table, cell=cell)
    regions = []
    if words is not None:
        regions = _map_regions(plan, param, table, axis, got_map, t.index, words)
    title = plan.rank_name(world)
    grid = local_grid(got_map, base, math.prod(param.global_shape))
    return Panel(title, world, "dst", tuple(raw.shape), got, want, regions, grid=grid)


def _map_regions(plan, param, table, axis, got_map, index, cache) -> list[Region]:
    """The wrong regions of a destination tensor (a map) against the oracle's
    ``index``: the wrong rows (experts, elements) come from a raster of one cell per row,
    and both sides of each are worded from their maps (:func:`syncviz.check.map_words`),
    no element read."""
    from syncviz.check import column_regions, map_words, region_words, true_runs
    from syncviz.run.values import UNWRITTEN_ID

    columns = column_regions(plan, param, index, got_map, cache, unwritten=True)
    if columns is not None:
        return columns
    base = plan.id_base[param.key]
    want_map, want_ids = index, index.shifted(base)
    shape = got_map.shape
    unit = "expert" if len(shape) == 3 else ("row" if len(shape) == 2 else "element")
    # One cell per row (per expert of a 3-D tensor, per element of a 1-D one).
    expert_rows = shape[1] if len(shape) == 3 else 1
    cell = (1, 1) if len(shape) == 1 else (expert_rows, grid_shape(shape)[1])
    rows = map_raster(got_map, table, want_map, base=base, cell=cell, mixed=False)
    flags = (rows.status != 0).reshape(-1)
    split = None
    if axis == 0:  # row blocks: cut where the held or the expected block changes
        want = map_raster(want_map, table, cell=cell, mixed=False)
        split = rows.block.reshape(-1) * (len(table.blocks) + 8) + want.block.reshape(-1)

    def words(region_map):
        def rows_words(x: int, y: int) -> str:
            text = map_words(plan, param, region_map.take(0, x, 1, y - x), cache)
            many = f"other ids ({(y - x) * math.prod(shape[1:])} elements, too many to describe)"
            return many if text is None else text

        return rows_words

    regions = []
    for a, b in true_runs(flags, split):
        got_rows = got_map.take(0, a, 1, b - a)
        if all(r.is_constant and r.offset == UNWRITTEN_ID for r in got_rows.regions):
            holds = "nothing (never written)"  # told by the map
        else:
            holds = region_words(words(got_map), a, b)
        regions.append(Region(unit, a, b, holds, region_words(words(want_ids), a, b)))
    return regions


def _common_cell(param, axis: int, max_cells: int) -> tuple[int, int]:
    """One cell size for every panel of a diagram, so panels stay to scale side by side."""
    shapes = [grid_shape(s.shape) for s in param.src] + [grid_shape(t.shape) for t in param.dst]
    # Panels stack along the block axis, so that side holds the sum of all panels.
    along = max(
        sum(s[axis] for s in shapes[: len(param.src)]),
        sum(s[axis] for s in shapes[len(param.src) :]),
    )
    across = max(s[1 - axis] for s in shapes)
    sizes = [0, 0]
    sizes[axis] = cell_size(along, 2 * max_cells)
    sizes[1 - axis] = cell_size(across, max_cells // 2 if axis == 0 else max_cells)
    return sizes[0], sizes[1]


def _mark_shared(panels: list[Panel], table: BlockTable) -> None:
    """Blocks the oracle expects on several vLLM ranks (replicated K/V heads): who shares."""
    holders: dict[int, list[int]] = {}
    for p in panels:
        if p.expected is None:
            continue
        for b in torch.unique(p.expected.block).tolist():
            if b >= 0:
                holders.setdefault(b, []).append(p.rank)
    for p in panels:
        for b, ranks in holders.items():
            if len(ranks) > 1 and p.rank in ranks and len(ranks) < len(panels):
                p.shared[table.labels[b]] = [r for r in ranks if r != p.rank]


def _lines(r: Raster, axis: int) -> list[tuple[int, int, int, int, int]]:
    """Per cell line along ``axis``: (start, stop, block, position in block, worst status)."""
    n = r.cells[axis]
    out = []
    for i in range(n):
        cell = (i, 0) if axis == 0 else (0, i)
        span = r.span(*cell)
        start, stop = (span[0], span[1]) if axis == 0 else (span[2], span[3])
        b = int(r.block[cell])
        off = int(r.offset[cell])
        # Along rows: the row inside the block; along columns: the column inside its row.
        width = r.table.row_length[b] if b >= 0 else 1
        pos = r.table.row_in_block(b, off) if axis == 0 else off % max(1, width)
        status = int((r.status[i] if axis == 0 else r.status[:, i]).max())
        out.append((start, stop, b, pos, status))
    return out


def movement(src: list[Panel], dst: list[Panel], table: BlockTable, axis: int) -> list[Band]:
    """Bands from each trainer line (row or column of cells) to every vLLM line holding it.

    A vLLM line is matched to the trainer line whose block and position inside
    the block cover its first element; consecutive matches merge into one band.
    """
    where: dict[int, list[tuple[int, int, int, int]]] = {}  # block -> (pos0, rank, start, stop)
    for p in src:
        for start, stop, b, pos, _ in _lines(p.actual, axis):
            if b >= 0:
                where.setdefault(b, []).append((pos, p.rank, start, stop))
    bands: list[Band] = []
    for p in dst:
        lines = _lines(p.actual, axis)
        for start, stop, b, pos, status in lines:
            if b < 0 or b not in where:
                continue
            # The trainer line starting at the largest position <= pos.
            cands = [c for c in where[b] if c[0] <= pos]
            if not cands:
                continue
            best = max(c[0] for c in cands)
            for _, rank, s0, s1 in (c for c in cands if c[0] == best):
                band = Band(rank, (s0, s1), p.rank, (start, stop), b, status != 0)
                last = bands[-1] if bands else None
                if (
                    last is not None
                    and (last.src, last.dst, last.block, last.wrong)
                    == (band.src, band.dst, band.block, band.wrong)
                    and last.src_span[1] == s0
                    and last.dst_span[1] == start
                ):  # it goes on where the last band ends, on both sides: one band
                    spans = {
                        "src_span": (last.src_span[0], s1),
                        "dst_span": (last.dst_span[0], stop),
                    }
                    bands[-1] = replace(last, **spans)
                else:
                    bands.append(band)
    return bands


# ---------------------------------------------------------------- transfer diagram


def transfer_diagram(result: SyncResult) -> TransferDiagram:
    """The transfer map of ``result``: rank pairs of both stages and expert exchanges."""
    from syncviz.run.plan import expert_group, pair_group

    plan = result.plan
    collectives = _sender_records(result)
    src_boxes, dst_boxes = [], []
    for role in plan.roles:
        # Under its side's heading, so without the side's word: ``tp 0 (rank 2)``.
        box = RankBox(role.world, role.side, plan.rank_name(role.world).split(" ", 1)[1])
        (src_boxes if role.side == "src" else dst_boxes).append(box)
    edges = []
    for stage, pairs in (("stage1", plan.stage1), ("stage2", plan.stage2)):
        for a, b in pairs:
            nbytes, params = _totals(collectives.get(pair_group(stage, a, b), []))
            edges.append(Edge(a, b, stage, nbytes, params))
    exchanges = []
    for ranks in plan.expert_groups:
        records = collectives.get(expert_group(ranks), [])
        nbytes, params = _totals(records)
        kind = records[0].kind if records else plan.expert_comm
        exchanges.append(Exchange(tuple(ranks), kind, nbytes, params))
    notes = []
    for side, boxes in (("source", src_boxes), ("destination", dst_boxes)):
        if len(boxes) > MAX_RANK_BOXES:
            notes.append(f"... {len(boxes) - MAX_RANK_BOXES} more {side} ranks")
            boxes[:] = boxes[:MAX_RANK_BOXES]
    shown = {b.rank for b in src_boxes + dst_boxes}
    kept = [e for e in edges if e.src in shown and e.dst in shown][:MAX_EDGES]
    if len(kept) < len(edges):
        notes.append(f"... {len(edges) - len(kept)} more transfers")
    title = f"{plan.spec.name}: src {plan.src.sizes_text()} -> dst {plan.dst.sizes_text()}"
    return TransferDiagram(title, src_boxes, dst_boxes, kept, exchanges, notes)


def _sender_records(result: SyncResult) -> dict[str, list]:
    """Collectives by group, each counted once (as the sending or first rank recorded it)."""
    by_group: dict[str, list] = {}
    for rec in sent_records(result):
        by_group.setdefault(rec.group, []).append(rec)
    return by_group


def _totals(records) -> tuple[int, int]:
    names: set[str] = set()
    for rec in records:
        if rec.label:
            names.update(n.strip() for n in rec.label.split(",") if n.strip())
    return sum(rec.bytes for rec in records), len(names)
