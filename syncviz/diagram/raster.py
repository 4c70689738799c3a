"""Provenance rasters: any tensor of ids drawn element by element, downsampled into cells.

One drawing rule for every tensor (a trainer shard, the result of a recorded
op, a vLLM tensor as it is or as the oracle expects it): each element's id
names the block it holds (hue by family, shade by block index) and its offset
inside that block (a light gradient, so reversed or shifted rows show). Large
tensors are cut into at most ``max_cells`` cells per side; a cell holding more
than one block is marked mixed, and a cell with any wrong element is wrong, so
downsampling never hides a mistake. Plain torch arrays; the text form below is
what tests compare.

>>> from syncviz.run.inprocess import tiny_run
>>> qkv = tiny_run().plan.layout.params[1]
>>> table = BlockTable(qkv)
>>> print(raster_text(raster(qkv.dst[1].index.ids(), table)))
rows 0-1: q2*8
rows 2-3: q3*8
rows 4-5: k1*8
rows 6-7: v1*8
>>> print(raster_text(raster(qkv.dst[1].index.ids(), table), inner=True).splitlines()[0])
rows 0: q2:0*8

A result's tensors hold their ids as a :class:`~syncviz.provenance.RegionMap`
(boxes, each an affine function of its coordinates), drawn by :func:`map_raster`:
the same raster, at the cost of the map's regions and the raster's cells, never
of the tensor's elements. Each field of a raster follows from the regions alone:

- the first element of a cell (its block and offset) is the map read at the
  cell's corner, one point per cell;
- a cell is mixed when it holds more than one block: each region is cut into
  lattice pieces that hold one block each (block boundaries are the parameter's
  block cuts; a region whose ids wrap across rows of the global tensor, as a flat
  chunk does, is first split into residue classes or runs that do not wrap), and
  every piece paints its block into the cells it touches (per-cell min and max);
- a cell's status is the worst verdict of its elements: actual and expected
  regions are overlaid, and inside each overlap the difference of two affine
  functions is zero either everywhere, nowhere, or on one line, which decides
  each touched cell exactly.

A map too fragmented for that (more than ``MAX_PIECES`` pieces) is materialized
when it is small, and refused with the fix otherwise.

>>> m = qkv.dst[1].index
>>> print(raster_text(map_raster(m, table, cell=(2, 4))))
rows 0-1: q2*2
rows 2-3: q3*2
rows 4-5: k1*2
rows 6-7: v1*2
>>> raster_text(map_raster(m, table, cell=(4, 4))) == raster_text(
...     raster(qkv.dst[1].index.ids(), table, cell=(4, 4)))
True
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import numpy
import torch

from syncviz.compare import NOT_OURS, NOT_WRITTEN, WRONG, element_status
from syncviz.errors import SyncvizError
from syncviz.geometry import row_major, unravel
from syncviz.oracle import ParamLayout
from syncviz.oracle.blocks import Block
from syncviz.provenance import RegionMap
from syncviz.provenance.regions import Region
from syncviz.ragged import ragged, rect_cells
from syncviz.run.values import FOREIGN_ID, UNWRITTEN_ID

PAD = -1  # block number of padding (id -1)
UNWRITTEN = int(UNWRITTEN_ID)  # block number of an element nobody wrote (id -2)
FOREIGN = int(FOREIGN_ID)  # block number of another parameter's data (id -3)
SPECIAL_TOKENS = {PAD: "pad", UNWRITTEN: "--", FOREIGN: "xx"}
MAX_CELLS = 192  # cells per side by default: enough for 256 experts at 2 px


SMALL = 1 << 22  # elements below which one torch thread is faster than several


@contextmanager
def small_work(numel: int) -> Iterator[None]:
    """Run small tensor work on one torch thread: spreading a few thousand elements over
    threads costs more than it saves, up to 10x on a busy machine. Restored on exit."""
    before = torch.get_num_threads()
    if numel < SMALL and before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def block_token(block: Block) -> str:
    """A short name of a block for the text form: ``q3``, ``k0``, ``h5``, ``e12u``, ``g``.

    >>> from syncviz.oracle.index import Box
    >>> block_token(Block("expert", "expert", Box((3, 0, 0), (4, 4, 8)), 3, "up"))
    'e3u'
    """
    letter = {"o": "h", "expert": "e", "vocab": "w", "norm": "n", "router": "r"}.get(
        block.family, block.family[0]
    )
    text = letter if block.index is None else f"{letter}{block.index}"
    return text + (block.part[0] if block.part else "")


class BlockTable:
    """Per global id: its block number and its offset inside the block (vectorized).

    Blocks tile the global tensor as boxes, so the cuts of all boxes along each
    dim split it into segments; a small grid over segments names the block.
    Cost follows the number of ids, never the global size.
    """

    def __init__(self, param: ParamLayout) -> None:
        self.param = param
        self.shape = tuple(param.global_shape)
        self.blocks = param.blocks
        self.tokens = [block_token(b) for b in param.blocks]
        self.labels = [b.label for b in param.blocks]
        self.families = [b.family for b in param.blocks]
        self.shades = [b.index or 0 for b in param.blocks]
        self.cuts = []
        for d in range(len(self.shape)):
            points = {0, self.shape[d]}
            for b in self.blocks:
                points.update((b.box.start[d], b.box.stop[d]))
            self.cuts.append(torch.tensor(sorted(points), dtype=torch.int64))
        grid = torch.full([len(c) - 1 for c in self.cuts], -1, dtype=torch.int64)
        for i, b in enumerate(self.blocks):
            index = tuple(
                slice(int(torch.searchsorted(c, a)), int(torch.searchsorted(c, z)))
                for c, a, z in zip(self.cuts, b.box.start, b.box.stop, strict=True)
            )
            grid[index] = i
        self.grid = grid
        # Coordinate -> segment along each dim, as a table: a gather beats a search.
        self.segment = [
            torch.searchsorted(c, torch.arange(n), right=True) - 1
            for c, n in zip(self.cuts, self.shape, strict=True)
        ]
        self.start = torch.tensor([b.box.start for b in self.blocks], dtype=torch.int64)
        self.extent = torch.tensor(
            [[z - a for a, z in zip(b.box.start, b.box.stop, strict=True)] for b in self.blocks],
            dtype=torch.int64,
        )
        self.row_length = self.extent[:, -1].tolist()
        # Elements per block, and 1 for the markers (index -1 and below read the last).
        self.sizes = torch.tensor([self.numel(x) for x in range(len(self.blocks))] + [1])

    def lookup(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(block number, offset inside the block) of every id; negative ids keep their value.

        The offset is row-major inside the block's box, so it grows along the
        block's rows: a reversed or shifted copy shows as a different offset.
        """
        flat = ids.reshape(-1).to(torch.int64)
        valid = flat >= 0
        coords = unravel_ids(flat.clamp(min=0), self.shape)
        seg = [table[x] for table, x in zip(self.segment, coords, strict=True)]
        block = self.grid[tuple(seg)]
        safe = block.clamp(min=0)
        offset = torch.zeros_like(flat)
        for d, x in enumerate(coords):
            offset = offset * self.extent[safe, d] + (x - self.start[safe, d])
        block = torch.where(valid, block, flat)
        offset = torch.where(valid, offset, torch.zeros_like(flat))
        return block.view(ids.shape), offset.view(ids.shape)

    def block_of(self, ids: torch.Tensor) -> torch.Tensor:
        """The block number of every id (negative ids keep their value): the cheap path,
        touching only the dims that blocks actually cut."""
        flat = ids.reshape(-1).to(torch.int64)
        rest = flat.clamp(min=0)
        index: list[torch.Tensor | int] = []
        strides = row_major(self.shape)
        for d, cuts in enumerate(self.cuts):
            if len(cuts) == 2:
                index.append(0)
                continue
            coord = rest // strides[d] if d == 0 else (rest // strides[d]) % self.shape[d]
            index.append(self.segment[d][coord])
        if all(isinstance(i, int) for i in index):
            block = torch.full_like(flat, int(self.grid[tuple(index)]))
        else:
            block = self.grid[tuple(index)]
        return torch.where(flat >= 0, block, flat).view(ids.shape)

    def inner(self, block: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """How far into its block (0 to 1) an element at ``offset`` lies; 0 for markers."""
        along = offset.to(torch.float32) / self.sizes[block.clamp(min=-1)].to(torch.float32)
        return torch.where(block >= 0, along, torch.zeros_like(along))

    def row_in_block(self, block: int, offset: int) -> int:
        """The row inside its block of an element at ``offset`` (the last dim's extent is a row)."""
        if block < 0:
            return 0
        return offset // self.row_length[block]

    def numel(self, block: int) -> int:
        return int(self.extent[block].prod()) if block >= 0 else 1


@dataclass
class Raster:
    """One tensor as cells: ``block[i, j]`` the block the cell holds (its first element).

    ``cell`` is (rows, cols) of elements per cell; ``rows``/``cols`` the drawn
    element grid (1-D tensors are one row; [E, R, C] stacks E bands of R rows).
    ``offset`` is the first element's offset inside its block, ``inner`` that
    offset as a fraction of the block; ``mixed`` marks cells holding more than
    one block; ``status`` the checker's verdict of the worst element (0 ok, 1
    wrong, 2 unwritten, 3 another parameter's data), all 0 when not compared.
    """

    shape: tuple[int, ...]
    rows: int
    cols: int
    cell: tuple[int, int]
    bands: int
    block: torch.Tensor
    offset: torch.Tensor
    inner: torch.Tensor
    mixed: torch.Tensor
    status: torch.Tensor
    table: BlockTable

    @property
    def cells(self) -> tuple[int, int]:
        return int(self.block.shape[0]), int(self.block.shape[1])

    def span(self, i: int, j: int) -> tuple[int, int, int, int]:
        """Element rows r0..r1-1 and cols c0..c1-1 of cell (i, j)."""
        rs, cs = self.cell
        return i * rs, min(self.rows, (i + 1) * rs), j * cs, min(self.cols, (j + 1) * cs)


def unravel_ids(flat: torch.Tensor, shape: Sequence[int]) -> list[torch.Tensor]:
    """:func:`~syncviz.geometry.unravel` of every flat position: one tensor per dim.

    >>> [c.tolist() for c in unravel_ids(torch.tensor([5, 23]), (2, 3, 4))]
    [[0, 1], [1, 2], [1, 3]]
    """
    coords = []
    for n in reversed(shape):
        coords.append(flat % n)
        flat = flat // n
    return coords[::-1]


def cells_touched(r0, r1, c0, c1, rs: int, cs: int) -> tuple:
    """The cells (rows ``i0 .. i1 - 1``, cols ``j0 .. j1 - 1``) that element rows
    ``r0 .. r1 - 1``, cols ``c0 .. c1 - 1`` touch, at cells of ``rs`` x ``cs`` elements
    (ints, or tensors of boxes).

    >>> cells_touched(2, 6, 0, 1, 4, 2)
    (0, 2, 0, 1)
    """
    return r0 // rs, (r1 - 1) // rs + 1, c0 // cs, (c1 - 1) // cs + 1


def grid_shape(shape: Sequence[int]) -> tuple[int, int]:
    """The drawn 2-D grid of a tensor of ``shape``: 1-D -> one row; [E, R, C] -> E stacked
    bands of R rows; any other -> its rows by the rest.

    >>> grid_shape((8,)), grid_shape((4, 2, 3)), grid_shape((2, 3, 4, 5))
    ((1, 8), (8, 3), (2, 60))
    """
    if len(shape) == 1:
        return 1, shape[0]
    if len(shape) == 3:
        return shape[0] * shape[1], shape[2]
    return shape[0], math.prod(shape[1:])


def as_grid(ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """ids as a 2-D grid (:func:`grid_shape`), and its bands (E of [E, R, C]; else 0)."""
    bands = int(ids.shape[0]) if ids.dim() == 3 else 0
    return ids.reshape(grid_shape(ids.shape)), bands


def cell_size(n: int, max_cells: int) -> int:
    """Elements per cell along a side of ``n``: a power of two, so aligned blocks stay whole.

    >>> cell_size(16, 192), cell_size(6144, 192), cell_size(200, 192)
    (1, 32, 2)
    """
    need = math.ceil(n / max_cells)
    return 1 if need <= 1 else 1 << (need - 1).bit_length()


def cell_grid(
    rows: int, cols: int, max_cells: int, cell: tuple[int, int] | None
) -> tuple[int, int, int, int]:
    """Elements per cell (``cell``, else :func:`cell_size` of each side, at most the side)
    and the cells on each side: ``rs, cs, nr, nc``.

    >>> cell_grid(16, 6144, 192, None), cell_grid(3, 5, 192, (4, 2))
    ((1, 32, 16, 192), (3, 2, 1, 3))
    """
    rs, cs = cell or (cell_size(rows, max_cells), cell_size(cols, max_cells))
    rs, cs = max(1, min(rs, rows)), max(1, min(cs, cols))
    return rs, cs, math.ceil(rows / rs), math.ceil(cols / cs)


def raster(
    ids: torch.Tensor,
    table: BlockTable,
    status: torch.Tensor | None = None,
    max_cells: int = MAX_CELLS,
    cell: tuple[int, int] | None = None,
) -> Raster:
    """The raster of a tensor of this parameter's ids (``status``: the checker's, per element).

    ``cell`` fixes the elements per cell (so several panels share one scale);
    otherwise each side gets at most ``max_cells`` cells.
    """
    shape = tuple(ids.shape)
    grid, bands = as_grid(ids.to(torch.int64))
    rows, cols = int(grid.shape[0]), int(grid.shape[1])
    rs, cs, nr, nc = cell_grid(rows, cols, max_cells, cell)
    corners = grid[::rs, ::cs]
    first, first_offset = table.lookup(corners)
    if rs * cs == 1:
        mixed = torch.zeros_like(first, dtype=torch.bool)
    else:
        block = table.block_of(grid)
        mixed = cell_reduce(block, rs, cs, "max") != cell_reduce(block, rs, cs, "min")
    if status is None:
        cell_status = torch.zeros_like(first)
    elif rs * cs == 1:
        cell_status = as_grid(status)[0].to(torch.int64)
    else:  # the worst verdict in the cell: downsampling never hides a wrong element
        cell_status = cell_reduce(as_grid(status)[0].to(torch.int64), rs, cs, "max")
    inner = table.inner(first, first_offset)
    assert first.shape == (nr, nc)
    return Raster(
        shape, rows, cols, (rs, cs), bands, first, first_offset, inner, mixed, cell_status, table
    )


def cell_reduce(x: torch.Tensor, rs: int, cs: int, how: str) -> torch.Tensor:
    """The max (or min) of every rs x cs cell of a 2-D tensor; edge cells may be smaller.

    >>> cell_reduce(torch.arange(6).reshape(2, 3), 2, 2, "max").tolist()
    [[4, 5]]
    """
    rows, cols = x.shape
    nr, nc = math.ceil(rows / rs), math.ceil(cols / cs)
    if rows % rs or cols % cs:  # pad with a value that cannot win
        fill = torch.iinfo(torch.int64).min if how == "max" else torch.iinfo(torch.int64).max
        padded = torch.full((nr * rs, nc * cs), fill, dtype=x.dtype)
        padded[:rows, :cols] = x
        x = padded
    view = x.view(nr, rs, nc, cs)
    return view.amax(dim=(1, 3)) if how == "max" else view.amin(dim=(1, 3))


def raster_text(r: Raster, inner: bool = False) -> str:
    """One line per run of identical cell rows: ``rows 0-3: q2*8 k1~!*2``.

    Each line lists the cells of a row as tokens with run lengths; ``~``
    marks a mixed cell and ``!`` a cell the checker calls not right.
    """
    lines: list[tuple[int, int, str]] = []
    nr, nc = r.cells
    blocks, offsets = r.block.tolist(), r.offset.tolist()
    mixed, status = r.mixed.tolist(), r.status.tolist()
    names = {
        b: SPECIAL_TOKENS.get(b) or r.table.tokens[b] for b in {x for row in blocks for x in row}
    }
    for i in range(nr):
        tokens = []
        for j in range(nc):
            b = blocks[i][j]
            t = names[b]
            if inner and b >= 0:
                t += f":{r.table.row_in_block(b, offsets[i][j])}"
            tokens.append(t + ("~" if mixed[i][j] else "") + ("!" if status[i][j] else ""))
        runs: list[list] = []
        for t in tokens:
            if runs and runs[-1][0] == t:
                runs[-1][1] += 1
            else:
                runs.append([t, 1])
        text = " ".join(t if n == 1 else f"{t}*{n}" for t, n in runs)
        r0, r1, _, _ = r.span(i, 0)
        if lines and lines[-1][2] == text:
            lines[-1] = (lines[-1][0], r1, text)
        else:
            lines.append((r0, r1, text))
    return "\n".join(f"rows {_span(a, b)}: {t}" for a, b, t in lines)


def _span(a: int, b: int) -> str:
    return str(a) if b - a == 1 else f"{a}-{b - 1}"


# ---------------------------------------------------------------- from maps

MAX_PIECES = 1 << 18  # one-block lattice pieces per panel before the map counts as fragmented
MATERIALIZE_LIMIT = 1 << 24  # elements of a fragmented panel materialized instead
MAX_PAIRS = 1 << 22  # overlapping (held, expected) box pairs compared per panel
_BIG = torch.iinfo(torch.int64).max
_SMALL = torch.iinfo(torch.int64).min


class Fragmented(Exception):
    """A map needs more pieces than ``MAX_PIECES`` to be drawn from its regions."""


class Box2(NamedTuple):
    """A region of a 2-D grid: rows r0..r1-1, cols c0..c1-1, local id ``v + sr*dr + sc*dc``.

    A constant (``sr == sc == 0``) with ``v < 0`` is a marker: -1 padding, -2
    unwritten, -3 another parameter's data. A tuple (a real-size panel has thousands,
    made and read as a tensor's rows at once).
    """

    r0: int
    r1: int
    c0: int
    c1: int
    v: int
    sr: int
    sc: int


def grid_map(region_map: RegionMap) -> RegionMap:
    """The map seen as the raster's 2-D grid (:func:`grid_shape`)."""
    shape = region_map.shape
    if len(shape) == 1:
        return region_map.unsqueeze(0)
    if len(shape) == 2:
        return region_map
    return region_map.reshape(grid_shape(shape))


BOXES_KEPT = 64  # maps whose boxes are remembered (see local_boxes)
_Kept = tuple[RegionMap, torch.Tensor | None]  # the map, its boxes (None: fragmented)
_boxes: OrderedDict[tuple[int, int, int], _Kept] = OrderedDict()


def local_boxes(region_map: RegionMap, base: int, numel: int) -> torch.Tensor:
    """The map's regions on the grid, as ids local to a parameter whose model-wide ids are
    ``base .. base + numel - 1`` (read back as :func:`~syncviz.run.values.to_local_ids` does:
    markers below 0 kept, any other id outside the parameter is -3): a tensor whose rows
    are :class:`Box2` fields (``r0, r1, c0, c1, v, sr, sc``), read by the raster, its
    status and its grid as a whole (:func:`box_tuples` gives them one by one).

    Remembered for the last few maps (a panel's held map is read for its raster, its
    status and its grid; an expected map for its raster and the status against it): at
    real sizes each reading cuts thousands of regions.

    >>> m = RegionMap.affine((2, 4), 10, (4, 1))
    >>> local_boxes(m, 8, 16).tolist(), local_boxes(m, 0, 8).tolist()
    ([[0, 2, 0, 4, 2, 4, 1]], [[0, 2, 0, 4, -3, 0, 0]])
    """
    key = (id(region_map), base, numel)
    hit = _boxes.get(key)
    if hit is None or hit[0] is not region_map:  # the map itself is kept: its id stays its own
        try:
            boxes: torch.Tensor | None = _local_boxes(region_map, base, numel)
        except Fragmented:
            boxes = None
        hit = _boxes[key] = (region_map, boxes)
        while len(_boxes) > BOXES_KEPT:
            _boxes.popitem(last=False)
    _boxes.move_to_end(key)
    if hit[1] is None:
        raise Fragmented
    return hit[1]


Boxes = torch.Tensor | Sequence[Box2]  # boxes as a tensor's rows or as tuples


def box_tuples(boxes: Boxes) -> tuple[Box2, ...]:
    """Boxes (a tensor's rows, as :func:`local_boxes` gives them) as :class:`Box2` tuples."""
    if not isinstance(boxes, torch.Tensor):
        return tuple(boxes)
    return tuple(Box2(*row) for row in boxes.tolist())


def box_tensor(boxes: Boxes) -> torch.Tensor:
    """Boxes as a tensor of rows ``r0, r1, c0, c1, v, sr, sc``."""
    return torch.as_tensor(boxes, dtype=torch.int64).view(-1, 7)


def _local_boxes(region_map: RegionMap, base: int, numel: int) -> torch.Tensor:
    """:func:`local_boxes`: every region classified at once (a marker, ids of this
    parameter, ids of another); regions partly this parameter's are halved, all at once,
    until each part is one or the other."""
    grid = grid_map(region_map)
    if grid.size_hint > MAX_PIECES:
        raise Fragmented
    rows = [r.start + r.stop + (r.offset,) + r.strides for r in grid.regions]
    t = torch.from_numpy(numpy.array(rows, dtype=numpy.int64).reshape(-1, 7))  # numpy: 2x faster
    work = t[:, [0, 2, 1, 3, 4, 5, 6]]  # r0, c0, r1, c1 -> r0, r1, c0, c1
    out: list[torch.Tensor] = []
    placed = 0
    while True:
        done, rest = _classified(work, base, numel)
        out.append(done)
        placed += len(done)
        if not len(rest):
            return torch.cat(out)
        if placed + 2 * len(rest) > MAX_PIECES:
            raise Fragmented
        work = _halves(rest)


def _classified(t: torch.Tensor, base: int, numel: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes (rows of :class:`Box2` fields, model-wide ids) placed as local ones where each
    is a marker, ids of this parameter (made local) or another's (-3); and the rest, partly
    this parameter's (a dim of one element moves nowhere: its stride is 0 in both)."""
    r0, r1, c0, c1, v, sr, sc = t.unbind(1)
    nr, nc = r1 - r0, c1 - c0
    sr, sc = torch.where(nr > 1, sr, 0), torch.where(nc > 1, sc, 0)
    lo = v + (sr * (nr - 1)).clamp(max=0) + (sc * (nc - 1)).clamp(max=0)
    hi = v + (sr * (nr - 1)).clamp(min=0) + (sc * (nc - 1)).clamp(min=0)
    marker = (lo == hi) & (v < 0)
    ours = ~marker & (lo >= base) & (hi < base + numel)
    foreign = ~marker & ~ours & (lo >= 0) & ((hi < base) | (lo >= base + numel))
    rest = ~(marker | ours | foreign)
    if bool((rest & (lo < 0)).any()):  # ids below zero that are not one marker
        raise Fragmented
    zero = torch.zeros_like(v)
    value = torch.where(ours, v - base, torch.where(foreign, FOREIGN, v))
    moving = ours | rest
    placed = torch.stack(
        [r0, r1, c0, c1, value, torch.where(moving, sr, zero), torch.where(moving, sc, zero)], 1
    )
    return placed[~rest], placed[rest]


def _halves(t: torch.Tensor) -> torch.Tensor:
    """Every box (rows of :class:`Box2` fields) cut in two across its longer side (rows
    when both are as long): its first halves, then its second ones."""
    r0, r1, c0, c1, v, sr, sc = t.unbind(1)
    by_rows = (r1 - r0) >= (c1 - c0)
    mr, mc = r0 + (r1 - r0) // 2, c0 + (c1 - c0) // 2
    r_mid, c_mid = torch.where(by_rows, mr, r1), torch.where(by_rows, c1, mc)  # first ends
    r_on, c_on = torch.where(by_rows, mr, r0), torch.where(by_rows, c0, mc)  # second starts
    v_on = v + sr * (r_on - r0) + sc * (c_on - c0)
    first = torch.stack([r0, r_mid, c0, c_mid, v, sr, sc], 1)
    second = torch.stack([r_on, r1, c_on, c1, v_on, sr, sc], 1)
    return torch.cat([first, second])


def local_grid(region_map: RegionMap, base: int, numel: int) -> RegionMap | None:
    """The map on the raster grid in local ids (:func:`local_boxes`), or None when it is
    too fragmented to hold that way."""
    try:
        boxes = local_boxes(region_map, base, numel)
    except Fragmented:
        return None
    return BoxGrid(grid_map(region_map).shape, boxes)


class BoxGrid(RegionMap):
    """A grid map of local boxes whose regions are made when first read (a hover, a step):
    a real-size panel holds thousands, and its first picture reads none of them.

    >>> g = BoxGrid((2, 4), (Box2(0, 2, 0, 4, 3, 4, 1),))
    >>> g.regions[0].offset, g.materialize().tolist()[1]
    (3, [7.0, 8.0, 9.0, 10.0])
    """

    __slots__ = ("_boxes", "_made")

    def __init__(self, shape: tuple[int, ...], boxes: Boxes) -> None:
        self.shape = tuple(shape)
        self._boxes = boxes
        self._made: tuple[Region, ...] | None = None

    @property
    def regions(self) -> tuple[Region, ...]:  # type: ignore[override]
        if self._made is None:
            self._made = tuple(
                Region(
                    (b.r0, b.c0),
                    (b.r1, b.c1),
                    b.v,
                    (b.sr if b.r1 - b.r0 > 1 else 0, b.sc if b.c1 - b.c0 > 1 else 0),
                )
                for b in box_tuples(self._boxes)
            )
        return self._made

    @property
    def size_hint(self) -> int:
        return len(self._boxes)


def _digits(stride: int, shape: tuple[int, ...], strides: tuple[int, ...]) -> list[int]:
    """A flat id step as steps of the global coordinates (mixed radix, signed)."""
    sign, s = (1, stride) if stride >= 0 else (-1, -stride)
    out = [
        (s // st) % n if d else s // st
        for d, (n, st) in enumerate(zip(shape, strides, strict=True))
    ]
    return [sign * x for x in out]


# A lattice piece: rows r0 + pr*k (k < nr), cols c0 + pc*l (l < nc), local id x0 + Sr*k + Sc*l.
Piece = tuple[int, int, int, int, int, int, int, int, int]


def one_block_pieces(box: Box2, table: BlockTable, budget: int) -> torch.Tensor:
    """``box`` (ids of this parameter) cut into lattice pieces that hold one block each:
    rows of ``r0, pr, nr, c0, pc, nc, block`` (rows ``r0 + pr*k``, ``k < nr``; columns
    likewise)."""
    shape = table.shape
    strides = row_major(shape)
    work: list[Piece] = [
        (box.r0, 1, box.r1 - box.r0, box.c0, 1, box.c1 - box.c0, box.v, box.sr, box.sc)
    ]
    done: list[tuple[int, ...]] = []
    runs: list[torch.Tensor] = []
    count = 0
    cut_dims = [d for d, c in enumerate(table.cuts) if len(c) > 2]
    while work:
        if count + len(done) + len(work) > budget:
            raise Fragmented
        p = work.pop()
        r0, pr, nr, c0, pc, nc, x0, sr, sc = p
        rows_still, cols_still = nr == 1 or sr == 0, nc == 1 or sc == 0
        if rows_still != cols_still and abs(sc if rows_still else sr) == 1:
            got = _run_pieces(p, table, strides, cut_dims, budget - count - len(done))
            runs.append(got)
            count += len(got)
            continue
        a = unravel(x0, shape)
        dr = _digits(sr, shape, strides) if nr > 1 else [0] * len(shape)
        dc = _digits(sc, shape, strides) if nc > 1 else [0] * len(shape)
        split = _overflow_split(p, a, dr, dc, shape)
        if split is not None:
            work += split
            continue
        cuts: list[set[int]] = [{0, nr}, {0, nc}]
        sliced = None
        for d in cut_dims:
            steps = [(0, dr[d], nr), (1, dc[d], nc)]
            moving = [(k, s, n) for k, s, n in steps if s]
            if len(moving) == 2:  # both axes move this coordinate: slice the shorter one
                axis = 0 if nr <= nc else 1
                sliced = [_along(p, axis, t, 1, 1) for t in range(min(nr, nc))]
                break
            if not moving:
                continue
            k, step, n = moving[0]
            for z in table.cuts[d].tolist():
                t = -((a[d] - z) // step) if step > 0 else (a[d] - z) // -step + 1
                if 0 < t < n:
                    cuts[k].add(t)
        if sliced is not None:
            work += sliced
            continue
        rk, cl = sorted(cuts[0]), sorted(cuts[1])
        tk = torch.tensor(rk[:-1], dtype=torch.int64)
        tl = torch.tensor(cl[:-1], dtype=torch.int64)
        blocks = table.block_of(x0 + sr * tk[:, None] + sc * tl[None, :]).tolist()
        for i, (k0, k1) in enumerate(itertools.pairwise(rk)):
            for j, (l0, l1) in enumerate(itertools.pairwise(cl)):
                done.append((r0 + pr * k0, pr, k1 - k0, c0 + pc * l0, pc, l1 - l0, blocks[i][j]))
    return torch.cat([torch.tensor(done, dtype=torch.int64).view(-1, 7), *runs])


def _run_pieces(p: Piece, table: BlockTable, strides, cut_dims, budget: int) -> torch.Tensor:
    """One-block pieces (as :func:`one_block_pieces` gives them) of a piece whose ids run
    one by one along one axis, so they are one interval ``[lo, hi)`` of ids: cut where a
    cut dim's coordinate crosses a cut, every boundary at once."""
    r0, pr, nr, c0, pc, nc, x0, sr, sc = p
    axis, step, n = (1, sc, nc) if nr == 1 or sr == 0 else (0, sr, nr)
    lo, hi = (x0, x0 + n) if step > 0 else (x0 - n + 1, x0 + 1)
    points = [torch.tensor([lo, hi], dtype=torch.int64)]
    total = 0
    for d in cut_dims:
        period = strides[d] * table.shape[d]  # ids from one row of dim d-1 to the next
        first, last = lo // period, (hi - 1) // period
        total += (last - first + 1) * (len(table.cuts[d]) - 1)
        if total > budget:
            raise Fragmented
        q = torch.arange(first, last + 1, dtype=torch.int64)[:, None] * period
        y = (q + table.cuts[d][None, :-1] * strides[d]).view(-1)
        points.append(y[(y > lo) & (y < hi)])
    cut = torch.unique(torch.cat(points))  # sorted interval ends, lo and hi included
    blocks = table.block_of(cut[:-1])
    keep = torch.ones(len(blocks), dtype=torch.bool)
    keep[1:] = blocks[1:] != blocks[:-1]  # neighbours of one block make one piece
    a, blocks = cut[:-1][keep], blocks[keep]
    b = torch.cat([a[1:], cut[-1:]])
    # Ids [a, b) are places a - x0 .. b - x0 along the axis, or x0 - b + 1 .. when descending.
    t0, t1 = (a - x0, b - x0) if step > 0 else (x0 - b + 1, x0 - a + 1)
    ones = torch.ones_like(t0)
    if axis == 0:
        cols = (ones * c0, ones * pc, ones * nc)
        rows = (r0 + pr * t0, ones * pr, t1 - t0)
    else:
        rows = (ones * r0, ones * pr, ones * nr)
        cols = (c0 + pc * t0, ones * pc, t1 - t0)
    return torch.stack([*rows, *cols, blocks], 1)


def _overflow_split(p: Piece, a, dr, dc, shape) -> list[Piece] | None:
    """Pieces of ``p`` whose global coordinates do not wrap, or None when ``p``'s do not."""
    nr, nc = p[2], p[5]
    for d in reversed(range(len(shape))):
        lo = a[d] + min(0, dr[d] * (nr - 1)) + min(0, dc[d] * (nc - 1))
        hi = a[d] + max(0, dr[d] * (nr - 1)) + max(0, dc[d] * (nc - 1))
        if lo >= 0 and hi < shape[d]:
            continue
        axis = 0 if abs(dr[d]) * (nr - 1) >= abs(dc[d]) * (nc - 1) else 1
        step, n = (dr[d], nr) if axis == 0 else (dc[d], nc)
        period = shape[d] // math.gcd(abs(step), shape[d])
        runs = abs(step) * (n - 1) // shape[d] + 2
        if 1 < period < min(n, runs):  # residue classes step past the wrap together
            return [_along(p, axis, q, period, -((q - n) // period)) for q in range(period)]
        # Runs up to the first wrap of this axis alone; else halves.
        t = -((a[d] - shape[d]) // step) if step > 0 else a[d] // -step + 1
        if not 0 < t < n:
            t = n // 2
        return [_along(p, axis, 0, 1, t), _along(p, axis, t, 1, n - t)]
    return None


def _along(p: Piece, axis: int, first: int, step: int, count: int) -> Piece:
    """The part of ``p`` at places ``first + step*k`` (``k < count``) along ``axis``.

    >>> _along((0, 1, 8, 0, 1, 4, 0, 4, 1), 0, 1, 3, 3)  # rows 1, 4, 7 of an [8, 4] piece
    (1, 3, 3, 0, 1, 4, 4, 12, 1)
    """
    r0, pr, nr, c0, pc, nc, x0, sr, sc = p
    if axis == 0:
        return (r0 + pr * first, pr * step, count, c0, pc, nc, x0 + sr * first, sr * step, sc)
    return (r0, pr, nr, c0 + pc * first, pc * step, count, x0 + sc * first, sr, sc * step)


def _mixed(boxes: torch.Tensor, table: BlockTable, rs: int, cs: int, nr: int, nc: int):
    """Per cell, whether it holds more than one block: every box is a mark (a marker, or
    ids of one block) or the one-block pieces of its shape (:func:`one_block_pieces`)
    placed at its corner; both painted as cell rectangles (per-cell min and max).

    Boxes alike share their pieces: the cuts follow from a box's extents, strides and
    the global coordinates of its first id, except the outermost one when no block cuts
    it (its ids stay inside the parameter, so that coordinate never wraps). The boxes
    are grouped by that key as a tensor's rows, so thousands of boxes cost a few ops.

    Rows 0-15 of this map alternate rows of heads 0 and 1 of a tiny o_proj (one box per
    pair, several in a row of cells), rows 16-23 hold head 2: the marks are those of the
    materialized ids at any cell size, a row of cells straddled by boxes included.

    >>> from syncviz.run.inprocess import tiny_run
    >>> o_proj = tiny_run().plan.layout.params[2]
    >>> table, whole = BlockTable(o_proj), RegionMap.affine((8, 8), 0, (8, 1))
    >>> m = RegionMap.cat([whole.take(1, 0, 1, 4).reshape((16, 2)), whole.take(1, 4, 1, 2)], 0)
    >>> map_raster(m, table, cell=(4, 2)).mixed.view(-1).tolist()
    [True, True, True, True, False, False]
    >>> ids = m.materialize()
    >>> [
    ...     torch.equal(map_raster(m, table, cell=c).mixed, raster(ids, table, cell=c).mixed)
    ...     for c in ((4, 2), (5, 1), (8, 2), (3, 2))
    ... ]
    [True, True, True, True]
    """
    low = torch.full((nr, nc), _BIG, dtype=torch.int64)
    high = torch.full((nr, nc), _SMALL, dtype=torch.int64)
    t = boxes.view(-1, 7)
    r0, r1, c0, c1, v, sr, sc = t.unbind(1)
    constant = ((sr == 0) | (r1 - r0 == 1)) & ((sc == 0) | (c1 - c0 == 1))
    is_mark = (v < 0) | constant
    rects = [torch.stack([*cells_touched(r0, r1, c0, c1, rs, cs), table.block_of(v)], 1)[is_mark]]
    budget = MAX_PIECES - int(is_mark.sum())
    if budget < 0:
        raise Fragmented
    laid = t[~is_mark]
    if len(laid):
        coords = unravel_ids(laid[:, 4], table.shape)
        if len(table.cuts[0]) <= 2:
            coords = coords[1:]
        sizes = [laid[:, 1] - laid[:, 0], laid[:, 3] - laid[:, 2], laid[:, 5], laid[:, 6]]
        group, groups = row_groups(sizes + coords)
        each = torch.bincount(group, minlength=groups)
        first = torch.full((groups,), len(laid), dtype=torch.int64)
        first.scatter_reduce_(0, group, torch.arange(len(laid)), "amin")
        shapes = []
        for g, i in enumerate(first.tolist()):
            b0, b1, a0, a1, x0, ssr, ssc = laid[i].tolist()
            got = one_block_pieces(Box2(0, b1 - b0, 0, a1 - a0, x0, ssr, ssc), table, budget)
            budget -= len(got) * int(each[g])
            if budget < 0:
                raise Fragmented
            shapes.append(got)
        # Boxes of one group that lie in one row of cells (or one column) at the same
        # cell paint the same rectangles there: one of them is placed (min and max do not
        # count repeats). A real-size panel's thousands of boxes are a few hundred places.
        r_at, c_at = laid[:, 0], laid[:, 2]
        one_r = r_at // rs == (laid[:, 1] - 1) // rs
        one_c = c_at // cs == (laid[:, 3] - 1) // cs
        place, n_places = row_groups(
            [
                group,
                torch.where(one_r, -1 - r_at // rs, r_at),
                torch.where(one_c, -1 - c_at // cs, c_at),
            ]
        )
        pick = torch.full((n_places,), len(laid), dtype=torch.int64)
        pick.scatter_reduce_(0, place, torch.arange(len(laid)), "amin")
        placed = _placed_rects(shapes, group[pick], r_at[pick], c_at[pick], rs, cs, low, high)
        rects.append(placed)
    _paint_min_max(low, high, torch.cat(rects))
    return low != high


def row_groups(columns: Sequence[torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Number the distinct rows of equal-length integer columns in sorted (lexicographic)
    order: each row's number and how many there are, as ``torch.unique(dim=0)``'s inverse
    gives them. The columns are read as digits of one number (each its own span), sorted
    once; a sort per column only where those numbers would pass 2^62 (several times
    faster than sorting rows either way).

    >>> group, n = row_groups([torch.tensor([5, 1, 5, 1]), torch.tensor([0, 2, 0, 1])])
    >>> group.tolist(), n
    ([2, 1, 2, 0], 3)
    >>> big = torch.tensor([0, 2**40, 0, 2**40])
    >>> row_groups([big, big, torch.tensor([3, 1, 2, 1])])[0].tolist()
    [1, 2, 0, 2]
    """
    group = torch.zeros(len(columns[0]), dtype=torch.int64)
    size = 1  # the numbers in ``group`` lie in 0 .. size - 1
    for column in columns:
        least = int(column.min()) if len(column) else 0
        span = (int(column.max()) - least + 1) if len(column) else 1
        if size * span >= 1 << 62:  # renumber what is there, then this column if need be
            _, group = torch.unique(group, return_inverse=True)
            size = int(group.max()) + 1
            if size * span >= 1 << 62:
                _, column = torch.unique(column, return_inverse=True)
                least, span = 0, int(column.max()) + 1
        group = group * span + (column - least)
        size *= span
    _, group = torch.unique(group, return_inverse=True)
    return group, (int(group.max()) + 1) if len(group) else 0


def _placed_rects(shapes, group, r_at, c_at, rs: int, cs: int, low, high) -> torch.Tensor:
    """The cell rectangles (rows of ``i0, i1, j0, j1, block``) of every box: the pieces
    of its group's shape (``shapes[group]``) put at its corner (``r_at``, ``c_at``), all
    at once; a piece whose elements lie further apart than a cell (so it touches cells
    with gaps between) is painted into ``low``/``high`` on its own instead."""
    pieces = torch.cat(shapes)
    n_pieces = torch.tensor([len(p) for p in shapes], dtype=torch.int64)
    start = torch.cumsum(n_pieces, 0) - n_pieces
    box, t = ragged(n_pieces[group])
    p = pieces[start[group[box]] + t]
    r0, c0 = r_at[box] + p[:, 0], c_at[box] + p[:, 3]
    pr, nr, pc, nc, block = p[:, 1], p[:, 2], p[:, 4], p[:, 5], p[:, 6]
    r1, c1 = r0 + pr * (nr - 1), c0 + pc * (nc - 1)
    whole = ((nr == 1) | (pr <= rs)) & ((nc == 1) | (pc <= cs))
    for k in (~whole).nonzero().view(-1).tolist():  # rare: rows or columns far apart
        ri = _cell_index(int(r0[k]), int(pr[k]), int(nr[k]), rs)
        ci = _cell_index(int(c0[k]), int(pc[k]), int(nc[k]), cs)
        _paint(low, ri, ci, int(block[k]), "min")
        _paint(high, ri, ci, int(block[k]), "max")
    rects = torch.stack((r0 // rs, r1 // rs + 1, c0 // cs, c1 // cs + 1, block), 1)
    return rects if bool(whole.all()) else rects[whole]


def _paint_rects(low: torch.Tensor, high: torch.Tensor | None, rects) -> None:
    """Per-cell min and max of the values of many cell rectangles (rows of ``i0, i1, j0,
    j1, value``, a list or a tensor), in one scatter each (``high`` None: the max into
    ``low``)."""
    if not len(rects):
        return
    t = torch.as_tensor(rects, dtype=torch.int64)
    which, rows, cols = rect_cells(t[:, 0], t[:, 1], t[:, 2], t[:, 3])
    flat = rows * low.shape[1] + cols
    values = t[which, 4]
    if high is None:
        low.view(-1).scatter_reduce_(0, flat, values, "amax")
        return
    low.view(-1).scatter_reduce_(0, flat, values, "amin")
    high.view(-1).scatter_reduce_(0, flat, values, "amax")


MAX_COVER = 1 << 23  # (value, cell) counters of _paint_min_max before it paints cell by cell


def _covered(rects: torch.Tensor, groups: torch.Tensor, n: int, shape) -> torch.Tensor:
    """Per group and cell, whether a rectangle of the group covers the cell (rows of
    ``rects``: ``i0, i1, j0, j1``; ``groups``: each one's group below ``n``): a
    difference array summed along both sides, so it costs the rectangles and the cells,
    never the rectangles' areas."""
    nr, nc = shape
    count = torch.zeros((n, nr + 1, nc + 1), dtype=torch.int32)
    flat, base = count.view(-1), groups * ((nr + 1) * (nc + 1))
    i0, i1, j0, j1 = (rects[:, k].clamp(0, nr if k < 2 else nc) for k in range(4))
    for rows, cols, sign in ((i0, j0, 1), (i1, j1, 1), (i0, j1, -1), (i1, j0, -1)):
        ones = torch.full(rows.shape, sign, dtype=torch.int32)
        flat.index_add_(0, base + rows * (nc + 1) + cols, ones)
    return count.cumsum(1).cumsum(2)[:, :nr, :nc] > 0


def _paint_min_max(low: torch.Tensor, high: torch.Tensor, rects: torch.Tensor) -> None:
    """:func:`_paint_rects` (per-cell min into ``low``, max into ``high``) by the cover of
    each distinct value (:func:`_covered`): a real-size panel's pieces touch millions of
    cells in all, but hold a few dozen values on a grid of at most ~10^5 cells."""
    rects = rects[(rects[:, 1] > rects[:, 0]) & (rects[:, 3] > rects[:, 2])]
    if not len(rects):
        return
    least, most = int(rects[:, 4].min()), int(rects[:, 4].max())
    n = most - least + 1  # values are blocks and markers: a short range (no sort needed)
    cover = n * (low.shape[0] + 1) * (low.shape[1] + 1)
    area = int(((rects[:, 1] - rects[:, 0]) * (rects[:, 3] - rects[:, 2])).sum())
    if cover > MAX_COVER or area <= cover:  # cell by cell is cheaper: few or small rectangles
        _paint_rects(low, high, rects)
        return
    values = torch.arange(least, most + 1, dtype=torch.int64)
    present = _covered(rects[:, :4], rects[:, 4] - least, n, tuple(low.shape)).to(torch.int8)
    some = present.any(0)
    first = values[present.argmax(0)]  # values ascend: the first present is the least
    last = values[n - 1 - present.flip(0).argmax(0)]
    low[some] = torch.minimum(low, first)[some]
    high[some] = torch.maximum(high, last)[some]


def _cell_index(start: int, step: int, count: int, size: int) -> slice | torch.Tensor:
    """The cells (along one side) touched by elements ``start + step*k``, ``k < count``."""
    last = start + step * (count - 1)
    if count == 1 or step <= size:
        return slice(start // size, last // size + 1)
    return torch.arange(start, last + 1, step) // size


def _paint(target: torch.Tensor, rows, cols, value: int, how: str) -> None:
    """``target[rows, cols] = min/max(target[rows, cols], value)`` for slices or index lists."""
    if isinstance(rows, slice) and isinstance(cols, slice):
        view = target[rows, cols]
        view.clamp_(max=value) if how == "min" else view.clamp_(min=value)
        return
    ri = torch.arange(target.shape[0])[rows] if isinstance(rows, slice) else rows
    ci = torch.arange(target.shape[1])[cols] if isinstance(cols, slice) else cols
    index = (ri[:, None], ci[None, :])
    current = target[index]
    target[index] = current.clamp(max=value) if how == "min" else current.clamp(min=value)


def map_raster(
    region_map: RegionMap,
    table: BlockTable,
    expected: RegionMap | None = None,
    *,
    base: int = 0,
    max_cells: int = 192,
    cell: tuple[int, int] | None = None,
    mixed: bool = True,
) -> Raster:
    """The raster of a map of ids (model-wide ids from ``base``; 0: local ids), equal to
    :func:`~syncviz.diagram.raster.raster` of its materialized local ids.

    ``expected`` (local ids: an oracle tensor's ``index``) gives the checker's status
    per cell. ``mixed=False`` skips the mixed marks (all False), for callers that read
    only corners and status. A map too fragmented is materialized when it holds at most
    ``MATERIALIZE_LIMIT`` elements; otherwise a :class:`~syncviz.errors.SyncvizError`.
    """
    numel = math.prod(table.shape)
    try:
        return _map_raster(region_map, table, expected, base, numel, max_cells, cell, mixed)
    except Fragmented:
        return _materialized(region_map, table, expected, base, numel, max_cells, cell, mixed)


def _materialized(region_map, table, expected, base, numel, max_cells, cell, mixed) -> Raster:
    """:func:`map_raster` of a map too fragmented for its regions: its ids materialized
    and read as :func:`~syncviz.run.values.to_local_ids` reads them."""
    if region_map.numel > MATERIALIZE_LIMIT:
        raise SyncvizError(
            f"a tensor of shape {list(region_map.shape)} holds ids too fragmented to draw from"
            f" its map (more than {MAX_PIECES} pieces) and too big ({region_map.numel} elements)"
            " to materialize",
            fix="use --scaled for this parameter",
        )
    values = region_map.materialize()
    local = values - base
    inside = (local >= 0) & (local < numel)
    local = torch.where(inside, local, torch.full_like(values, FOREIGN_ID))
    local = torch.where(values < 0, values, local)  # markers kept
    status = None
    if expected is not None:
        status = element_status(local, expected.materialize().to(torch.int64))
    out = raster(local, table, status, max_cells=max_cells, cell=cell)
    if not mixed:
        out.mixed = torch.zeros_like(out.mixed)
    return out


def _map_raster(region_map, table, expected, base, numel, max_cells, cell, mixed) -> Raster:
    shape = tuple(region_map.shape)
    rows, cols = grid_shape(shape)
    bands = shape[0] if len(shape) == 3 else 0
    rs, cs, nr, nc = cell_grid(rows, cols, max_cells, cell)
    boxes = local_boxes(region_map, base, numel)
    corners = _corners(boxes, rs, cs, nr, nc)
    first, first_offset = table.lookup(corners)
    if rs * cs == 1 or not mixed:
        is_mixed = torch.zeros_like(first, dtype=torch.bool)
    else:
        is_mixed = _mixed(boxes, table, rs, cs, nr, nc)
    if expected is None:
        status = torch.zeros_like(first)
    else:
        status = _status(boxes, local_boxes(expected, 0, numel), rs, cs, nr, nc)
    inner = table.inner(first, first_offset)
    return Raster(
        shape, rows, cols, (rs, cs), bands, first, first_offset, inner, is_mixed, status, table
    )


def _corners(boxes: torch.Tensor, rs: int, cs: int, nr: int, nc: int) -> torch.Tensor:
    """The id at every cell's first element: each corner point lies in exactly one box."""
    corners = torch.empty((nr, nc), dtype=torch.int64)
    r0, r1, c0, c1, v, sr, sc = boxes.reshape(-1, 7).unbind(1)
    # The cells whose first element (a multiple of the cell size) lies in each box.
    which, i, j = rect_cells(-(-r0 // rs), -(-r1 // rs), -(-c0 // cs), -(-c1 // cs))
    values = v[which] + sr[which] * (i * rs - r0[which]) + sc[which] * (j * cs - c0[which])
    corners.view(-1)[i * nc + j] = values
    return corners


PAIRS_AT_ONCE = 1 << 20  # (held, expected) box pairs compared in one tensor op


def _status(held: Boxes, wanted: Boxes, rs, cs, nr, nc) -> torch.Tensor:
    """The worst verdict per cell of ``held`` against ``wanted`` (both local boxes).

    A held marker (unwritten, another parameter's data) paints its verdict into the cells
    it touches. Every other held box is paired with the expected boxes that start above
    its last row and reach below its first (a sorted search), and each pair's overlap
    where got - expected is not 0 throughout goes to :func:`_paint_wrong`.
    """
    out = torch.zeros((nr, nc), dtype=torch.int64)
    r0, r1, c0, c1, v, sr, sc = box_tensor(held).unbind(1)
    asr, asc = torch.where(r1 - r0 > 1, sr, 0), torch.where(c1 - c0 > 1, sc, 0)
    constant = (asr == 0) & (asc == 0)
    unwritten, foreign = constant & (v == UNWRITTEN), constant & (v == FOREIGN)
    verdict = torch.where(unwritten, NOT_WRITTEN, NOT_OURS).to(torch.int64)
    marked = unwritten | foreign
    cells = torch.stack([*cells_touched(r0, r1, c0, c1, rs, cs), verdict], 1)
    _paint_rects(out, None, cells[marked])
    expected = box_tensor(wanted)
    if not len(expected):
        return out
    expected = expected[torch.argsort(expected[:, 0], stable=True)]  # by first row
    reach = torch.cummax(expected[:, 1], 0).values  # the lowest row reached so far
    first = torch.searchsorted(reach, r0.contiguous(), right=True)
    last = torch.searchsorted(expected[:, 0].contiguous(), r1.contiguous())
    count = torch.where(marked, 0, (last - first).clamp(min=0))
    if int(count.sum()) > MAX_PAIRS:
        raise Fragmented
    which, k = ragged(count)
    for at in range(0, len(which), PAIRS_AT_ONCE):
        i = which[at : at + PAIRS_AT_ONCE]
        e0, e1, f0, f1, ev, esr, esc = expected[first[i] + k[at : at + PAIRS_AT_ONCE]].unbind(1)
        esr, esc = torch.where(e1 - e0 > 1, esr, 0), torch.where(f1 - f0 > 1, esc, 0)
        top, bottom = torch.maximum(r0[i], e0), torch.minimum(r1[i], e1)
        left, right = torch.maximum(c0[i], f0), torch.minimum(c1[i], f1)
        va = v[i] + asr[i] * (top - r0[i]) + asc[i] * (left - c0[i])
        ve = ev + esr * (top - e0) + esc * (left - f0)
        dr = torch.where(bottom - top > 1, asr[i] - esr, 0)
        dc = torch.where(right - left > 1, asc[i] - esc, 0)
        differ = (top < bottom) & (left < right) & ((va != ve) | (dr != 0) | (dc != 0))
        found = torch.stack([top, bottom, left, right, va - ve, dr, dc], 1)[differ]
        if len(found):
            _paint_wrong(out, found, rs, cs)
    return out


def _paint_wrong(out: torch.Tensor, t: torch.Tensor, rs: int, cs: int) -> None:
    """Mark wrong every cell touched by an overlap where got - expected is not 0 throughout.

    Over an overlap the difference is ``D + dr * (r - r0) + dc * (c - c0)``; a cell's part
    of it is right only if that part is one point along every axis the difference moves
    on, and the difference is 0 there.
    """
    r0, r1, c0, c1, dd, dr, dc = t.unbind(1)
    # Where the difference has no zero on the whole overlap, every touched cell is wrong:
    # painted as rectangles (the usual case at real sizes, thousands of boxes per panel).
    lo = dd + (dr * (r1 - r0 - 1)).clamp(max=0) + (dc * (c1 - c0 - 1)).clamp(max=0)
    hi = dd + (dr * (r1 - r0 - 1)).clamp(min=0) + (dc * (c1 - c0 - 1)).clamp(min=0)
    nowhere = (lo > 0) | (hi < 0)
    if nowhere.any():
        cells = torch.stack(cells_touched(r0, r1, c0, c1, rs, cs), 1)
        rects = cells[nowhere]
        hit = _covered(rects, torch.zeros(len(rects), dtype=torch.int64), 1, tuple(out.shape))
        out[hit[0]] = out[hit[0]].clamp(min=WRONG)
        t = t[~nowhere]
        if not len(t):
            return
        r0, r1, c0, c1, dd, dr, dc = t.unbind(1)
    which, i, j = rect_cells(*cells_touched(r0, r1, c0, c1, rs, cs))
    top, left = torch.maximum(i * rs, r0[which]), torch.maximum(j * cs, c0[which])
    rn = torch.minimum((i + 1) * rs, r1[which]) - top
    cn = torch.minimum((j + 1) * cs, c1[which]) - left
    rdr, rdc = dr[which], dc[which]
    diff = dd[which] + rdr * (top - r0[which]) + rdc * (left - c0[which])
    wrong = (diff != 0) | ((rn > 1) & (rdr != 0)) | ((cn > 1) & (rdc != 0))
    out.view(-1).scatter_reduce_(0, i * out.shape[1] + j, wrong.to(torch.int64) * WRONG, "amax")


def map_value(region_map: RegionMap, row: int, col: int) -> int:
    """The id at element (row, col) of the map's grid (no element materialized)."""
    for r in grid_map(region_map).regions:
        if r.start[0] <= row < r.stop[0] and r.start[1] <= col < r.stop[1]:
            return int(r.value_at((row, col)))
    raise SyncvizError(f"element ({row}, {col}) is outside the map", fix="report a bug")
