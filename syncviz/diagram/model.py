"""The diagram model: plain data saying what to draw, built from a sync run and the oracle.

A :class:`LayoutDiagram` shows one parameter: a panel per trainer shard, the
regroup steps the trace recorded, and a panel per vLLM tensor. Each panel is a
list of :class:`Rect` made by merging elements into row runs of one block, so
the drawing cost follows the number of blocks, not of elements. Destination
rects are compared with the oracle's expected ids: wrong ones carry words.
A :class:`TransferDiagram` says which rank sends how much to which.

>>> from syncviz import Parallel
>>> from syncviz.spec import ModelSpec
>>> from syncviz.run.inprocess import run_sync
>>> spec = ModelSpec("tiny", "llama-mcore", 1, 8, 4, 2, 8, 64, head_dim=2)
>>> result = run_sync(spec, Parallel(tp=1), Parallel(tp=2), layers=[0])
>>> d = layout_diagram(result, "model.model.layers.0.self_attn.o_proj.weight")
>>> [p.title for p in d.dst], d.wrong_count > 0
(['dst pp0 tp0 (rank 1)', 'dst pp0 tp1 (rank 2)'], True)
>>> [(e.src, e.dst, e.stage) for e in transfer_diagram(result).edges]
[(0, 1, 'stage1'), (1, 2, 'stage2')]
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from syncviz.oracle import ParamLayout, describe
from syncviz.run.values import UNWRITTEN_ID

if TYPE_CHECKING:
    from syncviz.check import CheckReport
    from syncviz.run.result import SyncResult

PAD_ID = -1
MAX_RANK_PANELS = 8  # panels per side; the rest are counted in a note
MAX_BANDS = 8  # experts drawn per 3-D tensor; the rest are counted in a note
MAX_RECTS = 96  # rects per panel; the rest are counted in a note
MAX_EXPLAINED = 32  # wrong rects per panel whose explanation is spelled out
MAX_STEPS = 12  # recorded ops listed per (rank, phase)
MAX_EDGES = 32  # arrows per transfer map
QUIET_OPS = frozenset({"contiguous", "detach", "clone"})  # ops that do not move data

STATUS_CODES = ("ok", "wrong", "unwritten", "padding")


@dataclass(frozen=True)
class Rect:
    """A run of rows ``row0..row1-1`` x cols ``col0..col1-1`` (panel coords) of one block.

    ``family`` is the colour key and ``shade`` the block's index inside it;
    ``src_rank`` is the trainer world rank the data came from (None if unknown);
    ``explanation`` says, for wrong rects, what is held and what was expected.

    >>> Rect(0, 2, 0, 8, "Q head 1", "q", 1, 0, "ok").rows, Rect(0, 2, 0, 8, "x", "q", 1).cols
    (2, 8)
    """

    row0: int
    row1: int
    col0: int
    col1: int
    label: str
    family: str
    shade: int = 0
    src_rank: int | None = None
    status: str = "ok"
    replicated: bool = False
    explanation: str = ""

    @property
    def rows(self) -> int:
        return self.row1 - self.row0

    @property
    def cols(self) -> int:
        return self.col1 - self.col0


@dataclass
class Panel:
    """One local tensor drawn as a [rows, cols] grid (3-D tensors as stacked expert bands).

    ``shape`` is the true tensor shape; ``grid`` the drawn [rows, cols];
    ``bands`` the number of expert bands drawn (0 for 2-D/1-D tensors).

    >>> Panel("src pp0 tp0 (rank 0)", 0, (4, 8), (4, 8)).notes
    []
    """

    title: str
    rank: int
    shape: tuple[int, ...]
    grid: tuple[int, int]
    rects: list[Rect] = field(default_factory=list)
    bands: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Step:
    """One recorded op on one rank: its name and output shapes (no ids).

    >>> Step(0, "regroup", "view", ((8, 2, 8),)).text
    'view -> [8, 2, 8]'
    """

    rank: int
    phase: str
    op: str
    shapes: tuple[tuple[int, ...], ...]

    @property
    def text(self) -> str:
        return f"{self.op} -> " + ", ".join(str(list(s)) for s in self.shapes)


@dataclass
class LayoutDiagram:
    """One parameter: source panels, recorded steps, destination panels, check notes."""

    key: str
    kind: str
    global_shape: tuple[int, ...]
    title: str
    src: list[Panel]
    steps: list[Step]
    dst: list[Panel]
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def wrong_count(self) -> int:
        """Number of destination rects marked wrong."""
        return sum(r.status == "wrong" for p in self.dst for r in p.rects)

    def families(self) -> list[str]:
        """The colour families used, in first-seen order (for a legend)."""
        seen: dict[str, None] = {}
        for panel in self.src + self.dst:
            for r in panel.rects:
                seen.setdefault(r.family, None)
        return list(seen)


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
        return f"{human_bytes(self.bytes)}, {self.params} params"


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
        amount = (
            f"{human_bytes(self.bytes)}, {self.params} params"
            if self.bytes
            else "no traffic recorded"
        )
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


def layout_diagram(
    result: SyncResult, key: str, check_report: CheckReport | None = None
) -> LayoutDiagram:
    """The layout diagram of parameter ``key`` (a vLLM name) in ``result``."""
    plan = result.plan
    param = plan.layout.param(key)
    tables = _BlockTables(param)
    owner, replicated = _owners(result, param)
    src_panels = []
    for shard in param.src[:MAX_RANK_PANELS]:
        world = _src_world(plan, shard.pp, shard.tp, shard.ep)
        ids = shard.index.ids()
        title = f"src {shard.rank_label} (rank {world})"
        src_panels.append(_panel(title, world, ids, ids, tables, owner, replicated, param))
    dst_panels = []
    for t in param.dst[:MAX_RANK_PANELS]:
        world = _dst_world(plan, t.pp, t.tp)
        actual = result.local_ids(world, key).to(torch.int64)
        title = f"dst {t.rank_label} (rank {world})"
        expected = t.index.ids()
        dst_panels.append(_panel(title, world, actual, expected, tables, owner, replicated, param))
    notes = []
    if len(param.src) > MAX_RANK_PANELS:
        notes.append(f"... {len(param.src) - MAX_RANK_PANELS} more source ranks")
    if len(param.dst) > MAX_RANK_PANELS:
        notes.append(f"... {len(param.dst) - MAX_RANK_PANELS} more destination ranks")
    problems: list[str] = []
    if check_report is not None:
        for pc in check_report.params:
            if pc.key == key:
                problems = pc.lines()
    title = (
        f"{key} {list(param.global_shape)} ({param.kind}): {plan.spec.name},"
        f" src {_sizes(plan.src)} -> dst {_sizes(plan.dst)}"
    )
    return LayoutDiagram(
        key,
        param.kind,
        param.global_shape,
        title,
        src_panels,
        _steps(result, key),
        dst_panels,
        notes,
        [line.strip() for line in problems],
    )


def _sizes(p) -> str:
    parts = [f"tp{p.tp}"] + [f"{k}{v}" for k, v in (("pp", p.pp), ("ep", p.ep)) if v > 1]
    return " ".join(parts)


def _src_world(plan, pp: int, tp: int, ep: int | None) -> int:
    for role in plan.roles:
        if role.side == "src" and (role.pp, role.tp, role.ep) == (pp, tp, ep or 0):
            return role.world
    raise LookupError(f"no trainer rank pp{pp} tp{tp} ep{ep}")


def _dst_world(plan, pp: int, tp: int) -> int:
    for role in plan.roles:
        if role.side == "dst" and (role.pp, role.tp) == (pp, tp):
            return role.world
    raise LookupError(f"no vLLM rank pp{pp} tp{tp}")


class _BlockTables:
    """Per global element: the index of its block; per block: label, family, shade."""

    def __init__(self, param: ParamLayout) -> None:
        self.param = param
        grid = torch.empty(param.global_shape, dtype=torch.int64)
        for i, block in enumerate(param.blocks):
            grid[
                tuple(slice(a, b) for a, b in zip(block.box.start, block.box.stop, strict=False))
            ] = i
        self.block_of = grid.reshape(-1)
        self.labels = [b.label for b in param.blocks]
        self.families = [b.family for b in param.blocks]
        self.shades = [b.index or 0 for b in param.blocks]


def _owners(result: SyncResult, param: ParamLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """Per global element: the trainer world rank holding it, and whether several do."""
    numel = int(torch.tensor(param.global_shape).prod())
    owner = torch.full((numel,), -1, dtype=torch.int64)
    count = torch.zeros(numel, dtype=torch.int64)
    for shard in param.src:
        ids = shard.index.ids().reshape(-1)
        ids = ids[ids >= 0]
        world = _src_world(result.plan, shard.pp, shard.tp, shard.ep)
        fresh = owner[ids] < 0
        owner[ids[fresh]] = world
        count[ids] += 1
    return owner, count > 1


def _as_grid(ids: torch.Tensor) -> tuple[torch.Tensor, int, list[str]]:
    """ids as a 2-D grid: 1-D -> one row; [E, R, C] -> E stacked bands (capped)."""
    notes = []
    if ids.dim() == 1:
        return ids.reshape(1, -1), 0, notes
    if ids.dim() == 3:
        bands = ids.shape[0]
        if bands > MAX_BANDS:
            notes.append(f"... {bands - MAX_BANDS} more experts")
            ids = ids[:MAX_BANDS]
            bands = MAX_BANDS
        return ids.reshape(-1, ids.shape[-1]), bands, notes
    return ids, 0, notes


def _panel(title, world, actual, expected, tables, owner, replicated, param) -> Panel:
    shape = tuple(actual.shape)
    got, bands, notes = _as_grid(actual)
    want, _, _ = _as_grid(expected)
    status = torch.zeros_like(got)  # index into STATUS_CODES
    status[(got != want)] = 1
    status[got == UNWRITTEN_ID] = 2
    status[(got == PAD_ID) & (want == PAD_ID)] = 3
    valid = got >= 0
    safe = got.clamp(min=0)
    block = torch.where(valid, tables.block_of[safe], torch.full_like(got, -1))
    src = torch.where(valid, owner[safe], torch.full_like(got, -1))
    rep = torch.where(valid, replicated[safe], torch.zeros_like(got, dtype=torch.bool))
    # One integer per element that changes whenever anything drawn changes.
    n_ranks = int(owner.max()) + 2
    key = ((block + 1) * (n_ranks + 1) + (src + 1)) * 8 + status * 2 + rep.to(torch.int64)
    boxes = _boxes(key)
    if len(boxes) > MAX_RECTS:
        # Too scattered to draw block by block (e.g. a flat chunk of a column-split
        # weight): draw runs of one status instead, labelled as mixed blocks.
        boxes = _boxes(status)
        notes.append("drawn by status: blocks change too often to draw one by one")
    if len(boxes) > MAX_RECTS:
        notes.append(f"... {len(boxes) - MAX_RECTS} more blocks")
        boxes = boxes[:MAX_RECTS]
    # Words cost far more than drawing: explain only the first few wrong rects.
    rects: list[Rect] = []
    explained = 0
    for r0, r1, c0, c1 in boxes:
        explain = explained < MAX_EXPLAINED
        rect = _rect(r0, r1, c0, c1, got, want, block, src, status, rep, tables, param, explain)
        explained += rect.status == "wrong"
        rects.append(rect)
    return Panel(title, world, shape, (got.shape[0], got.shape[1]), rects, bands, notes)


def _boxes(key: torch.Tensor) -> list[tuple[int, int, int, int]]:
    """Rectangles of equal ``key``: runs of identical rows, cut where a row's key changes."""
    rows = key.shape[0]
    same_as_prev = torch.zeros(rows, dtype=torch.bool)
    if rows > 1:
        same_as_prev[1:] = (key[1:] == key[:-1]).all(dim=1)
    starts = [r for r in range(rows) if not same_as_prev[r]]
    starts.append(rows)
    boxes: list[tuple[int, int, int, int]] = []
    for r0, r1 in itertools.pairwise(starts):
        row = key[r0]
        cuts = [0, *(torch.nonzero(row[1:] != row[:-1]).flatten() + 1).tolist(), len(row)]
        boxes += [(r0, r1, c0, c1) for c0, c1 in itertools.pairwise(cuts)]
    return boxes


