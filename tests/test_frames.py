"""Step frames on the tiny spec 1 -> 2 (qkv, o_proj): what each step read and wrote on the
big panels, and the destination as written by steps 1..k, against hand-worked answers.

Trainer qkv [16, 8] (Megatron, 2 groups): rows 0-3 Q heads 0-1, 4-5 K0, 6-7 V0, 8-11
Q2-3, 12-13 K1, 14-15 V1. World rank 0 is the trainer, ranks 1 and 2 the vLLM tp0/tp1.
The faithful port's regroup puts Q0, Q1, Q2, K1 on tp0 and K0, V0, Q3, V1 on tp1.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from syncviz import Parallel
from syncviz.diagram.frame_cells import cell_ids
from syncviz.diagram.frames import WROTE, frame
from syncviz.diagram.model import layout_diagram
from syncviz.diagram.palette import hex_rgb
from syncviz.diagram.pil import frame_png
from syncviz.diagram.raster import raster_text
from syncviz.diagram.text import layout_text
from syncviz.run.inprocess import run_sync
from syncviz.spec import ModelSpec

QKV = "model.model.layers.0.self_attn.qkv_proj.weight"
O_PROJ = "model.model.layers.0.self_attn.o_proj.weight"
T0, V1, V2 = "trainer tp 0 (rank 0)", "vLLM tp 0 (rank 1)", "vLLM tp 1 (rank 2)"


@pytest.fixture(scope="module")
def result():
    spec = ModelSpec("tiny", "llama-mcore", 1, 8, 4, 2, 8, 64, head_dim=2)
    return run_sync(spec, Parallel(tp=1), Parallel(tp=2), layers=[0])


@pytest.fixture(scope="module")
def qkv(result):
    return layout_diagram(result, QKV)


def test_getitem_reads_the_rows_it_takes_and_marks_where_they_land(qkv):
    """Step 3 takes view index 4 (trainer rows 8-9, Q head 2), which lands at tp0 rows 4-5."""
    f = frame(qkv, 3)
    assert f.step.blocks == ("Q head 2",)
    assert f.region_lines() == [f"reads {T0} rows 8-9", f"writes {V1} rows 4-5"]
    assert f.read[0].nonzero()[:, 0].unique().tolist() == [8, 9]
    assert f.wrote[1] is None and f.wrote[0].nonzero()[:, 0].unique().tolist() == [4, 5]


def test_cat_reads_every_piece(qkv):
    """Step 10 cats K0+V0 (rows 4-7), Q3 (10-11) and V1 (14-15): all of tp1's rows."""
    f = frame(qkv, 10)
    assert f.region_lines() == [f"reads {T0} rows 4-7, 10-11, 14-15", f"writes {V2} rows 0-7"]


def test_receiver_step_marks_only_its_own_tensor(qkv):
    """Step 13 (rank 1 chunks the broadcast buffer) read the whole trainer shard but writes
    only rank 1's tensor; the chunk it passes on to rank 2 is not rank 1's write."""
    f = frame(qkv, 13)
    assert f.step.rank == 1
    assert f.region_lines() == [f"reads {T0} rows 0-15", f"writes {V1} rows 0-7"]


def test_destination_fills_in(qkv):
    """Unwritten through the trainer's 12 regroup steps; tp0 appears at step 13 (its
    chunk), tp1 at step 15 (stage 2), each exactly as it ends up."""
    for k, written in ((1, (0, 0)), (12, (0, 0)), (13, (64, 0)), (14, (64, 0)), (15, (64, 64))):
        f = frame(qkv, k)
        assert [int((p.actual.block != -2).sum()) for p in f.filled] == list(written), k
    final = frame(qkv, 15)
    assert raster_text(final.filled[1].actual) == raster_text(qkv.dst[1].actual)
    assert raster_text(frame(qkv, 13).filled[1].actual) == "rows 0-7: --*8"


def test_wrong_cells_appear_when_written(qkv):
    """tp1's wrong rows (K0 at 0-1 etc.) carry no wrong mark before step 15, and do at it."""
    assert int(frame(qkv, 14).filled[1].actual.status.sum()) == 0
    assert "k0!*8" in raster_text(frame(qkv, 15).filled[1].actual)


