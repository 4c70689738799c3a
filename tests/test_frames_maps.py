"""Step frames read from maps: id sets against element-wise references, local ids against
the materialized reading, and real sizes with no tensor's elements materialized."""

from __future__ import annotations

import pytest
import torch

from syncviz import Parallel, preset
from syncviz.diagram.frames import frame
from syncviz.diagram.model import layout_diagram
from syncviz.idset import IdSet, cells_meeting
from syncviz.journey import local_map, param_steps, step_count
from syncviz.provenance import RegionMap, SymbolicTensor
from syncviz.run.inprocess import run_sync
from syncviz.run.values import FOREIGN_ID
from syncviz.spec import ModelSpec

QKV = "model.model.layers.0.self_attn.qkv_proj.weight"
TINY = ModelSpec("tiny", "llama-mcore", 1, 8, 4, 2, 8, 64, head_dim=2)


@pytest.mark.slow
def test_id_set_of_transposed_and_strided_maps():
    """Runs of a transposed, a strided and a padded map, against the ids themselves."""
    w = SymbolicTensor.from_map(RegionMap.affine((6, 8), 10, (8, 1)))
    pad = SymbolicTensor.from_map(RegionMap.constant((2, 3), -1.0))
    for t in (w.t()[2:5], w[::2, 1::3], torch.cat([w[:2, :3], pad]), w[:, 5]):
        ids = t.materialize().to(torch.int64)
        got = IdSet.of([t.region_map()])
        want = IdSet.from_ids(ids)
        assert torch.equal(got.lo, want.lo) and torch.equal(got.hi, want.hi)
        assert int((got.hi - got.lo).sum()) == ids[ids >= 0].unique().numel()  # ids held
    s = IdSet.from_ids(torch.tensor([1, 2, 3, 7, 8, 20]))
    assert s.meets(torch.tensor([0, 4, 8, 9]), torch.tensor([1, 7, 9, 20])).tolist() == [
        False,
        False,
        True,
        False,
    ]
    assert s.minus(IdSet.from_ids(torch.tensor([2, 8]))).lo.tolist() == [1, 3, 7, 20]
    assert s.covers(IdSet.from_ids(torch.tensor([3, 7]))) and not s.covers(
        IdSet.from_ids(torch.tensor([4]))
    )


SPARSE = torch.tensor([0, 5, 17, 40, 41, 42, 99, 130, 131, 175, 191])
RANGES = torch.cat([torch.arange(a, b) for a, b in [(16, 48), (64, 79), (100, 101), (150, 192)]])


@pytest.mark.parametrize("wanted", [SPARSE, RANGES], ids=["sparse", "ranges"])
@pytest.mark.parametrize("cell", [(1, 1), (2, 3), (4, 4), (3, 8)])
def test_cells_meeting_equals_the_element_wise_marks(cell, wanted):
    """Cells holding any id of a set (single ids, or ranges that hold whole lines), read
    from maps (row runs, column runs, steps of 2 both ways, constants), equal the
    element-wise isin folded into cells."""
    base = SymbolicTensor.from_map(RegionMap.affine((12, 16), 0, (16, 1)))
    pad = SymbolicTensor.from_map(RegionMap.constant((4, 16), -1.0))
    maps = [
        base,
        base.t()[:12],
        torch.cat([base[::2, ::2], base[1::2, 1::2]], dim=1),
        torch.cat([base[4:8], pad, base[:4]]),
        base[:, 3:4].expand(12, 16),
        base.t().flip(0)[2:14],
        torch.cat([base[1:3], base[10:12], base[5:7]], dim=1),  # boxes inside one range
    ]
    ids = IdSet.from_ids(wanted)
    for t in maps:
        values = t.materialize().to(torch.int64)
        want = _cells_any(torch.isin(values, wanted), cell)
        assert torch.equal(cells_meeting(t.region_map(), cell, ids), want)


def _cells_any(mask: torch.Tensor, cell: tuple[int, int]) -> torch.Tensor:
    """The reference: per cell of ``cell`` elements of a 2-D mask, is any element true."""
    rs, cs = cell
    rows, cols = mask.shape
    return torch.tensor(
        [
            [bool(mask[r : r + rs, c : c + cs].any()) for c in range(0, cols, cs)]
            for r in range(0, rows, rs)
        ]
    )


def test_local_map_reads_ids_as_the_materialized_path():
    """Model-wide ids partly of another parameter, padding and unwritten: local ids as
    to_local_ids gives them (foreign -3)."""
    m = RegionMap.cat(
        [
            RegionMap.affine((3, 5), 95, (5, 1)),
            RegionMap.constant((1, 5), -1.0),
            RegionMap.constant((1, 5), -2.0),
        ],
        0,
    )
    got = local_map(m, 100, 7).materialize()
    values = m.materialize()
    local = values - 100
    want = torch.where((local >= 0) & (local < 7), local, torch.full_like(values, FOREIGN_ID))
    assert torch.equal(got, torch.where(values < 0, values, want))


def test_real_sizes_never_materialize_a_tensor(monkeypatch):
    """llama3-8b 2 -> 4 at real sizes: qkv's 26 steps and all their frames read no tensor
    element by element; step 1 reads all of trainer tp0 ([3072, 4096]); the last frame's
    vLLM tensors are the ones the sync left."""
    result = run_sync(
        preset("llama3-8b"), Parallel(tp=2), Parallel(tp=4), layers=[0], provenance="symbolic"
    )
    d = layout_diagram(result, QKV)
    big = 1 << 20

    def refuse_regions(self):
        assert self.numel <= big, f"materialized {self.numel} ids"
        return original(self)

    def refuse_index(self):
        raise AssertionError("an oracle index materialized")

    original = RegionMap.materialize
    monkeypatch.setattr(RegionMap, "materialize", refuse_regions)
    monkeypatch.setattr(RegionMap, "ids", refuse_index)
    steps = param_steps(result, QKV)
    assert len(steps) == step_count(result, QKV) == 26
    assert all(s.blocks for s in steps)
    d = layout_diagram(result, QKV, steps=steps)
    first = frame(d, 1)
    assert first.region_lines()[0] == "reads trainer tp 0 (rank 0) rows 0-3071"
    for k in range(2, len(steps) + 1):
        frame(d, k)
    last = frame(d, len(steps))
    for filled, final in zip(last.filled, d.dst, strict=True):
        assert torch.equal(filled.actual.block, final.actual.block)
