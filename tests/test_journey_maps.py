"""A block's journey answered from maps: its verdict against an element-wise reference on
ids materialized from the result, and its path as steps (rank, op, rows) on the
hand-worked tiny GQA case 1 -> 2: trainer tp0's qkv is [Q0 Q1 K0 V0 Q2 Q3 K1 V1] by rows
of 2 (Megatron's groups), the faithful sync leaves vLLM tp1 (rank 2) holding K0 V0 Q3 V1."""

from __future__ import annotations

import pytest
import torch

from syncviz import Parallel
from syncviz.diagram.pil_journey import LINE, WIDTH, journey_lines, journey_png
from syncviz.journey import PathStep, block_journey, maps_agree_on, where_in_map
from syncviz.oracle.index import Box
from syncviz.provenance import RegionMap
from syncviz.run.inprocess import run_sync
from syncviz.spec import ModelSpec

QKV = "model.model.layers.0.self_attn.qkv_proj.weight"
SPEC = ModelSpec("tiny", "llama-mcore", 1, 8, 4, 2, 8, 64, head_dim=2)


@pytest.fixture(scope="module")
def run():
    return run_sync(SPEC, Parallel(tp=1), Parallel(tp=2), layers=[0])


def _arrived(result, param, block) -> bool:
    """The reference verdict, element by element on ids materialized from the result: every
    vLLM element that holds or should hold an id of the block holds what the oracle says,
    and a rank holds the block exactly when it should."""
    ids = block.box.ids(param.global_shape).to(torch.int64)
    for t in param.dst:
        world = result.plan.world_rank("dst", t.pp, t.tp)
        got = result.local_ids(world, param.key).to(torch.int64)
        want = t.index.ids()
        held, should = torch.isin(got, ids), torch.isin(want, ids)
        if bool(held.any()) != bool(should.any()):
            return False
        if not torch.equal(got[held | should], want[held | should]):
            return False
    return True


def test_journey_verdicts_equal_the_element_wise_reference(run):
    """Every block of every layer-0 parameter: the journey's verdict, read from maps, is the
    element-wise reference's; right and wrong verdicts both occur."""
    verdicts = set()
    for param in run.plan.layout.params:
        for block in range(len(param.blocks)):
            want = _arrived(run, param, param.blocks[block])
            assert block_journey(run, param.key, block).ok == want, (param.key, block)
            verdicts.add(want)
    assert verdicts == {True, False}


def test_where_in_map_equals_where_on_ids():
    """Rows 1-3 of a [4, 4] tensor's ids: the rows holding ids of a box, from the map, equal
    those of the materialized ids; a box it lacks gives None."""
    m = RegionMap.affine((4, 4), 0, (4, 1)).slice(0, 1, 4)
    words, flags = where_in_map(m, Box((2, 1), (4, 3)), (4, 4))
    assert words == "rows 1-2" and flags.tolist() == [False, True, True]
    assert where_in_map(m, Box((0, 0), (1, 4)), (4, 4)) is None


def test_maps_agree_on_the_line_where_two_maps_meet():
    """got = ids 0..4, want = 4..0: they agree only at element 2 (id 2), so the block {2}
    is right and the block {1} (got[1] = 1, want[1] = 3) is wrong."""
    got = RegionMap.affine((5,), 0, (1,))
    want = RegionMap.affine((5,), 4, (-1,))
    assert maps_agree_on(got, want, Box((2,), (3,)), (5,))
    assert not maps_agree_on(got, want, Box((1,), (2,)), (5,))
    assert torch.equal(got.materialize()[2], want.materialize()[2])


def test_path_of_q_head_3_is_hand_worked(run):
    """Q head 3: trainer rank 0 rows 10-11; view [8, 2, 8] head-row 5, getitem 5:6 row 0,
    cat of 4 head-rows row 2, reshape to [8, 8] rows 4-5, cat after 8 rows rows 12-13;
    broadcast 0 -> 1 (stage 1), 1 -> 2 (stage 2); rank 2's view; held at rows 4-5."""
    param = run.plan.layout.param(QKV)
    block = [b.label for b in param.blocks].index("Q head 3")
    j = block_journey(run, QKV, block)
    assert j.path == [
        PathStep("trainer", 0, "holds", "rows 10-11"),
        PathStep("op", 0, "regroup: view", "rows 5 of [8, 2, 8]"),
        PathStep("op", 0, "regroup: getitem", "rows 0 of [1, 2, 8]"),
        PathStep("op", 0, "regroup: cat", "rows 2 of [4, 2, 8]"),
        PathStep("op", 0, "regroup: reshape", "rows 4-5 of [8, 8]"),
        PathStep("op", 0, "regroup: cat", "rows 12-13 of [16, 8]"),
        PathStep("collective", 0, "broadcast to vLLM tp 0 (rank 1)"),
        PathStep("collective", 1, "broadcast to vLLM tp 1 (rank 2)"),
        PathStep("op", 2, "stage2: view"),
        PathStep("vLLM", 2, "holds", "rows 4-5"),
    ]
    assert not j.ok and j.expected == ["vLLM tp 1 (rank 2): rows 2-3"]


def test_journey_picture_has_a_line_per_step(run):
    """The picture's lines: the verdict, one per path step, where the oracle expects it;
    the PNG is WIDTH wide and one LINE tall per line."""
    from PIL import Image

    param = run.plan.layout.param(QKV)
    j = block_journey(run, QKV, [b.label for b in param.blocks].index("Q head 3"))
    lines = journey_lines(j)
    assert lines[0] == ("WRONG", "journey of Q head 3")
    assert lines[1] == ("trainer", "trainer tp 0 (rank 0) | holds | rows 10-11")
    assert lines[-1] == ("expected", "vLLM tp 1 (rank 2): rows 2-3")
    assert len(lines) == 1 + len(j.path) + 1
    import io

    image = Image.open(io.BytesIO(journey_png(j)))
    assert image.size == (WIDTH, 8 + LINE * len(lines))


def test_explorer_shows_the_journey_picture():
    """Picking a block in the Explorer (real sizes: symbolic) shows its path picture under
    the words; another parameter clears it."""
    from syncviz.widgets.explorer import Explorer

    ex = Explorer(spec=SPEC, src=Parallel(tp=1), dst=Parallel(tp=2), scaled=False)
    ex.param.value = QKV
    assert ex.journey_image.value == b""
    ex.block.value = 1
    assert ex.journey_image.value[:4] == b"\x89PNG"
    ex.param.value = next(k for _, k in ex.param.options if k != QKV)
    assert ex.journey_image.value == b""
