"""Wrong runs of symbolic tensors read in words without their elements: the pieces a
map gives equal the pieces its materialized ids give, and so do the checker's words."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from syncviz.oracle.index import Box, boxes_map, ids_pieces, map_pieces
from syncviz.provenance import RegionMap, SymbolicTensor, row_major
from syncviz.run.values import FOREIGN_ID
from tests.test_provenance import _UNARY, OPS

BASE = 1000


def local_ids(values: torch.Tensor, base: int, numel: int) -> torch.Tensor:
    """Model-wide ids read back as ids local to one parameter (the checker's decoding)."""
    local = values - base
    inside = (local >= 0) & (local < numel)
    out = torch.where(inside, local, torch.full_like(values, FOREIGN_ID))
    return torch.where(values < 0, values, out).to(torch.int64)


def assert_same_pieces(m: RegionMap, global_shape) -> None:
    """map_pieces answers, with the pieces ids_pieces finds in the materialized ids."""
    found = map_pieces(m, global_shape, BASE)
    ids = local_ids(m.materialize(), BASE, math.prod(global_shape))
    want = ids_pieces(ids, global_shape)
    assert found is not None
    assert [p.key() for p in found] == [p.key() for p in want], (found, want)


def shard(shape):
    return SymbolicTensor.from_map(RegionMap.affine(shape, BASE, row_major(shape)))


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_op_gives_the_pieces_of_its_ids(name):
    """Each data-moving op's result: the same pieces as from its materialized ids."""
    out = OPS[name](shard((4, 6)))
    assert_same_pieces(out.region_map(), (4, 6))


@settings(max_examples=300, deadline=None)
@given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    steps=st.lists(st.tuples(st.integers(0, len(_UNARY) - 1), st.integers(0, 9)), max_size=8),
    cut=st.tuples(st.integers(0, 50), st.integers(1, 50)),
)
def test_random_chains_give_the_pieces_of_their_ids(shape, steps, cut):
    """Random op chains, then a run of rows as the checker takes it: same pieces."""
    sym = shard(tuple(shape))
    for which, d in steps:
        _, ok, op = _UNARY[which]
        if not ok(sym) or sym.numel() > 2000:
            continue
        sym = op(sym, d)
    m = sym.region_map()
    assert_same_pieces(m, tuple(shape))
    if m.shape and m.shape[0] > 1:
        a = cut[0] % m.shape[0]
        n = 1 + cut[1] % (m.shape[0] - a)
        assert_same_pieces(m.take(0, a, 1, n), tuple(shape))


def test_faithful_o_proj_at_real_sizes_reads_by_hand():
    """llama3-8b 2 -> 4 at real sizes: vLLM tp 0 gets trainer rows 0-2047 (heads 0-15)
    seen as [4096, 1024] (rows split for columns): only row 0 is right, worded by the
    columns (those of heads 0-7, 128 each) and what they hold."""
    from syncviz import Parallel, preset
    from syncviz.check import check
    from syncviz.run.inprocess import run_sync

    result = run_sync(
        preset("llama3-8b"), Parallel(tp=2), Parallel(tp=4), layers=[0], trace=False,
        provenance="symbolic",
    )  # fmt: skip
    o_proj = next(p for p in check(result).params if p.key.endswith("o_proj.weight"))
    first = o_proj.tensors[0]
    assert first.wrong == 4095 * 1024 and first.unwritten == 0
    assert first.problems == [
        "dst rank 2 (tp 0), columns 0-1023 (heads 0-7): hold heads 0-15 rows 0-2047,"
        " expected heads 0-7"
    ]


def test_words_read_from_elements_when_a_map_does_not_compress(monkeypatch):
    """A wrong run whose map gives no pieces is read element by element: same report."""
    import syncviz.check as check_module
    from syncviz import Parallel, preset
    from syncviz.run.inprocess import run_sync

    spec = preset("llama3-8b").scaled()
    result = run_sync(
        spec, Parallel(tp=2), Parallel(tp=4), layers=[0], trace=False, provenance="symbolic"
    )
    by_maps = check_module.check(result)
    assert not by_maps.ok
    monkeypatch.setattr(check_module, "map_pieces", lambda *a, **k: None)
    assert check_module.check(result).to_json() == by_maps.to_json()


def test_experts_held_apart_read_back_one_box_each():
    """Experts 1 and 5 of 8 (a round-robin rank), joined into one strided region too big
    to read element by element, read back as one box per expert."""
    shape = (8, 256, 256)
    pieces = [Box((e, 0, 0), (e + 1, 256, 256)) for e in (1, 5)]
    m = boxes_map(shape, (2, 256, 256), pieces)
    assert len(m.regions) == 1
    assert map_pieces(m, shape) == pieces
    assert map_pieces(m.shifted(BASE), shape, BASE) == pieces
