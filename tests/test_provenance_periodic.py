"""Flat maps whose runs repeat with a period (interleaved gate/up rows), kept as rows of it.

Every case is checked against ids made independently with torch (arange, reshape,
indexing), never against the map's own reading of itself.
"""

from __future__ import annotations

import pytest
import torch

from syncviz import Parallel, preset
from syncviz.oracle.dest import dest_maps
from syncviz.provenance import RegionMap
from syncviz.provenance.periodic import period_candidates, row_pieces, stack_rows
from syncviz.provenance.regions import ReshapedMap, _joined


def _runs_values(runs, total):
    """The flat values runs stand for, element by element (the reference)."""
    out = torch.full((total,), float("nan"), dtype=torch.float64)
    for a, b, offset, stride in runs:
        out[a:b] = offset + torch.arange(b - a, dtype=torch.float64) * stride
    return out


def _boxes_values(boxes, rows, width):
    out = torch.full((rows, width), float("nan"), dtype=torch.float64)
    for r0, r1, c0, c1, offset, step, stride in boxes:
        i = torch.arange(r1 - r0, dtype=torch.float64)[:, None]
        j = torch.arange(c1 - c0, dtype=torch.float64)[None, :]
        assert torch.isnan(out[r0:r1, c0:c1]).all()  # boxes never overlap
        out[r0:r1, c0:c1] = offset + i * step + j * stride
    return out


def _interleaved_rows(experts: int, inter: int, hidden: int, d: int, r: int) -> torch.Tensor:
    """Rank ``r`` of ``d``: each expert's rows ``g_c, u_c`` of a ``[E, 2I, H]`` tensor of
    ids, for its share ``c`` of each half (as vLLM holds gpt-oss's w13)."""
    ids = torch.arange(experts * 2 * inter * hidden, dtype=torch.float64)
    ids = ids.reshape(experts, 2 * inter, hidden)
    w = inter // d
    share = torch.arange(r * w, (r + 1) * w)
    rows = torch.stack([share, inter + share], dim=1).reshape(-1)  # g0 u0 g1 u1 ...
    return ids[:, rows, :]


def _row_maps(values: torch.Tensor) -> list[RegionMap]:
    """One flat map per row of ``values`` (each row one run of step 1), as the oracle's
    one-box-per-row pieces become maps."""
    rows = values.reshape(-1, values.shape[-1])
    return [RegionMap.affine((rows.shape[1],), float(row[0]), (1,)) for row in rows]


def test_row_pieces_cut_runs_at_row_ends():
    """A run across rows is cut into a partial first row, whole rows and a partial last
    row, and the pieces hold exactly the run's values (hand-worked: rows of 5)."""
    runs = [(0, 3, 7.0, 2), (3, 17, 100.0, 1), (17, 20, -1.0, 0)]
    pieces = list(row_pieces(runs, 5))
    assert pieces == [
        (0, 1, 0, 3, 7.0, 2),
        (0, 1, 3, 5, 100.0, 1),
        (1, 3, 0, 5, 102.0, 1),
        (3, 4, 0, 2, 112.0, 1),
        (3, 4, 2, 5, -1.0, 0),
    ]
    got = torch.full((4, 5), float("nan"), dtype=torch.float64)
    for r0, r1, c0, c1, offset, stride in pieces:
        for i in range(r0, r1):
            # a whole-rows piece moves 5 * stride a row, as the flat run does
            first = offset + (i - r0) * 5 * stride
            got[i, c0:c1] = first + torch.arange(c1 - c0, dtype=torch.float64) * stride
    assert torch.equal(got.reshape(-1), _runs_values(runs, 20))


def test_stack_rows_interleaved_halves_hand_worked():
    """Gate rows 0..3 (ids 0..) and up rows (ids 100..) of width 3, interleaved: rows of
    6 stack into two boxes, one per half, with the values torch's indexing gives."""
    ids = torch.cat([torch.arange(12.0).reshape(4, 3), 100 + torch.arange(12.0).reshape(4, 3)])
    inter = ids[torch.tensor([0, 4, 1, 5, 2, 6, 3, 7])]  # g0 u0 g1 u1 ...
    runs = [(3 * k, 3 * k + 3, float(row[0]), 1) for k, row in enumerate(inter)]
    assert period_candidates(runs, 24, 8) == [3, 6, 12]  # 9, 15, 18, 21 do not divide 24
    assert stack_rows(runs, 3, 2) is None  # rows of 3 alternate gate/up: nothing stacks
    boxes = stack_rows(runs, 6, 2)
    assert boxes == [(0, 4, 0, 3, 0.0, 3, 1), (0, 4, 3, 6, 100.0, 3, 1)]
    assert torch.equal(_boxes_values(boxes, 4, 6), inter.reshape(4, 6))


