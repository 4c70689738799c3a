"""The expert view of an MoE parameter: experts x trainer ranks before, experts x vLLM ranks after.

BEFORE says which trainer rank holds each routed expert (whole, or a TP
fraction of it); AFTER says, per vLLM rank, whether its slice of each expert
is ok, wrong (with what it holds instead) or unwritten. Consecutive experts
with identical rows collapse into one row, and rows and columns are capped,
so 64 experts over 16 ranks stay a short table. Plain data: no matplotlib.
Every tensor is read from its map, so the cost follows the regions, not the
elements; a slot whose pieces are right in places is read element by element
when small.

>>> from syncviz import Parallel
>>> from syncviz.spec import ModelSpec
>>> from syncviz.run.inprocess import run_sync
>>> spec = ModelSpec("tiny", "qwen2-moe", 1, 8, 4, 2, 8, 64, qkv_bias=True, num_experts=4,
...     moe_ffn_hidden_size=4, shared_expert_ffn_hidden_size=8, shared_expert_gate=True)
>>> result = run_sync(spec, Parallel(tp=2), Parallel(tp=2), layers=[0])
>>> d = expert_diagram(result, "model.model.layers.0.mlp.experts.w13_weight")
>>> [row.label for row in d.rows]
['experts 0-1 (2, all ok)', 'experts 2-3 (2, all ok)']
>>> [c.text for c in d.rows[0].before], [c.status for c in d.rows[1].after]
(['whole', ''], ['ok', 'ok'])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING

import torch

from syncviz.engines import DEFAULT_ENGINE, ENGINE
from syncviz.errors import SyncvizError
from syncviz.geometry import intersection, meetings, overlap, row_major
from syncviz.oracle import ParamLayout
from syncviz.oracle.blocks import block_numbers
from syncviz.oracle.index import Box, Pad, map_pieces
from syncviz.provenance import Region, RegionMap
from syncviz.run.values import FOREIGN_ID, UNWRITTEN_ID

if TYPE_CHECKING:
    from syncviz.run.result import SyncResult

MAX_ROWS = 32  # expert rows shown; the rest are counted, ok and not ok, in a note
MAX_COLUMNS = 8  # ranks shown per side; the rest are counted in a note
MAX_HELD_BLOCKS = 2  # blocks named in one wrong cell's explanation

FINE = ("ok", "none")  # after-cells that are no finding


@dataclass(frozen=True)
class RankColumn:
    """One column: a world rank and its short label.

    >>> RankColumn(0, "rank 0 tp0 ep0").label
    'rank 0 tp0 ep0'
    """

    world: int
    label: str


@dataclass(frozen=True, eq=False)
class Cell:
    """One cell: ``status`` (before: whole/part/none; after: ok/wrong/unwritten/none) and words.

    Cells compare by identity (each is drawn and located on its own); :attr:`key`
    is what aggregation compares.

    >>> Cell(3, "wrong", "holds expert 3 up rows 0-3").key
    ('wrong', 'holds expert 3 up rows 0-3')
    """

    rank: int
    status: str
    text: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return self.status, self.text


@dataclass(frozen=True)
class ExpertRow:
    """Experts ``first..last`` (identical cells) with their before and after cells.

    >>> ok = (Cell(2, "ok"),)
    >>> ExpertRow(8, 63, (Cell(0, "whole"),), ok).label, ExpertRow(3, 3, (), ok).label
    ('experts 8-63 (56, all ok)', 'expert 3')
    """

    first: int
    last: int
    before: tuple[Cell, ...]
    after: tuple[Cell, ...]
    all_after: str = ""  # the one after-status of every rank (hidden ones too), or ""

    @property
    def count(self) -> int:
        return self.last - self.first + 1

    @property
    def label(self) -> str:
        if self.count == 1:
            return f"expert {self.first}"
        status = self.all_after or _common_status(self.after)
        summary = f", all {status}" if status else ""
        return f"experts {self.first}-{self.last} ({self.count}{summary})"


@dataclass
class ExpertDiagram:
    """One routed-expert parameter: rank columns per side, aggregated expert rows, notes."""

    key: str
    kind: str
    global_shape: tuple[int, ...]
    title: str
    src: list[RankColumn]
    dst: list[RankColumn]
    rows: list[ExpertRow]
    notes: list[str] = field(default_factory=list)
    engine: str = ENGINE[DEFAULT_ENGINE].display  # the destination's name, as printed

    @property
    def num_experts(self) -> int:
        return self.global_shape[0]

    def cells(self, side: str) -> list[Cell]:
        """Every shown cell of ``side`` ("before" or "after"), row by row."""
        return [c for row in self.rows for c in getattr(row, side)]


def _common_status(cells: tuple[Cell, ...]) -> str:
    statuses = {c.status for c in cells}
    return statuses.pop() if len(statuses) == 1 else ""


# ---------------------------------------------------------------- building


def expert_diagram(
    result: SyncResult,
    key: str,
    max_rows: int = MAX_ROWS,
    max_columns: int = MAX_COLUMNS,
) -> ExpertDiagram:
    """The expert view of routed-expert parameter ``key`` (an experts_w13/w2 vLLM name)."""
    plan = result.plan
    param = plan.layout.param(key)
    if not param.kind.startswith("experts_"):
        raise SyncvizError(
            f"parameter {key!r} is {param.kind}, not a routed-expert tensor",
            fix="pick a key of kind experts_w13 or experts_w2",
        )
    src_cols, before = _before(plan, param)
    dst_cols, after = _after(result, param)
    after = _with_origin(after, before)
    rows = _aggregate(before, after)
    notes = [_exchange_words(plan)] if plan.expert_groups else []
    if len(rows) > max_rows:
        rest = rows[max_rows:]
        hidden = sum(r.count for r in rest)
        bad = sum(r.count for r in rest if any(c.status not in FINE for c in r.after))
        words = f" ({bad} not all ok)" if bad else " (all ok)"
        notes.append(f"... {hidden} more experts{words}")
        rows = rows[:max_rows]
    for side, cols in (("trainer", src_cols), (plan.dst.engine_name, dst_cols)):
        if len(cols) > max_columns:
            notes.append(f"... {len(cols) - max_columns} more {side} ranks")
    if len(dst_cols) > max_columns:
        hidden_bad = sum(
            c.status not in FINE for r in rows for c in r.after[max_columns:]
        )  # shown rows only: hidden rows are counted above
        if hidden_bad:
            notes[-1] += f" ({hidden_bad} cells not ok)"
    rows = [
        ExpertRow(
            r.first,
            r.last,
            r.before[:max_columns],
            r.after[:max_columns],
            _common_status(r.after),
        )
        for r in rows
    ]
    title = (
        f"{key} {list(param.global_shape)} ({param.kind}): {plan.spec.name},"
        f" src {plan.src.sizes_text()} -> dst {plan.dst.sizes_text()}"
    )
    return ExpertDiagram(
        key,
        param.kind,
        param.global_shape,
        title,
        src_cols[:max_columns],
        dst_cols[:max_columns],
        rows,
        notes,
        plan.dst.engine_name,
    )


def _exchange_words(plan) -> str:
    """How trainer ranks exchange routed experts before the broadcast, in words."""
    groups = "; ".join(", ".join(map(str, g)) for g in plan.expert_groups)
    return f"routed experts exchanged by {plan.expert_comm} among trainer ranks {groups}"


def _with_origin(after: list[list[Cell]], before: list[list[Cell]]) -> list[list[Cell]]:
    """Wrong cells that hold another expert also say which trainer rank(s) held that expert."""
    holders = [[c.rank for c in row if c.status != "none"] for row in before]
    out = []
    for row in after:
        new = []
        for c in row:
            held = _held_expert(c.text) if c.status == "wrong" else None
            if held is not None and held < len(holders) and holders[held]:
                ranks = ", ".join(map(str, holders[held]))
                c = Cell(c.rank, c.status, f"{c.text} (from trainer rank {ranks})")
            new.append(c)
        out.append(new)
    return out


def _held_expert(text: str) -> int | None:
    words = text.split()
    if len(words) >= 3 and words[:2] == ["holds", "expert"] and words[2].isdigit():
        return int(words[2])
    return None


def _before(plan, param: ParamLayout):
    """Per trainer rank: the fraction of each expert's elements it holds (from its boxes)."""
    from syncviz.diagram.ranks import src_world as _src_world

    n_experts = param.global_shape[0]
    per_expert = math.prod(param.global_shape[1:])
    held: dict[int, torch.Tensor] = {}
    labels: dict[int, str] = {}
    for shard in param.src:
        world = _src_world(plan, shard.pp, shard.tp, shard.ep)
        counts = held.setdefault(world, torch.zeros(n_experts, dtype=torch.int64))
        counts += _held_counts(param, shard.index)
        pp = f"pp{shard.pp} " if plan.src.pp > 1 else ""
        labels[world] = f"rank {world} {pp}tp{shard.tp} ep{shard.ep or 0}"
    columns = [RankColumn(w, labels[w]) for w in sorted(held)]
    cells = []
    for e in range(n_experts):
        row = []
        for col in columns:
            part = Fraction(int(held[col.world][e]), per_expert)
            if part == 0:
                row.append(Cell(col.world, "none"))
            elif part >= 1:
                row.append(Cell(col.world, "whole", "whole"))
            else:
                row.append(Cell(col.world, "part", str(part)))
        cells.append(row)
    return columns, cells