def test_column_blocks_read_and_write_columns(result):
    """o_proj [8, 8], heads along columns: tp0's stage-1 view writes its [8, 4], which holds
    trainer elements from every row (the faithful port splits rows, not columns)."""
    d = layout_diagram(result, O_PROJ)
    assert [s.text.split(":")[0] for s in d.steps] == [
        f"{V1} stage1", f"{V1} stage1", f"{V2} stage2",
    ]  # fmt: skip
    f = frame(d, 2)
    assert f.region_lines() == [f"reads {T0} rows 0-3", f"writes {V1} rows 0-7"]
    assert [int((p.actual.block != -2).sum()) for p in f.filled] == [32, 0]


def test_cell_ids_rebuild_the_first_element_of_each_cell(qkv, result):
    """At one element per cell the ids rebuilt from the raster are the tensor's ids."""
    ids = result.local_ids(2, QKV)
    assert bool((cell_ids(qkv.dst[1].actual) == ids).all())


def test_text_form_lists_marks_and_filled_panels(result):
    """`render --step` text: the step's marks, then every vLLM tensor as written so far."""
    text = layout_text(layout_diagram(result, QKV, step=13))
    tail = text.split("vLLM as written by steps 1-13\n", 1)[1].splitlines()
    assert f"  writes {V1} rows 0-7" in text
    assert tail[0] == f"  {V1}" and tail[-2:] == [f"  {V2}", "    rows 0-7: --*8"]


def test_strip_outlines_the_written_cells(qkv):
    """PNG pixels: step 7 writes rows 0-3 of rank 2, so the strip's second row carries one
    orange rectangle half a [8, 8] tile tall; the strip without big panels has none."""
    png = Image.open(io.BytesIO(frame_png(frame(qkv, 7)))).convert("RGB")
    px = np.asarray(png)
    orange = np.all(px == hex_rgb(WROTE), axis=-1)
    rows, cols = np.nonzero(orange)
    assert orange.sum() > 0
    # The outline is a rectangle: its top edge runs the tile's width, its height is half
    # the tile (rows 0-3 of 8).
    top, bottom = rows.min(), rows.max()
    left, right = cols.min(), cols.max()
    assert orange[top, left : right + 1].all() and orange[top : bottom + 1, left].all()
    height = bottom - top + 1
    width = right - left + 1
    assert abs(width - 2 * height) <= 2  # [4, 8] cells, square pixels per cell
    plain = np.asarray(Image.open(io.BytesIO(frame_png(frame(qkv, 7), panels=False))))
    assert not np.all(plain[..., :3] == hex_rgb(WROTE), axis=-1).any()


def _pixel(png, xy):
    x, y = xy
    return tuple(int(v) for v in png[round(y), round(x), :3])


def test_figure_draws_the_destination_as_written(qkv, result, tmp_path):
    """PNG pixels at known cells: at step 7 vLLM tp0 cell (0, 0) is unwritten (white) and the
    trainer's read row 4 has the black outline above it; at step 15 that vLLM cell is Q head
    0's blue (#4477AA at offset 0), as in the plain figure."""
    from syncviz.diagram import render

    fig = render(layout_diagram(result, QKV, step=7))
    png = np.asarray(Image.open(fig.save(tmp_path / "s7.png")).convert("RGB"))
    assert _pixel(png, fig.cell_pixel("vLLM holds", 1, 0, 0)) == (255, 255, 255)

    def edge(fig, png):  # the pixels between trainer rows 3 and 4, column 3
        x, y4 = fig.cell_pixel("trainer", 0, 4, 3)
        _, y3 = fig.cell_pixel("trainer", 0, 3, 3)
        mid = round((y3 + y4) / 2)
        return png[mid - 2 : mid + 3, round(x)]

    assert (edge(fig, png).max(axis=1) < 40).any()  # the read outline (black)
    plain = render(qkv)
    plain_png = np.asarray(Image.open(plain.save(tmp_path / "p.png")).convert("RGB"))
    assert not (edge(plain, plain_png).max(axis=1) < 40).any()
    fig = render(layout_diagram(result, QKV, step=15))
    png = np.asarray(Image.open(fig.save(tmp_path / "s15.png")).convert("RGB"))
    assert _pixel(png, fig.cell_pixel("vLLM holds", 1, 0, 0)) == pytest.approx(
        hex_rgb("#4477AA"), abs=2
    )


