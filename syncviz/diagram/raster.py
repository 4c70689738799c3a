"""Provenance rasters: any tensor of ids drawn element by element, downsampled into cells.

One drawing rule for every tensor (a trainer shard, the result of a recorded
op, a vLLM tensor as it is or as the oracle expects it): each element's id
names the block it holds (hue by family, shade by block index) and its offset
inside that block (a light gradient, so reversed or shifted rows show). Large
tensors are cut into at most ``max_cells`` cells per side; a cell holding more
than one block is marked mixed, and a cell with any wrong element is wrong, so
downsampling never hides a mistake. Plain torch arrays; the text form below is
what tests compare.

>>> from syncviz.spec import ModelSpec
>>> from syncviz.oracle import model_layout
>>> from syncviz import Parallel
>>> spec = ModelSpec("tiny", "llama-mcore", 1, 8, 4, 2, 8, 64, head_dim=2)
>>> qkv = model_layout(spec, Parallel(tp=1), Parallel(tp=2), layers=[0]).params[1]
>>> table = BlockTable(qkv)
>>> print(raster_text(raster(qkv.dst[1].index.ids(), table)))
rows 0-1: q2*8
rows 2-3: q3*8
rows 4-5: k1*8
rows 6-7: v1*8
>>> print(raster_text(raster(qkv.dst[1].index.ids(), table), inner=True).splitlines()[0])
rows 0: q2:0*8
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from syncviz.oracle import ParamLayout
from syncviz.oracle.blocks import Block
from syncviz.run.values import FOREIGN_ID, UNWRITTEN_ID

PAD = -1  # block number of padding (id -1)
UNWRITTEN = int(UNWRITTEN_ID)  # block number of an element nobody wrote (id -2)
FOREIGN = int(FOREIGN_ID)  # block number of another parameter's data (id -3)
SPECIAL_TOKENS = {PAD: "pad", UNWRITTEN: "--", FOREIGN: "xx"}
SPECIAL_WORDS = {PAD: "padding", UNWRITTEN: "unwritten", FOREIGN: "another parameter's data"}
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
        rest = flat.clamp(min=0)
        coords = []
        for n in reversed(self.shape):
            coords.insert(0, rest % n)
            rest = rest // n
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
        stride = 1
        strides = []
        for n in reversed(self.shape):
            strides.insert(0, stride)
            stride *= n
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

    def token(self, i: int, j: int, inner: bool = False) -> str:
        """The text token of cell (i, j): block, ``~`` when mixed, ``!`` when wrong."""
        b = int(self.block[i, j])
        text = SPECIAL_TOKENS.get(b) or self.table.tokens[b]
        if inner and b >= 0:
            text += f":{self.table.row_in_block(b, int(self.offset[i, j]))}"
        if bool(self.mixed[i, j]):
            text += "~"
        if int(self.status[i, j]) != 0:
            text += "!"
        return text

    def words(self, i: int, j: int) -> str:
        """What cell (i, j)'s first element holds, in words (``Q head 2 row 1``)."""
        b = int(self.block[i, j])
        if b < 0:
            return SPECIAL_WORDS[b]
        row = self.table.row_in_block(b, int(self.offset[i, j]))
        return f"{self.table.labels[b]} row {row}"


def as_grid(ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """ids as a 2-D grid: 1-D -> one row; [E, R, C] -> E stacked bands of R rows."""
    if ids.dim() == 1:
        return ids.reshape(1, -1), 0
    if ids.dim() == 3:
        return ids.reshape(-1, ids.shape[-1]), int(ids.shape[0])
    return ids.reshape(ids.shape[0], -1), 0


def cell_size(n: int, max_cells: int) -> int:
    """Elements per cell along a side of ``n``: a power of two, so aligned blocks stay whole.

    >>> cell_size(16, 192), cell_size(6144, 192), cell_size(200, 192)
    (1, 32, 2)
    """
    need = math.ceil(n / max_cells)
    return 1 if need <= 1 else 1 << (need - 1).bit_length()


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
    rs, cs = cell or (cell_size(rows, max_cells), cell_size(cols, max_cells))
    rs, cs = max(1, min(rs, rows)), max(1, min(cs, cols))
    nr, nc = math.ceil(rows / rs), math.ceil(cols / cs)
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
