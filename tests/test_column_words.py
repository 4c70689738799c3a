"""Row-parallel findings worded by column blocks and heads, hand-worked on the tiny llama
1 -> 2 case: o_proj is [8, 8] with 4 heads of 2 columns, vLLM tp 0 should hold columns 0-3
(heads 0-1) and tp 1 columns 4-7 (heads 2-3); the same words in ``check``, ``render`` and
the layout diagram the Explorer draws."""

from __future__ import annotations

import pytest

from syncviz import Parallel
from syncviz.check import check, column_regions, column_shard, wrong_columns
from syncviz.cli.render import _words as render_words
from syncviz.diagram import layout_diagram
from syncviz.provenance import RegionMap, SymbolicTensor
from syncviz.run.inprocess import run_sync
from syncviz.spec import ModelSpec

SPEC = ModelSpec("tiny", "llama-mcore", 1, 8, 4, 2, 8, 64, head_dim=2)
O_PROJ = "model.model.layers.0.self_attn.o_proj.weight"
QKV = "model.model.layers.0.self_attn.qkv_proj.weight"


@pytest.fixture()
def swapped():
    """The corrected sync 1 -> 2, then each vLLM rank's o_proj replaced by the other's: tp 0
    holds the columns of heads 2-3, tp 1 those of heads 0-1."""
    result = run_sync(SPEC, Parallel(tp=1), Parallel(tp=2), layers=[0], synchronizer="corrected")
    plan, param = result.plan, result.plan.layout.param(O_PROJ)
    base = plan.id_base[O_PROJ]
    maps = [t.index.shifted(base) for t in param.dst]
    for t, other in zip(param.dst, reversed(maps), strict=True):
        world = plan.world_rank("dst", t.pp, t.tp)
        result.dst_tensors[world][result.name_on(param, world)] = SymbolicTensor.from_map(other)
    return result


def test_row_parallel_shards_are_their_columns():
    """o_proj's tp 1 shard is global columns 4-7 (every row); qkv's shards split rows: None."""
    result = run_sync(SPEC, Parallel(tp=1), Parallel(tp=2), layers=[0], trace=False)
    o_proj, qkv = result.plan.layout.param(O_PROJ), result.plan.layout.param(QKV)
    assert column_shard(o_proj, o_proj.dst[1].index) == (4, 8)
    assert column_shard(qkv, qkv.dst[1].index) is None


def test_wrong_columns_of_one_head_replaced():
    """Columns 0-3 of ids of an [8, 8] tensor with its columns 2-3 (head 1) taken from
    columns 4-5 (head 2): only columns 2-3 are wrong; a never-written column counts only
    when asked."""
    ids = RegionMap.affine((8, 8), 0, (8, 1))
    want = ids.slice(1, 0, 4)
    got = RegionMap.cat([ids.slice(1, 0, 2), ids.slice(1, 4, 6)], 1)
    assert wrong_columns(got, want) == [(2, 4)]
    unwritten = RegionMap.cat([ids.slice(1, 0, 3), RegionMap.constant((8, 1), -2)], 1)
    assert wrong_columns(unwritten, want) == []
    assert wrong_columns(unwritten, want, unwritten=True) == [(3, 4)]


def test_swapped_heads_read_by_columns_in_check_render_and_the_diagram(swapped):
    """Heads swapped between the two ranks: every column of each rank is wrong, worded by
    its columns, the heads they should carry, the heads they hold; ``check`` (whose lines
    the Explorer shows), ``render`` and the diagram's regions say the same."""
    words = [
        "columns 0-3 (heads 0-1): hold heads 2-3, expected heads 0-1",
        "columns 0-3 (heads 2-3): hold heads 0-1, expected heads 2-3",
    ]
    lines = check(swapped).text().splitlines()
    at = lines.index(f"WRONG {O_PROJ}")
    assert lines[at + 1 : at + 3] == [
        f"  vLLM tp 0 (rank 1): {words[0]}",
        f"  vLLM tp 1 (rank 2): {words[1]}",
    ]
    d = layout_diagram(swapped, O_PROJ)
    assert [r.text for p in d.dst for r in p.regions] == words
    assert render_words(d) == [
        f"WRONG vLLM tp 0 (rank 1): {words[0]}",
        f"WRONG vLLM tp 1 (rank 2): {words[1]}",
    ]


def test_one_head_replaced_names_its_two_columns(swapped):
    """tp 0 holding heads 0 and 2 (head 2 where head 1 belongs): columns 2-3 (head 1) are
    the one wrong run, holding head 2; columns 0-1 are right and unnamed."""
    plan, param = swapped.plan, swapped.plan.layout.param(O_PROJ)
    ids = RegionMap.affine((8, 8), plan.id_base[O_PROJ], (8, 1))
    got = RegionMap.cat([ids.slice(1, 0, 2), ids.slice(1, 4, 6)], 1)
    found = column_regions(plan, param, param.dst[0].index, got)
    assert [r.text for r in found] == ["columns 2-3 (head 1): hold head 2, expected head 1"]


def _wrong_columns_reference(got: RegionMap, want: RegionMap) -> list[tuple[int, int]]:
    """Runs of columns where any written element differs, read element by element."""
    a, b = got.materialize(), want.materialize()
    flags = [*((a != b) & (a != -2)).any(0).tolist(), False]
    runs, start = [], None
    for j, flag in enumerate(flags):
        if flag and start is None:
            start = j
        elif not flag and start is not None:
            runs.append((start, j))
            start = None
    return runs


def test_wrong_columns_equal_columns_read_element_by_element():
    """Lazy reshapes (a flat half seen as [8, 4], as the faithful port hands o_proj on), maps of
    many regions against one and against two: the wrong columns equal the element-wise ones."""
    ids = RegionMap.affine((8, 8), 0, (8, 1))
    two = RegionMap.cat([ids.slice(1, 0, 2), ids.slice(1, 6, 8)], 1)  # two regions, apart
    cases = [
        (ids.slice(0, 4, 8).reshape((32,)).reshape((8, 4)), ids.slice(1, 4, 8)),
        (ids.slice(0, 0, 4).reshape((8, 4)), ids.slice(1, 0, 4)),
        (ids.slice(1, 4, 8), ids.slice(1, 0, 4)),
        (RegionMap.cat([ids.slice(1, 0, 2), ids.slice(1, 3, 5)], 1), two),
        (RegionMap.cat([ids.slice(1, 0, 3), RegionMap.constant((8, 1), -2)], 1), two),
        (ids.permute((1, 0)).slice(1, 0, 4), two),
    ]
    lazy = RegionMap.affine((64, 8), 0, (16, 1)).reshape((128, 4))  # kept lazy: 1 segment
    assert type(lazy).__name__ == "ReshapedMap"
    cases += [(lazy, RegionMap.affine((128, 4), 0, (8, 1))), (lazy, lazy.slice(0, 0, 128))]
    for got, want in cases:
        assert wrong_columns(got, want) == _wrong_columns_reference(got, want), (got, want)