def test_a_write_narrower_than_a_cell_is_marked(result):
    """[4, 8] cells: step 4 takes trainer rows 12-13 (K head 1), which land at tp0 rows
    6-7; the cells holding them (trainer rows 12-15, tp0 rows 4-7) are marked though their
    first elements (trainer row 12 is read, tp0 row 4 holds Q head 2) differ."""
    d = layout_diagram(result, QKV, max_cells=2)
    assert d.dst[0].actual.cell == (4, 8)
    f = frame(d, 4)
    assert f.region_lines() == [f"reads {T0} rows 12-15", f"writes {V1} rows 4-7"]
    assert f.read[0].flatten().tolist() == [False, False, False, True]
    assert f.wrote[0].flatten().tolist() == [False, True] and f.wrote[1] is None


def _step(rank, ids):
    """A replayed step on ``rank`` whose one result holds ``ids``."""
    from syncviz.journey import TraceStep
    from syncviz.trace import OpRecord

    return TraceStep(rank, "stage1", OpRecord(0, "view"), ("x",), None, (ids,))


def test_cells_written_in_part_are_drawn_mixed_until_complete(result):
    """[2, 4] cells, hand-made steps on rank 1: row 5 alone, then row 0 alone, then all of
    tp0; then rank 2's tensor. A cell written in part (rows 4-5 from step 1, rows 0-1 from
    step 2) shows its block marked mixed (~) and no wrong mark (!) until it is complete;
    the row-5 step reads trainer row 9's cell and writes rows 4-5 though neither cell's
    first element is in it."""
    import dataclasses

    d = layout_diagram(result, QKV, max_cells=4)
    tp0 = result.local_ids(1, QKV).to(torch.int64)
    tp1 = result.local_ids(2, QKV).to(torch.int64)
    steps = [_step(1, tp0[5]), _step(1, tp0[0]), _step(1, tp0)]
    d = dataclasses.replace(d, steps=[*steps, _step(2, tp1)])
    want = [
        "rows 0-3: --*2\nrows 4-5: q2~*2\nrows 6-7: --*2",
        "rows 0-1: q0~*2\nrows 2-3: --*2\nrows 4-5: q2~*2\nrows 6-7: --*2",
        "rows 0-1: q0*2\nrows 2-3: q1*2\nrows 4-5: q2!*2\nrows 6-7: k1!*2",
    ]
    for k, text in enumerate(want, start=1):
        f = frame(d, k)
        assert raster_text(f.filled[0].actual) == text, k
        assert raster_text(f.filled[1].actual) == "rows 0-7: --*2", k
    f = frame(d, 1)
    assert f.region_lines() == [f"reads {T0} rows 8-9", f"writes {V1} rows 4-5"]
    assert raster_text(frame(d, 4).filled[1].actual) == raster_text(d.dst[1].actual)


@pytest.mark.parametrize("provenance", ["materialized", "symbolic"])
def test_a_tensor_never_written_is_never_marked_written(provenance):
    """The faithful port never writes llama3-8b's qkv at 2 -> 4 (its stage-1 buffer has
    the wrong size): no frame marks a vLLM cell written or filled, downsampled or not."""
    from syncviz import Parallel, preset

    spec = preset("llama3-8b").scaled(Parallel(2), Parallel(4))
    run = run_sync(spec, Parallel(2), Parallel(4), layers=[0], provenance=provenance)
    d = layout_diagram(run, QKV)
    assert d.dst[0].actual.cell != (1, 1) and len(d.steps) > 0
    for k in range(1, len(d.steps) + 1):
        f = frame(d, k)
        assert f.wrote == [None] * len(d.dst), k
        assert all(bool((p.actual.block == -2).all()) for p in f.filled), k