def _rect(r0, r1, c0, c1, got, want, block, src, status, rep, tables, param, explain) -> Rect:
    code = STATUS_CODES[int(status[r0, c0])]
    b = int(block[r0, c0])
    s = int(src[r0, c0])
    if code == "unwritten":
        label, family, shade = "unwritten", "unwritten", 0
    elif b < 0:
        label, family, shade = "padding", "padding", 0
    else:
        label, family, shade = tables.labels[b], tables.families[b], tables.shades[b]
        if bool((block[r0:r1, c0:c1] != b).any()):
            label = f"{label} and other blocks"
    explanation = ""
    if code == "wrong" and explain:
        explanation = (
            f"holds {_words(param, got[r0:r1, c0:c1])},"
            f" expected {_words(param, want[r0:r1, c0:c1])}"
        )
    return Rect(
        r0,
        r1,
        c0,
        c1,
        label,
        family,
        shade,
        None if s < 0 else s,
        code,
        bool(rep[r0, c0]),
        explanation,
    )


def _words(param: ParamLayout, ids: torch.Tensor) -> str:
    """What a sub-grid of ids holds, without the local row prefix of a single piece."""
    if bool((ids < 0).all()):
        return "padding"
    if len(param.global_shape) == 1:
        ids = ids.reshape(-1)
    try:
        text = describe(param, ids)
    except Exception:  # a sub-grid of a stacked 3-D tensor: name its first element
        first = int(ids[ids >= 0].reshape(-1)[0])
        return param.decode(first) + " ..."
    if "; " not in text and ": " in text:
        return text.split(": ", 1)[1]
    return text


