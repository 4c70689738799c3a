"""Rasters from compact maps against rasters of the materialized ids: every field equal, on
hand-made maps (flat chunks, transposes, reversals, strided rows, padding, other parameters'
ids) and on every panel of whole runs' diagrams; real sizes drawn without materializing."""

from __future__ import annotations

import math
import random
import sys

import pytest
import torch

from syncviz import Parallel, preset
from syncviz.check import element_status
from syncviz.diagram import layout_diagram
from syncviz.diagram.hover import cell_words, locate
from syncviz.diagram.raster import BlockTable, map_raster, raster, raster_text
from syncviz.oracle import model_layout
from syncviz.provenance import RegionMap, row_major
from syncviz.run.inprocess import run_sync
from syncviz.spec import ModelSpec

TINY = ModelSpec("tiny", "llama-mcore", 2, 8, 4, 2, 8, 64, head_dim=2)
CELLS = [(1, 1), (2, 2), (1, 4), (4, 1), (3, 5), (8, 8), (16, 2)]
FIELDS = ("block", "offset", "inner", "mixed", "status")


def assert_same(a, b) -> None:
    """Every field of two rasters is equal."""
    assert (a.shape, a.rows, a.cols, a.cell, a.bands) == (b.shape, b.rows, b.cols, b.cell, b.bands)
    for f in FIELDS:
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert raster_text(a, inner=True) == raster_text(b, inner=True)


def _local(values: torch.Tensor, base: int, numel: int) -> torch.Tensor:
    """Model-wide ids read back as local ids, written out independently of the code."""
    out = values.clone()
    inside = (values >= base) & (values < base + numel)
    out[inside] -= base
    out[(values >= 0) & ~inside] = -3
    return out


def _param(kind: str, d: int = 2):
    layout = model_layout(TINY, Parallel(tp=1), Parallel(tp=d), layers=[0])
    return next(p for p in layout if p.kind == kind)