@pytest.mark.parametrize(
    ("experts", "inter", "hidden", "d", "r"),
    [(4, 8, 5, 2, 1), (3, 6, 4, 1, 0), (5, 12, 1, 3, 2), (2, 64, 7, 4, 3)],
)
def test_interleaved_expert_rows_fold_exactly(experts, inter, hidden, d, r):
    """An interleaved expert shard joined from one flat map per row folds into rows of
    one gate/up pair: at most two regions per run of experts, and the ids torch's indexing
    of a ``[E, 2I, H]`` arange gives, flat and viewed back to the shard's shape."""
    want = _interleaved_rows(experts, inter, hidden, d, r)
    flat = RegionMap.cat(_row_maps(want), 0)
    n_rows = want.shape[0] * want.shape[1]
    if n_rows < 64:  # too few regions to be worth a fold: the plain map, still exact
        assert not isinstance(flat, ReshapedMap)
    else:
        assert isinstance(flat, ReshapedMap)
        assert flat.size_hint <= 2 * experts
    assert torch.equal(flat.materialize(), want.reshape(-1))
    shaped = flat.reshape(tuple(want.shape))
    assert torch.equal(shaped.materialize(), want)
    assert torch.equal(RegionMap(want.shape, shaped.regions).materialize(), want)


def test_fold_cuts_runs_that_cross_an_expert_boundary():
    """Whole experts held in a row (destination EP): an expert's last up row and the next
    expert's first gate row are one flat run, cut at the row end; ids still exact."""
    experts, inter, hidden = 6, 16, 3
    want = _interleaved_rows(experts, inter, hidden, 1, 0)
    runs = sorted(
        (r.start[0], r.stop[0], r.offset, r.strides[0]) for r in _joined(_row_maps(want), 0).regions
    )
    assert len(runs) < 2 * experts * inter  # some runs did cross an expert boundary
    flat = RegionMap.cat(_row_maps(want), 0)
    assert isinstance(flat, ReshapedMap) and flat.size_hint <= 2 * experts
    assert torch.equal(flat.materialize(), want.reshape(-1))


def test_no_period_no_fold():
    """Rows in an order with no period (a fixed shuffle) stay a plain map of their runs,
    with the same ids."""
    ids = torch.arange(96 * 4, dtype=torch.float64).reshape(96, 4)
    order = torch.randperm(96, generator=torch.Generator().manual_seed(7))
    want = ids[order]
    flat = RegionMap.cat(_row_maps(want), 0)
    assert not isinstance(flat, ReshapedMap)
    assert torch.equal(flat.materialize(), want.reshape(-1))


def test_folded_map_reads_as_the_plain_one():
    """A folded map's eager regions are those of the same maps joined without folding:
    the fold changes how the map is kept, never what it says."""
    want = _interleaved_rows(4, 32, 6, 2, 0)
    parts = _row_maps(want)
    assert RegionMap.cat(parts, 0).regions == _joined(parts, 0).regions


@pytest.mark.parametrize("dst", [Parallel(tp=4), Parallel(tp=4, ep=4)])
def test_gpt_oss_interleaved_shard_is_a_few_regions(dst):
    """The oracle's w13 of gpt-oss-20b at real size (32 experts, I = H = 2880), interleaved
    gate/up rows on vLLM tp 4 (dst ep 1 and 4), is a handful of regions, not one or two
    per row (720 and 2,880 before the fold)."""
    spec = preset("gpt-oss-20b")
    for kind in ("experts_w13", "experts_w13_bias"):
        index = dest_maps(kind, spec, 4, dst)[1]
        m = index
        assert m.size_hint <= 64, (kind, m.size_hint)


def test_gpt_oss_scaled_shard_ids_match_the_oracle():
    """At scaled sizes the folded map of every rank's w13 holds the oracle's ids exactly
    (its boxes read by torch, element by element)."""
    spec = preset("gpt-oss-20b").scaled()
    for dst in (Parallel(tp=4), Parallel(tp=4, ep=4), Parallel(tp=2, ep=2)):
        for index in dest_maps("experts_w13", spec, dst.tp, dst):
            m = index
            assert torch.equal(m.materialize(), index.ids().to(torch.float64))


def test_random_values_never_stack():
    """Runs of real values (not ids: non-integral, infinite or NaN offsets, stride 0) are
    never stacked: rows of 4 hold two runs each and every run stays a box of its own."""
    values = [0.5, float("inf"), float("nan"), 1.25] * 30
    runs = [(2 * k, 2 * k + 2, v, 0) for k, v in enumerate(values)]
    boxes = stack_rows(runs, 4, 1000)
    assert [(b[0], b[1], b[2], b[3], b[5]) for b in boxes] == [
        (k // 2, k // 2 + 1, 2 * (k % 2), 2 * (k % 2) + 2, 0) for k in range(len(runs))
    ]
    assert stack_rows(runs, 4, 100) is None  # 120 boxes: more than allowed