def _held_counts(param: ParamLayout, index: RegionMap) -> torch.Tensor:
    """Elements of each expert a shard holds: its boxes cut along dim 0 (experts), so the
    cost follows the boxes; ids are read only when its map does not compress."""
    n_experts = param.global_shape[0]
    pieces = map_pieces(index, param.global_shape)
    if pieces is None:
        experts = _experts_of(param, index.ids())
        return torch.bincount(experts[experts >= 0], minlength=n_experts)
    counts = torch.zeros(n_experts, dtype=torch.int64)
    for p in pieces:
        if isinstance(p, Box):
            counts[p.start[0] : p.stop[0]] += math.prod(p.extents[1:])
    return counts


def _experts_of(param: ParamLayout, ids: torch.Tensor) -> torch.Tensor:
    """The expert index of each id, flattened (-1 for padding and non-ids).

    Experts are stacked on dim 0 of the global tensor, so an id's expert is its
    row-major position divided by one expert's size.
    """
    flat = ids.reshape(-1).to(torch.int64)
    per_expert = math.prod(param.global_shape[1:])
    return torch.where(flat >= 0, flat // per_expert, torch.full_like(flat, -1))


def _after(result: SyncResult, param: ParamLayout):
    """Per vLLM rank: the status of each expert's slice, with words for wrong ones.

    Each tensor is read from its map (:func:`_map_cells`)."""
    from syncviz.diagram.ranks import dst_world as _dst_world

    n_experts = param.global_shape[0]
    columns: list[RankColumn] = []
    by_rank: list[list[Cell]] = []
    for t in param.dst:
        world = _dst_world(result.plan, t.pp, t.tp)
        pp = f"pp{t.pp} " if result.plan.dst.pp > 1 else ""
        # Destination EP spans the TP group (ep is 1 or tp): tp rank r is ep rank r.
        ep = f" ep{t.tp}" if result.plan.dst.ep > 1 else ""
        columns.append(RankColumn(world, f"rank {world} {pp}tp{t.tp}{ep}"))
        raw = result.dst_tensors[world][t.name]
        by_rank.append(_map_cells(result.plan, param, t, world, raw.region_map()))
    return columns, [[cells[e] for cells in by_rank] for e in range(n_experts)]


# ---------------------------------------------------------------- from maps


def _map_cells(plan, param: ParamLayout, t, world: int, got: RegionMap) -> list[Cell]:
    """The after-cells of one symbolic vLLM tensor, expert by expert, from its map.

    Each slot (dim 0) of the held map is overlaid on the oracle's; the cost follows
    their regions. A slot that does not compress to whole-right / whole-wrong pieces is
    materialized when it has at most ``MATERIALIZE_LIMIT`` elements."""
    from syncviz.run.values import to_local_ids

    base = plan.id_base[param.key]
    want = t.index.shifted(base)
    slot_of: dict[int, tuple[int, RegionMap, list]] = {}
    by_slot = _slot_boxes(t.index, param.global_shape)
    for s in range(t.index.shape[0]):
        want_slot = want.take(0, s, 1, 1)
        boxes: list[Box] | None
        if by_slot is not None:  # the oracle's own pieces of this slot: no map read back
            boxes = by_slot[s]
        else:
            boxes = _boxes(map_pieces(want_slot, param.global_shape, base))
        if boxes is None:  # the oracle's own slot does not compress: read this slot's ids
            experts = _experts_of(param, to_local_ids(plan, param, want_slot.materialize()))
            experts = experts[experts >= 0]
            if len(experts):
                slot_of.setdefault(int(experts[0]), (s, want_slot, None))
        elif boxes:
            slot_of.setdefault(boxes[0].start[0], (s, want_slot, boxes))
    cells = []
    for e in range(param.global_shape[0]):
        if e not in slot_of:
            cells.append(Cell(world, "none"))  # not this rank's (destination EP)
            continue
        s, want_slot, boxes = slot_of[e]
        got_slot = got.take(0, s, 1, 1)
        cell = (
            None
            if boxes is None
            else _map_slice_cell(plan, param, world, got_slot, want_slot, boxes)
        )
        cells.append(cell or _materialized_cell(plan, param, world, got_slot, want_slot))
    return cells


def _boxes(pieces: list | None) -> list[Box] | None:
    """The boxes among ``pieces`` (None stays None)."""
    return None if pieces is None else [p for p in pieces if isinstance(p, Box)]


def _slot_boxes(index: RegionMap, global_shape: tuple[int, ...]) -> list[list[Box]] | None:
    """The oracle's boxes of each slot (dim 0) of a destination tensor, read off its
    map's pieces in storage order; None when a piece spans two slots (the caller then
    reads each slot's map back).

    >>> from syncviz.oracle.index import boxes_map, whole_map
    >>> m = boxes_map((2, 4, 1), (2, 2, 1), [Box((e, r, 0), (e + 1, r + 1, 1))
    ...     for e in range(2) for r in (0, 2)])
    >>> [[b.start for b in slot] for slot in _slot_boxes(m, (2, 4, 1))]
    [[(0, 0, 0), (0, 2, 0)], [(1, 0, 0), (1, 2, 0)]]
    >>> _slot_boxes(whole_map((2, 4, 1)), (2, 4, 1)) is None
    True
    """
    pieces = map_pieces(index, global_shape)
    if pieces is None:
        return None
    per_slot = math.prod(index.shape[1:])
    out: list[list[Box]] = [[] for _ in range(index.shape[0])]
    pos = 0
    for piece in pieces:
        if piece.numel and pos // per_slot != (pos + piece.numel - 1) // per_slot:
            return None
        if isinstance(piece, Box):
            out[pos // per_slot].append(piece)
        elif not isinstance(piece, Pad):
            return None
        pos += piece.numel
    return out


def _materialized_cell(plan, param, world, got: RegionMap, want: RegionMap) -> Cell:
    """:func:`slice_cell` of one slot read element by element, when it is small enough."""
    from syncviz.diagram.raster import MATERIALIZE_LIMIT
    from syncviz.run.values import to_local_ids

    if got.numel > MATERIALIZE_LIMIT:
        return Cell(world, "wrong", f"holds other ids ({got.numel} elements, too many to describe)")
    held = to_local_ids(plan, param, got.materialize()).to(torch.int64)
    expected = to_local_ids(plan, param, want.materialize()).to(torch.int64)
    return slice_cell(param, world, held[0], expected[0])


def _map_slice_cell(
    plan, param, world, got: RegionMap, want: RegionMap, boxes: list
) -> Cell | None:
    """:func:`slice_cell` of one slot from its maps; None when a piece is partly right
    or its held ids do not compress (the caller then reads the elements)."""
    from syncviz.compare import compare_maps

    base, numel = plan.id_base[param.key], math.prod(param.global_shape)
    got_regions, want_regions = got.regions, want.regions
    if list(got_regions) == list(want_regions):
        # The same regions hold the same ids: right, however many pieces (an interleaved
        # fc1 slot is one region per row, too many pairs to overlay at real sizes).
        return Cell(world, "ok", _box_slice_words(param, boxes))
    if len(got_regions) * len(want_regions) > MAX_PAIRS:
        return None
    held: list[Region] = []  # got where wrong, "unwritten" where right or unwritten
    bad = unwritten = 0
    foreign = padding = uncertain = False
    for ra, rb, lo, hi in meetings(got_regions, want_regions):
        size = math.prod(y - x for x, y in zip(lo, hi, strict=True))
        va, vb = ra.value_at(lo), rb.value_at(lo)
        moving = [d for d in range(len(lo)) if hi[d] - lo[d] > 1]
        blank = _constant(lo, hi, UNWRITTEN_ID)
        if ra.is_constant and va == UNWRITTEN_ID:
            unwritten += size
        elif va != vb or any(ra.strides[d] != rb.strides[d] for d in moving):
            terms = [(hi[d] - lo[d], ra.strides[d] - rb.strides[d]) for d in moving]
            right = _right_count(vb - va, [(n, k) for n, k in terms if k])
            if right is None:
                uncertain = True
            elif right:
                return None  # this piece is right in places: only its elements tell which
            bad += size
            low = va + sum(min(0, ra.strides[d] * (hi[d] - lo[d] - 1)) for d in moving)
            high = va + sum(max(0, ra.strides[d] * (hi[d] - lo[d] - 1)) for d in moving)
            if ra.is_constant and va < 0:
                foreign |= va == FOREIGN_ID
                padding |= va == -1
            elif low < 0:
                return None  # ids and markers in one region: read the elements
            else:
                foreign |= low < base or high >= base + numel
            strides = tuple(ra.strides[d] if d in moving else 0 for d in range(len(lo)))
            held.append(Region(lo, hi, va, strides))
            continue
        held.append(blank)
    if not bad and not unwritten:
        return Cell(world, "ok", _box_slice_words(param, boxes))
    if uncertain:  # the checker's exact count says whether any piece is right in places
        diff = compare_maps(got, want)
        if diff.wrong + diff.unwritten != bad + unwritten:
            return None
    total = got.numel
    if not bad:
        if unwritten == total:
            return Cell(world, "unwritten")
        return Cell(world, "unwritten", f"{unwritten} of {total} unwritten")
    if not unwritten and not foreign:  # the same ids elsewhere? (right places agree anyway)
        whole = map_pieces(got, param.global_shape, base)
        if whole is None:
            return None
        same = _same_ids(_boxes(whole), boxes)
        if same is None:
            return None
        pads = sum(p.numel for p in whole if isinstance(p, Pad))
        if same and pads == want.numel - sum(b.numel for b in boxes):
            return Cell(world, "wrong", "right elements, wrong places")
    held_map = RegionMap(got.shape, held, merge=False)
    got_boxes = _boxes(map_pieces(held_map, param.global_shape, base))
    if got_boxes is None:
        return None
    extra = ["data of another parameter"] * foreign + ["padding"] * padding
    return Cell(world, "wrong", "holds " + _box_held_words(param, got_boxes, extra))


MAX_PAIRS = 1 << 16  # (held, expected) region pairs overlaid per slot before reading elements


def _right_count(target: float, terms: list[tuple[int, int]]) -> int | None:
    """How many ``0 <= x_i < n_i`` solve ``sum(x_i * k_i) == target`` for one or two
    terms ``(n_i, k_i)`` (``k_i`` nonzero), in closed form; None for more terms.

    >>> _right_count(6, [(4, 1), (4, 2)]), _right_count(5, [(3, 2)]), _right_count(0, [])
    (2, 0, 1)
    """
    if target != int(target):
        return 0
    target = int(target)
    if not terms:
        return int(target == 0)
    if len(terms) == 1:
        ((n, k),) = terms
        q, r = divmod(target, k)
        return int(r == 0 and 0 <= q < n)
    if len(terms) > 2:
        return None
    (n1, k1), (n2, k2) = terms
    g = math.gcd(k1, k2)
    if target % g:
        return 0
    # x1 = x0 + t * (k2 / g), x2 = y0 - t * (k1 / g): count the t keeping both in range.
    inv = pow(k1 // g, -1, abs(k2 // g)) if abs(k2 // g) > 1 else 0
    x0 = (target // g * inv) % abs(k2 // g) if abs(k2 // g) > 1 else 0
    y0, rem = divmod(target - x0 * k1, k2)
    assert rem == 0
    s1, s2 = abs(k2 // g), -(k1 // g) * (1 if k2 > 0 else -1)
    bounds = [_steps(x0, s1, n1), _steps(y0, s2, n2)]
    lo, hi = max(b[0] for b in bounds), min(b[1] for b in bounds)
    return max(0, hi - lo + 1)


def _steps(start: int, step: int, n: int) -> tuple[int, int]:
    """The t with ``0 <= start + t * step < n`` (``step`` nonzero), as (lowest, highest)."""
    if step > 0:
        return -(start // step), (n - 1 - start) // step
    step = -step
    return -((n - 1 - start) // step), start // step


def _constant(lo, hi, value: float) -> Region:
    return Region(tuple(lo), tuple(hi), value, (0,) * len(lo))


def _same_ids(a: list[Box], b: list[Box]) -> bool | None:
    """Whether boxes ``a`` and ``b`` hold the same ids, each once (None: too many pairs)."""
    if len(a) * (len(a) + len(b)) > MAX_PAIRS:
        return None
    size_a, size_b = sum(x.numel for x in a), sum(x.numel for x in b)
    if size_a != size_b:
        return False
    self_overlap = sum(
        overlap(x.start, x.stop, y.start, y.stop) for i, x in enumerate(a) for y in a[i + 1 :]
    )
    return (
        not self_overlap
        and sum(overlap(x.start, x.stop, y.start, y.stop) for x in a for y in b) == size_a
    )


def _box_slice_words(param: ParamLayout, boxes: list[Box]) -> str:
    """:func:`slice_words` of the ids of ``boxes`` (global boxes), without the ids."""
    if not boxes:
        return "padding"

    def rows_in(a: int, b: int) -> tuple[int, int, int] | None:
        spans = [(max(x.start[1], a) - a, min(x.stop[1], b) - a) for x in boxes]
        return _interval_stats(spans)

    cols = _interval_stats([(x.start[2], x.stop[2]) for x in boxes])
    half = param.global_shape[1] // 2
    halves = [int(x.start[1] >= half) for x in boxes]  # the pieces in storage order
    return _slice_text(param, rows_in, cols, _alternates(halves))


def _box_held_words(param: ParamLayout, boxes: list[Box], extra: list[str]) -> str:
    """:func:`held_words` of the ids of ``boxes`` (in flat order), without the ids: each
    block is met first where a box first enters it, in that box's own dim order."""
    first: dict[int, tuple[int, int]] = {}
    bounds: dict[int, list[list[int]]] = {}
    by_expert: dict[int, list[int]] = {}  # blocks stack experts on dim 0: look only there
    for number, block in enumerate(param.blocks):
        for e in range(block.box.start[0], block.box.stop[0]):
            by_expert.setdefault(e, []).append(number)
    for i, box in enumerate(boxes):
        local = dict(zip(box.dims, row_major([box.extents[d] for d in box.dims]), strict=True))
        near = dict.fromkeys(
            n for e in range(box.start[0], box.stop[0]) for n in by_expert.get(e, ())
        )
        for number in near:
            block = param.blocks[number]
            met = intersection(box.start, box.stop, block.box.start, block.box.stop)
            if met is None:
                continue
            lo, hi = met
            pos = (i, sum((lo[d] - box.start[d]) * local[d] for d in range(box.ndim)))
            first[number] = min(first.get(number, pos), pos)
            seen = bounds.setdefault(number, [[lo[1], hi[1] - 1], [lo[2], hi[2] - 1]])
            for k, d in enumerate((1, 2)):
                seen[k] = [min(seen[k][0], lo[d]), max(seen[k][1], hi[d] - 1)]
    order = sorted(first, key=first.__getitem__)
    return _held_text(param, order, {n: [tuple(v) for v in bounds[n]] for n in order}, extra)


def slice_cell(param: ParamLayout, world: int, got: torch.Tensor, want: torch.Tensor) -> Cell:
    """The after-cell of one expert slice: ok, unwritten, or wrong with what it holds.

    ``got``/``want`` are the slice's ids (-1 padding, -2 never written, -3 foreign).

    >>> from syncviz import Parallel
    >>> from syncviz.spec import ModelSpec
    >>> from syncviz.oracle import model_layout
    >>> spec = ModelSpec("tiny", "mixtral", 1, 8, 4, 2, 8, 64, num_experts=4,
    ...     moe_ffn_hidden_size=4)
    >>> w13 = model_layout(spec, Parallel(tp=1), Parallel(tp=1), layers=[0]).params[5]
    >>> ids = w13.dst[0].index.ids()
    >>> slice_cell(w13, 1, ids[3], ids[0]).text
    'holds expert 3 gate, up'
    """
    from syncviz.compare import RIGHT, element_status

    bad = element_status(got, want) != RIGHT  # the checker's verdict, element by element
    if not bool(bad.any()):
        return Cell(world, "ok", slice_words(param, want))
    if bool((got[bad] == UNWRITTEN_ID).all()):
        if bool(bad.all()):
            return Cell(world, "unwritten")
        return Cell(world, "unwritten", f"{int(bad.sum())} of {bad.numel()} unwritten")
    held = got[bad & (got != UNWRITTEN_ID)]
    if torch.equal(torch.sort(got.reshape(-1)).values, torch.sort(want.reshape(-1)).values):
        return Cell(world, "wrong", "right elements, wrong places")
    return Cell(world, "wrong", "holds " + held_words(param, held))


def slice_words(param: ParamLayout, ids: torch.Tensor) -> str:
    """Which FFN slice of its expert a rank's ids are: rows of the gate and up halves
    (w13) or columns of down (w2); the whole expert says "whole".

    >>> from syncviz import Parallel
    >>> from syncviz.spec import ModelSpec
    >>> from syncviz.oracle import model_layout
    >>> spec = ModelSpec("tiny", "mixtral", 1, 8, 4, 2, 8, 64, num_experts=4,
    ...     moe_ffn_hidden_size=4)
    >>> layout = model_layout(spec, Parallel(tp=1), Parallel(tp=2), layers=[0])
    >>> w13, w2 = layout.params[5], layout.params[6]
    >>> slice_words(w13, w13.dst[1].index.ids()[2]), slice_words(w2, w2.dst[0].index.ids()[0])
    ('gate rows 2-3, up rows 2-3', 'cols 0-1')
    >>> slice_words(w13, w13.dst[0].index.ids()[1, [0, 2]])
    'gate row 0, up row 0'
    """
    flat = ids.reshape(-1).to(torch.int64)
    flat = flat[flat >= 0]
    if not flat.numel():
        return "padding"
    _, rows, cols = torch.unravel_index(flat, param.global_shape)

    def rows_in(a: int, b: int) -> tuple[int, int, int] | None:
        inside = (rows >= a) & (rows < b)
        return _value_stats(rows[inside] - a) if bool(inside.any()) else None

    # Each held row in storage order (a row's elements are stored together).
    held_rows = torch.unique_consecutive(rows)
    halves = (held_rows >= param.global_shape[1] // 2).to(torch.int64).tolist()
    return _slice_text(param, rows_in, _value_stats(cols), _alternates(halves))


def _alternates(halves: list[int]) -> bool:
    """Whether a w13 slice's rows, in storage order, go gate, up, gate, ... (interleaved,
    as gpt-oss's fc1) rather than one run per half (0 gate, 1 up per row or piece).

    >>> _alternates([0, 1, 0, 1]), _alternates([0, 0, 1, 1]), _alternates([0, 1])
    (True, False, False)
    """
    runs = sum(1 for i, h in enumerate(halves) if i == 0 or h != halves[i - 1])
    return runs > 2


def _slice_text(
    param: ParamLayout, rows_in, cols: tuple[int, int, int], interleaved: bool = False
) -> str:
    """:func:`slice_words` from the slice's (lowest, highest, how many) rows in a range
    (``rows_in(a, b)``, counted from ``a``; None if none) and its columns; an
    ``interleaved`` w13 slice (gate and up rows alternating) says so, its two halves'
    rows said once where they are the same rows."""
    n_rows, n_cols = param.global_shape[1:]
    col_words = _range_words("cols", cols, n_cols)
    if param.kind == "experts_w13":
        half = n_rows // 2
        parts = []
        for name, a, b in (("gate", 0, half), ("up", half, n_rows)):
            stats = rows_in(a, b)
            if stats is not None:
                parts.append((name, _range_words("rows", stats, half) or "whole"))
        if interleaved and len(parts) == 2 and parts[0][1] == parts[1][1]:
            words = f"gate/up {parts[0][1]}, interleaved"
        else:
            words = ", ".join(f"{name} {rows}" for name, rows in parts)
            words += ", interleaved" if interleaved else ""
        return words + (f"; {col_words}" if col_words else "")
    row_words = _range_words("rows", rows_in(0, n_rows), n_rows)
    return ", ".join(w for w in (row_words, col_words) if w) or "whole"


def _value_stats(values: torch.Tensor) -> tuple[int, int, int]:
    """(lowest, highest, how many distinct) of some coordinates."""
    return int(values.min()), int(values.max()), values.unique().numel()


def _interval_stats(spans: list[tuple[int, int]]) -> tuple[int, int, int] | None:
    """:func:`_value_stats` of the union of half-open ``spans`` (None when empty).

    >>> _interval_stats([(4, 6), (0, 2), (1, 3)])
    (0, 5, 5)
    """
    spans = sorted((a, b) for a, b in spans if a < b)
    if not spans:
        return None
    merged = [list(spans[0])]
    for a, b in spans[1:]:
        if a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return merged[0][0], merged[-1][1] - 1, sum(b - a for a, b in merged)


def _range_words(name: str, stats: tuple[int, int, int], full: int) -> str:
    """``rows 2-3`` for a contiguous range, ``rows 0-7 (4 of them)`` if gapped, "" if whole
    (``stats``: lowest, highest, how many)."""
    lo, hi, count = stats
    if (lo, hi) == (0, full - 1) and count == full:
        return ""
    span = f"{name[:-1]} {lo}" if lo == hi else f"{name} {lo}-{hi}"
    return span if count == hi - lo + 1 else f"{span} ({count} of them)"


def held_words(param: ParamLayout, ids: torch.Tensor) -> str:
    """Short words for a set of ids: its blocks, each with the rows/cols it covers.

    A dimension is named only when the ids do not span the whole block on it.

    >>> from syncviz import Parallel
    >>> from syncviz.spec import ModelSpec
    >>> from syncviz.oracle import model_layout
    >>> spec = ModelSpec("tiny", "mixtral", 1, 8, 4, 2, 8, 64, num_experts=4,
    ...     moe_ffn_hidden_size=4)
    >>> w13 = model_layout(spec, Parallel(tp=1), Parallel(tp=1), layers=[0]).params[5]
    >>> held_words(w13, w13.dst[0].index.ids()[3, 4:6])
    'expert 3 up rows 0-1'
    """
    ids = ids.reshape(-1)
    extra = []
    if bool((ids == FOREIGN_ID).any()):
        extra.append("data of another parameter")
    if bool((ids == -1).any()):
        extra.append("padding")
    valid = ids[ids >= 0]
    blocks = block_numbers(param.blocks, valid)
    order = list(dict.fromkeys(blocks.tolist()))
    bounds = {}
    for number in order[:MAX_HELD_BLOCKS]:
        coords = torch.stack(torch.unravel_index(valid[blocks == number], param.global_shape))
        bounds[number] = [(int(coords[d].min()), int(coords[d].max())) for d in (1, 2)]
    return _held_text(param, order, bounds, extra)


def _held_text(param: ParamLayout, order: list[int], bounds: dict, extra: list[str]) -> str:
    """:func:`held_words` from the blocks held (first met first) and, for the first ones,
    the (lowest, highest) global row and column held of each."""
    words = []
    for number in order[:MAX_HELD_BLOCKS]:
        block = param.blocks[number]
        parts = [block.label]
        for dim, name, (lo, hi) in zip((1, 2), ("row", "col"), bounds[number], strict=True):
            a, b = block.box.start[dim], block.box.stop[dim]
            if (lo, hi) != (a, b - 1):
                parts.append(_span(name, lo - a, hi - a))
        words.append(" ".join(parts))
    if len(order) > MAX_HELD_BLOCKS:
        words.append(f"+{len(order) - MAX_HELD_BLOCKS} more blocks")
    return _merge_parts(words + extra)


def _span(name: str, lo: int, hi: int) -> str:
    return f"{name} {lo}" if lo == hi else f"{name}s {lo}-{hi}"


def _merge_parts(words: list[str]) -> str:
    """'expert 3 gate, expert 3 up' -> 'expert 3 gate, up' (same expert said once)."""
    out: list[str] = []
    prefix = None
    for w in words:
        head = " ".join(w.split(" ")[:2]) if w.startswith("expert ") else None
        if head is not None and head == prefix:
            out.append(w[len(head) + 1 :])
        else:
            out.append(w)
        prefix = head
    return ", ".join(out) if out else "nothing"


def _aggregate(before: list[list[Cell]], after: list[list[Cell]]) -> list[ExpertRow]:
    """Consecutive experts whose before and after cells read the same become one row."""
    rows: list[ExpertRow] = []
    for e, (b, a) in enumerate(zip(before, after, strict=True)):
        key = ([c.key for c in b], [c.key for c in a])
        if (
            rows
            and (
                [c.key for c in rows[-1].before],
                [c.key for c in rows[-1].after],
            )
            == key
        ):
            last = rows[-1]
            rows[-1] = ExpertRow(last.first, e, last.before, last.after)
        else:
            rows.append(ExpertRow(e, e, tuple(b), tuple(a)))
    return rows


# ---------------------------------------------------------------- text


def _cell_text(cell: Cell) -> str:
    if cell.status == "none":
        return "-"
    if cell.status in ("whole", "part"):
        return cell.text
    return f"{cell.status}: {cell.text}" if cell.text else cell.status


def expert_text(d: ExpertDiagram) -> str:
    """The expert view as text: a before table and an after table, one line per row.

    >>> row = ExpertRow(0, 7, (Cell(0, "whole", "whole"),), (Cell(1, "wrong", "holds expert 9"),))
    >>> d = ExpertDiagram("w", "experts_w2", (8, 4, 4), "w", [RankColumn(0, "rank 0 tp0 ep0")],
    ...     [RankColumn(1, "rank 1 tp0")], [row])
    >>> print(expert_text(d))
    experts w
    before (trainer ranks): rank 0 tp0 ep0
      experts 0-7 (8, all wrong): whole
    after (vLLM ranks): rank 1 tp0
      experts 0-7 (8, all wrong): wrong: holds expert 9
    """
    lines = [f"experts {d.title}"]
    for side, name, cols in (("before", "trainer", d.src), ("after", d.engine, d.dst)):
        lines.append(f"{side} ({name} ranks): " + " | ".join(c.label for c in cols))
        for row in d.rows:
            cells = " | ".join(_cell_text(c) for c in getattr(row, side))
            lines.append(f"  {row.label}: {cells}")
    lines += d.notes
    return "\n".join(lines)