def _maps(global_shape, base):
    """Hand-made maps of ids over a [R, C] parameter: flat chunks, transposes, reversals,
    strided rows, padding and foreign ids, unwritten holes."""
    rows, cols = global_shape
    whole = RegionMap.affine(global_shape, base, (cols, 1))
    flat = whole.reshape((rows * cols,))
    half = rows * cols // 2
    out = {
        "whole": whole,
        "flat chunk": flat.take(0, half, 1, half).reshape((rows, cols // 2)),
        "transposed": whole.permute((1, 0)),
        "reversed rows": whole.take(0, rows - 1, -1, rows),
        "every other row": RegionMap.cat(
            [whole.take(0, 0, 2, rows // 2), whole.take(0, 1, 2, rows // 2)], 0
        ),
        "padding and foreign": RegionMap.cat(
            [
                whole.slice(0, 0, rows // 2),
                RegionMap.constant((1, cols), -1.0),
                RegionMap.affine((rows // 2 - 1, cols), base + rows * cols + 5, (cols, 1)),
            ],
            0,
        ),
        "unwritten around": RegionMap.cat(
            [
                RegionMap.constant((1, cols), -2.0),
                RegionMap.cat(
                    [
                        RegionMap.constant((rows - 2, 1), -2.0),
                        whole.slice(0, 2, rows).slice(1, 0, cols - 3),
                        RegionMap.constant((rows - 2, 2), -2.0),
                    ],
                    1,
                ),
                RegionMap.constant((1, cols), -2.0),
            ],
            0,
        ),
        "straddles parameters": RegionMap.affine(global_shape, base + cols * 3, (cols, 1)),
        "strided columns": whole.take(1, 0, 2, cols // 2),
    }
    return out


@pytest.mark.parametrize("kind", ["qkv", "o_proj", "gate_up"])
def test_hand_made_maps_equal_materialized(kind):
    """Each hand-made map (as a held tensor, against the oracle's tp0) draws the same raster,
    status included, as its materialized ids, at every cell size."""
    param = _param(kind)
    table = BlockTable(param)
    base = 1000
    numel = param.global_shape[0] * param.global_shape[1]
    for m in _maps(tuple(param.global_shape), base).values():
        got = _local(m.materialize(), base, numel)
        for cell in CELLS:
            plain = raster(got, table, cell=cell)
            assert_same(plain, map_raster(m, table, base=base, cell=cell))
        # Against the oracle's tp0 where the shapes agree, and against the parameter's ids
        # in order (a transposed square then agrees on its diagonal only).
        wants = [t.index for t in param.dst[:1] if t.index.shape == m.shape]
        wants.append(RegionMap.affine(m.shape, 0, row_major(m.shape)))
        for want in wants:
            status = element_status(got, want.materialize().to(torch.int64))
            for cell in CELLS:
                expected = raster(got, table, status, cell=cell)
                assert_same(expected, map_raster(m, table, want, base=base, cell=cell))


def test_fragmented_map_materialized_when_small_refused_when_big(monkeypatch):
    """Past MAX_PIECES a panel is materialized (same raster); past MATERIALIZE_LIMIT too,
    it is refused with the fix."""
    raster_module = sys.modules["syncviz.diagram.raster"]  # the package exports raster()
    from syncviz.errors import SyncvizError

    param = _param("o_proj")
    table = BlockTable(param)
    m = _maps(tuple(param.global_shape), 0)["flat chunk"]
    monkeypatch.setattr(raster_module, "MAX_PIECES", 2)
    assert_same(raster(m.materialize(), table, cell=(2, 2)), map_raster(m, table, cell=(2, 2)))
    monkeypatch.setattr(raster_module, "MATERIALIZE_LIMIT", 8)
    with pytest.raises(SyncvizError, match="too fragmented") as info:
        map_raster(m, table, cell=(2, 2))
    assert "--scaled" in info.value.fix


def test_random_region_maps_equal_materialized():
    """Random cuts, permutes, flips and concatenations of a parameter's ids: same rasters."""
    param = _param("qkv", 2)
    table = BlockTable(param)
    rows, cols = param.global_shape
    rng = random.Random(0)
    whole = RegionMap.affine((rows, cols), 0, (cols, 1))
    for _ in range(40):
        parts = []
        for _ in range(rng.randint(1, 4)):
            a = rng.randrange(rows)
            b = rng.randrange(a + 1, rows + 1)
            piece = whole.slice(0, a, b)
            if rng.random() < 0.3:
                piece = piece.take(1, cols - 1, -1, cols)
            parts.append(piece)
        m = RegionMap.cat(parts, 0)
        if rng.random() < 0.5:  # view as another width, as a flat chunk would
            n = m.numel
            width = rng.choice([w for w in (2, 4, 8, 16) if n % w == 0])
            m = m.reshape((n // width, width))
        got = m.materialize()
        for cell in ((1, 1), (2, 3), (4, 4), (16, 1)):
            assert_same(raster(got, table, cell=cell), map_raster(m, table, cell=cell))


RUNS = [
    (TINY, Parallel(tp=1), Parallel(tp=2), [0]),
    (TINY, Parallel(tp=2), Parallel(tp=4), [0]),
    (preset("llama3-8b").scaled(num_layers=2), Parallel(tp=1), Parallel(tp=2), None),
    (preset("qwen1.5-moe-a2.7b").scaled(), Parallel(tp=2), Parallel(tp=4), [0]),
    (preset("qwen2-57b-a14b").scaled(), Parallel(tp=2, ep=2), Parallel(tp=4), [0]),
    (preset("mixtral-8x7b").scaled(num_layers=1), Parallel(tp=2), Parallel(tp=4), [0]),
]


def _user_sync():
    from tests.test_symbolic_flow import ReversedRowsSync

    return ReversedRowsSync


@pytest.mark.parametrize(("spec", "src", "dst", "layers"), RUNS)
@pytest.mark.parametrize("synchronizer", ["chatlearn", "corrected", "user"])
def test_diagram_panels_equal_rasters_of_materialized_ids(spec, src, dst, layers, synchronizer):
    """Every panel of every parameter's diagram (drawn from maps) equals the element-wise
    raster of the ids materialized from the result, with the checker's verdict per element
    (the faithful, the corrected and a user's synchronizer that reverses rows)."""
    if synchronizer == "user":
        synchronizer = _user_sync()
    result = run_sync(spec, src, dst, synchronizer=synchronizer, layers=layers)
    for p in result.plan.layout:
        d = layout_diagram(result, p.key)
        table = d.table
        for panel, shard in zip(d.src, p.src, strict=True):
            assert_same(panel.actual, raster(shard.index.ids(), table, cell=panel.actual.cell))
        for panel, t in zip(d.dst, p.dst, strict=True):
            got, want = result.local_ids(panel.rank, p.key), t.index.ids()
            status = element_status(got, want)
            cell = panel.actual.cell
            assert_same(panel.actual, raster(got, table, status, cell=cell))
            assert_same(panel.expected, raster(want, table, cell=cell))


def test_locate_reads_the_oracle_pieces():
    """locate finds the first local (row, col) holding a global id, as a search of the ids."""
    for kind in ("qkv", "o_proj", "gate_up"):
        param = _param(kind, 2)
        for shard in param.dst:
            ids = shard.index.ids()
            grid = ids.reshape(-1, ids.shape[-1])
            for element in range(0, param.global_shape[0] * param.global_shape[1], 7):
                hits = torch.nonzero(grid == element)
                want = tuple(int(x) for x in hits[0]) if hits.numel() else None
                assert locate(shard.index, param.global_shape, element) == want


def test_real_sizes_drawn_from_maps_only():
    """llama3-8b 1 -> 2 at real sizes: the o_proj diagram (the row-split bug) is drawn from
    maps, its wrong regions in the checker's words: every column of rank 1 (heads 0-15, 128
    columns each) holds a flat half of the trainer's o_proj, rows 0-2047 of every head."""
    result = run_sync(
        preset("llama3-8b"), Parallel(tp=1), Parallel(tp=2), layers=[0], provenance="symbolic"
    )
    d = layout_diagram(result, "model.model.layers.0.self_attn.o_proj.weight")
    assert d.global_shape == (4096, 4096) and d.axis == 1
    assert [r.span for r in d.dst[0].regions] == ["columns 0-2047 (heads 0-15)"]
    assert d.dst[0].regions[0].holds == "heads 0-31 rows 0-2047"
    assert d.dst[0].regions[0].expected == "heads 0-15"
    first = d.dst[0].actual
    assert first.cells == (128, 128) and bool(first.mixed.all())  # rows of two halves each
    assert int(first.status[0, 0]) == 1 and d.wrong_count == 2 * 128 * 128
    # Cell (5, 7) starts at local row 160 col 112: flat 160 * 2048 + 112 of the global
    # [4096, 4096], i.e. global row 80 col 112 (head 0), where global row 160 belongs.
    assert cell_words(result, d, "vLLM holds", d.dst[0].rank, 5, 7) == (
        "vLLM tp 0 (rank 1) row 160 col 112 holds head 0 row 80 col 112, expected head 0"
        " row 160 col 112: WRONG; came from trainer tp 0 (rank 0) row 80 col 112 via the"
        " stage-1 broadcast (its steps are not replayed at this size)"
    )


@pytest.mark.parametrize("kind", ["qkv", "o_proj", "gate_up"])
def test_one_block_pieces_partition_a_box_by_the_blocks_of_its_ids(kind):
    """Boxes that run one id at a time (up, down, along rows or columns, repeated along the
    other axis) and boxes that step further: the pieces cover every element once, and each
    element's block is the block of its id."""
    from syncviz.diagram.raster import Box2, one_block_pieces

    table = BlockTable(_param(kind))
    numel = math.prod(table.shape)
    boxes = [
        Box2(0, 1, 0, numel, 0, 0, 1),  # the whole parameter as one flat run
        Box2(0, 1, 0, numel - 7, 5, 0, 1),  # a flat run that starts mid-row
        Box2(0, 1, 0, numel - 3, numel - 1, 0, -1),  # the same, descending
        Box2(0, numel - 9, 0, 1, 9, 1, 0),  # a flat run down a column
        Box2(0, 3, 0, numel // 2, 2, 0, 1),  # one run repeated on three rows
        Box2(0, 4, 0, 6, 3, 7, 2),  # steps of 7 and 2
    ]
    for box in boxes:
        pieces = one_block_pieces(box, table, 1 << 18)
        ids = (
            torch.arange(box.r1 - box.r0)[:, None] * box.sr + torch.arange(box.c1 - box.c0) * box.sc
        )
        want = table.block_of(box.v + ids)
        got = torch.full(want.shape, -9, dtype=torch.int64)
        seen = torch.zeros(want.shape, dtype=torch.int64)
        for r0, pr, nr, c0, pc, nc, block in pieces.tolist():
            rows = torch.arange(nr) * pr + r0 - box.r0
            cols = torch.arange(nc) * pc + c0 - box.c0
            got[rows[:, None], cols[None, :]] = block
            seen[rows[:, None], cols[None, :]] += 1
        assert bool((seen == 1).all()), box
        assert torch.equal(got, want), box


def test_painting_by_value_cover_equals_painting_cell_by_cell():
    """Random big rectangles (values -3..4) on a 6 x 7 grid: per-cell min and max from
    each value's cover (difference arrays) equal those painted cell by cell."""
    from syncviz.diagram.raster import _BIG, _SMALL, _paint_min_max, _paint_rects

    rng = random.Random(7)
    for _ in range(20):
        rows = []
        for _ in range(150):
            i0, j0 = rng.randrange(6), rng.randrange(7)
            rows.append(
                (i0, rng.randrange(i0 + 1, 7), j0, rng.randrange(j0 + 1, 8), rng.randint(-3, 4))
            )
        rects = torch.tensor(rows, dtype=torch.int64)
        area = int(((rects[:, 1] - rects[:, 0]) * (rects[:, 3] - rects[:, 2])).sum())
        values = int(rects[:, 4].max() - rects[:, 4].min()) + 1
        assert area > values * 7 * 8  # the cover path is the one taken
        got = [torch.full((6, 7), _BIG), torch.full((6, 7), _SMALL)]
        want = [torch.full((6, 7), _BIG), torch.full((6, 7), _SMALL)]
        _paint_min_max(*got, rects)
        _paint_rects(*want, rects)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_status_of_boxes_equals_the_verdicts_of_their_elements():
    """Random held boxes (markers -2/-3 among them) against one and three expected boxes
    on a 12 x 10 grid: each cell's status is the worst checker verdict of its elements."""
    from syncviz.diagram.raster import Box2, _status

    def ids(boxes) -> torch.Tensor:  # every element's id, read box by box
        grid = torch.zeros((12, 10), dtype=torch.int64)
        for b in boxes:
            for r in range(b.r0, b.r1):
                for c in range(b.c0, b.c1):
                    grid[r, c] = b.v + b.sr * (r - b.r0) + b.sc * (c - b.c0)
        return grid

    rng = random.Random(11)
    for cut in (12, 5):
        expected = [Box2(0, 12, 0, 10, 0, 10, 1)]
        if cut < 12:
            expected = [Box2(0, cut, 0, 10, 0, 10, 1), Box2(cut, 12, 0, 4, 200, 4, 1)]
            expected.append(Box2(cut, 12, 4, 10, 300, 1, 7))
        for _ in range(10):
            held, r = [], 0
            while r < 12:
                h = rng.randint(1, 3)
                v = rng.choice([-2, -3, rng.randrange(0, 120), 10 * r])
                sr, sc = (0, 0) if v < 0 else rng.choice([(10, 1), (1, 10), (0, 1), (10, 0)])
                held.append(Box2(r, min(12, r + h), 0, 10, v, sr, sc))
                r += h
            verdicts = element_status(ids(held), ids(expected))
            for rs, cs in ((1, 1), (2, 3), (5, 4)):
                nr, nc = math.ceil(12 / rs), math.ceil(10 / cs)
                want = torch.zeros((nr, nc), dtype=torch.int64)
                for i in range(nr):
                    for j in range(nc):
                        want[i, j] = verdicts[i * rs : (i + 1) * rs, j * cs : (j + 1) * cs].max()
                assert torch.equal(_status(held, expected, rs, cs, nr, nc), want), (held, rs, cs)