def _steps(result: SyncResult, key: str) -> list[Step]:
    if result.trace is None:
        return []
    steps = []
    for pt in result.trace.params:
        if pt.param != key or pt.rank is None:
            continue
        moving = [op for op in pt.ops if op.op not in QUIET_OPS]
        for op in moving[:MAX_STEPS]:
            shapes = tuple(tuple(t.shape) for t in op.outputs)
            steps.append(Step(pt.rank, pt.phase or "", op.op, shapes))
    return steps


# ---------------------------------------------------------------- transfer diagram


def transfer_diagram(result: SyncResult) -> TransferDiagram:
    """The transfer map of ``result``: rank pairs of both stages and expert exchanges."""
    from syncviz.run.plan import expert_group, pair_group

    plan = result.plan
    collectives = _sender_records(result)
    src_boxes, dst_boxes = [], []
    for role in plan.roles:
        ep = f" ep{role.ep}" if role.side == "src" and plan.src.ep > 1 else ""
        box = RankBox(role.world, role.side, f"rank {role.world}: pp{role.pp} tp{role.tp}{ep}")
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
        if len(boxes) > MAX_RANK_PANELS * 2:
            notes.append(f"... {len(boxes) - MAX_RANK_PANELS * 2} more {side} ranks")
            boxes[:] = boxes[: MAX_RANK_PANELS * 2]
    shown = {b.rank for b in src_boxes + dst_boxes}
    kept = [e for e in edges if e.src in shown and e.dst in shown][:MAX_EDGES]
    if len(kept) < len(edges):
        notes.append(f"... {len(edges) - len(kept)} more transfers")
    title = f"{plan.spec.name}: src {_sizes(plan.src)} -> dst {_sizes(plan.dst)}"
    return TransferDiagram(title, src_boxes, dst_boxes, kept, exchanges, notes)


def _sender_records(result: SyncResult) -> dict[str, list]:
    """Collectives by group, each counted once (as the sending or first rank recorded it)."""
    if result.trace is None:
        return {}
    records = list(result.trace.collectives)
    for pt in result.trace.params:
        records += pt.collectives
    by_group: dict[str, list] = {}
    for rec in records:
        first = rec.src if rec.src is not None else min(rec.ranks)
        if rec.rank is None or rec.rank == first:
            by_group.setdefault(rec.group, []).append(rec)
    return by_group


def _totals(records) -> tuple[int, int]:
    names: set[str] = set()
    for rec in records:
        if rec.label:
            names.update(n.strip() for n in rec.label.split(",") if n.strip())
    return sum(rec.bytes for rec in records), len(names)
