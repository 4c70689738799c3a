"""Steps and journeys in the words the user thinks in: ranks as the panels name them, tensors
by shape, blocks folded into ranges; never the trace's tensor numbers (``#7``) or the dtype
of the ids the run carries. On the hand-worked tiny GQA case 1 -> 2: trainer tp0's qkv is
[Q0 Q1 K0 V0 Q2 Q3 K1 V1] by rows of 2, vLLM tp0 (rank 1) gets the first [8, 8] of the
regrouped [16, 8], tp1 (rank 2) the second, forwarded by rank 1."""

from __future__ import annotations

import re

import pytest

from syncviz import Parallel, preset
from syncviz.diagram.frames import frame
from syncviz.diagram.model import layout_diagram
from syncviz.diagram.text import layout_text
from syncviz.journey import block_journey, blocks_words, op_words, param_steps
from syncviz.oracle import model_layout
from syncviz.run.inprocess import run_sync
from syncviz.spec import ModelSpec
from syncviz.trace.records import OpRecord, TensorRef

QKV = "model.model.layers.0.self_attn.qkv_proj.weight"
TRAINER_QKV = "module.module.decoder.layers.0.self_attention.linear_qkv.weight"
SPEC = ModelSpec("tiny", "llama-mcore", 1, 8, 4, 2, 8, 64, head_dim=2)
T0, V1, V2 = "trainer tp 0 (rank 0)", "vLLM tp 0 (rank 1)", "vLLM tp 1 (rank 2)"
TRACE_WORDS = re.compile(r"#\d|float64")


@pytest.fixture(scope="module")
def run():
    return run_sync(SPEC, Parallel(tp=1), Parallel(tp=2), layers=[0])


def test_journey_text_names_ranks_and_shapes(run):
    """Q head 3: trainer rows 10-11; view to [8, 2, 8], head-row 5 taken, cat of 2+1+1
    head-rows, reshape to [8, 8], cat to [16, 8]; broadcast rank 0 -> 1 -> 2; rank 2's view
    of its [64]; held at rows 4-5 where rows 2-3 are expected: every line in rank words."""
    labels = [b.label for b in run.plan.layout.param(QKV).blocks]
    text = block_journey(run, QKV, labels.index("Q head 3")).text()
    assert text.splitlines() == [
        "Q head 3",
        f"starts: {T0}: rows 10-11 of {TRAINER_QKV} [16, 8]",
        f"moved by: {T0} regroup: view([16, 8], [8, 2, 8]) -> [8, 2, 8]",
        f"moved by: {T0} regroup: getitem([8, 2, 8], [5, 6, None]) -> [1, 2, 8]",
        f"moved by: {T0} regroup: cat([2, 2, 8], [1, 2, 8], [1, 2, 8], dim=0) -> [4, 2, 8]",
        f"moved by: {T0} regroup: reshape([4, 2, 8], -1, 8) -> [8, 8]",
        f"moved by: {T0} regroup: cat([8, 8], [8, 8], dim=0) -> [16, 8]",
        f"moved by: broadcast from {T0} to {V1} (group stage1:0>1)",
        f"moved by: broadcast from {V1} to {V2} (group stage2:1>2)",
        f"moved by: {V2} stage2: view([64], [8, 8]) -> [8, 8]",
        f"ends: {V2}: rows 4-5 of {QKV}",
        "verdict: WRONG; the oracle expects it at:",
        f"  {V2}: rows 2-3",
    ]


def test_every_journey_and_step_is_free_of_trace_ids(run):
    """Every block's journey text and every step's words: no ``#N``, no ids' dtype; each step
    opens with its rank's words (trainer rank 0 regroups, vLLM ranks 1 and 2 receive)."""
    for i in range(len(run.plan.layout.param(QKV).blocks)):
        text = block_journey(run, QKV, i).text()
        assert not TRACE_WORDS.search(text), text
    steps = param_steps(run, QKV)
    assert [s.text.split(": ")[0] for s in steps] == (
        [f"{T0} regroup"] * 12 + [f"{V1} stage1", f"{V1} stage1", f"{V2} stage2"]
    )
    assert not any(TRACE_WORDS.search(s.text) for s in steps)


def test_step_frame_words_name_ranks_shapes_and_block_ranges(run):
    """Step 13 is rank 1's chunk of the broadcast [128] into two [64] (all 8 blocks: Q heads
    0-3, K heads 0-1, V heads 0-1); step 8 takes head-row 5 (Q head 3) on rank 0."""
    d = layout_diagram(run, QKV)
    f = frame(d, 13)
    assert f.text == (
        f"step 13/15: {V1} stage1: chunk([128], 2) -> [64], [64]"
        " (holds Q heads 0-3, K heads 0-1, V heads 0-1)"
    )
    assert [(p.title, p.shape) for p in f.inputs + f.outputs] == [
        (f"{V1} reads", (128,)),
        (f"{V1} writes", (64,)),
        (f"{V1} writes", (64,)),
    ]
    assert f.region_lines() == [f"reads {T0} rows 0-15", f"writes {V1} rows 0-7"]
    f = frame(d, 8)
    assert f.text == (
        f"step 8/15: {T0} regroup: getitem([8, 2, 8], [5, 6, None]) -> [1, 2, 8] (holds Q head 3)"
    )
    assert f.region_lines() == [f"reads {T0} rows 10-11", f"writes {V2} rows 4-5"]


def test_render_text_of_every_step_is_free_of_trace_ids(run):
    """`render --step k` text for every step of the tiny qkv: no ``#N``, no ids' dtype."""
    for k in range(1, 16):
        text = layout_text(layout_diagram(run, QKV, step=k))
        assert not TRACE_WORDS.search(text), (k, text)


def test_op_words_and_block_ranges():
    """An index tensor inside an argument reads ``a tensor``; o_proj's heads fold into one
    range in block order, a gap splits it, a label the parameter lacks is kept, last; an
    expert with both parts (gate, up) is the expert, one with a part only keeps it."""
    op = OpRecord(0, "getitem", [TensorRef(3, [8, 4], "float64")], [["#5", [0, 2, None]]])
    op.outputs = [TensorRef(6, [2, 4], "float64")]
    assert op_words(op) == "getitem([8, 4], [a tensor, [0, 2, None]]) -> [2, 4]"
    layout = model_layout(SPEC, Parallel(tp=1), Parallel(tp=2), layers=[0])
    o_proj = layout.param("model.model.layers.0.self_attn.o_proj.weight")
    assert blocks_words(o_proj, ["head 1", "head 0", "head 2", "head 3"]) == "heads 0-3"
    assert blocks_words(o_proj, ["head 3", "nothing", "head 1"]) == "head 1, head 3, nothing"
    moe = model_layout(
        preset("qwen2-57b-a14b").scaled(), Parallel(tp=2, ep=2), Parallel(tp=4), layers=[0]
    )
    w13 = moe.param("model.model.layers.0.mlp.experts.w13_weight")
    both = [f"expert {e} {part}" for e in range(4) for part in ("gate", "up")]
    assert blocks_words(w13, both) == "experts 0-3"
    assert blocks_words(w13, [*both[:5], "expert 9 up", "expert 10 up"]) == (
        "experts 0-1, expert 2 gate, experts 9-10 up"
    )


def test_journey_picture_lines_name_ranks(run):
    """The journey picture of Q head 3: each step's line opens with its rank's words, the
    collectives name the receiving rank the same way."""
    from syncviz.diagram.pil_journey import journey_lines

    labels = [b.label for b in run.plan.layout.param(QKV).blocks]
    lines = journey_lines(block_journey(run, QKV, labels.index("Q head 3")))
    assert lines[1] == ("trainer", f"{T0} | holds | rows 10-11")
    assert lines[2] == ("op", f"{T0} | regroup: view | rows 5 of [8, 2, 8]")
    assert lines[7:11] == [
        ("collective", f"{T0} | broadcast to {V1}"),
        ("collective", f"{V1} | broadcast to {V2}"),
        ("op", f"{V2} | stage2: view"),
        ("vLLM", f"{V2} | holds | rows 4-5"),
    ]


O_PROJ = "model.model.layers.0.self_attn.o_proj.weight"


def _ids(rows, cols, width: int = 8):
    """The local ids (row-major positions) of ``rows`` x ``cols`` of an [8, width] tensor."""
    import torch

    return torch.tensor([[r * width + c for c in cols] for r in rows], dtype=torch.float64)


def test_carried_words_say_blocks_and_their_rows(run):
    """tiny o_proj is [8, 8], head h = columns 2h, 2h+1 (every row). The faithful port's flat
    split gives rank 1 its first 32 elements: rows 0-3 of heads 0-3; made-up results: rows
    0-7 of columns 2-3 is head 1 whole; rows 0, 2, 4, 6 of it every other row; column 2 only
    parts of its rows; qkv's getitem of head-rows 0-1 is Q heads 0-1, whole."""
    from syncviz.journey import TraceStep, carried_words

    o_proj = run.plan.layout.param(O_PROJ)
    steps = param_steps(run, O_PROJ)
    assert [carried_words(o_proj, s) for s in steps] == [
        "heads 0-3",  # the chunk: both halves of the flat [64]
        "rows 0-3 of heads 0-3",
        "rows 4-7 of heads 0-3",
    ]

    def made(ids, blocks):
        return carried_words(o_proj, TraceStep(0, "x", OpRecord(0, "view"), blocks, None, (ids,)))

    assert made(_ids(range(8), [2, 3]), ("head 1",)) == "head 1"
    assert made(_ids([0, 2, 4, 6], [2, 3]), ("head 1",)) == (
        "rows 0-6 step 2 (every other row) of head 1"
    )
    assert made(_ids(range(8), [2]), ("head 1",)) == "parts of rows 0-7 of head 1"
    both = _ids(range(8), [0, 1, 2, 3, 4])  # heads 0-1 whole, column 4 of head 2
    assert made(both, ("head 0", "head 1", "head 2")) == "heads 0-1; parts of rows 0-7 of head 2"
    assert made(both, None) == "blocks not known (not replayed)"
    qkv = run.plan.layout.param(QKV)
    assert carried_words(qkv, param_steps(run, QKV)[1]) == "Q heads 0-1"


def test_step_box_says_blocks_rows_and_ranks(run):
    """The Explorer's step box for o_proj step 2 (rank 1's view of its flat half): what it
    carries in rows of heads, where it read and wrote by rank name; no raw label list, no
    trace ids."""
    from syncviz.explorer_session import ExplorerSession
    from syncviz.widgets.explorer import _step_html

    s = ExplorerSession()
    s.open(SPEC, Parallel(tp=1), Parallel(tp=2), scaled=False)
    s.choose(O_PROJ)
    shown = s.step(2)
    assert shown.carries == "rows 0-3 of heads 0-3"
    assert shown.moves == [f"reads {T0} rows 0-3", f"writes {V1} rows 0-7"]
    box = _step_html(shown)
    assert f"carries rows 0-3 of heads 0-3<br>reads {T0} rows 0-3 -&gt; writes {V1} rows 0-7" in box
    assert "head 0, head 1" not in box and not TRACE_WORDS.search(box)


def test_strip_names_its_big_panels_by_rank_and_wraps_them():
    """The strip's second row titles a trainer panel ``<rank name>: read`` and a vLLM one by
    its rank name; 17 tiles of 100 px titles wrap into rows of at most 1080 px, in order."""
    from PIL import Image, ImageFont

    from syncviz.diagram.frames import READ, WROTE
    from syncviz.diagram.panel import Panel
    from syncviz.diagram.pil import FONT_PX, MAX_WIDTH, _panel_title, _wrapped

    p = Panel(T0, 0, "src", (8, 8), None)
    assert _panel_title(p, READ) == f"{T0}: read"
    assert _panel_title(Panel(V1, 1, "dst", (8, 8), None), WROTE) == V1
    tile = Image.new("RGB", (100, 10))
    font = ImageFont.load_default(size=FONT_PX)
    tiles = [("", tile)] * 17
    rows = _wrapped(tiles, font, 14)
    assert [len(r) for r in rows] == [9, 8]  # 14 + 9 * 114 = 1040 <= 1080 < 1154
    assert [t for row in rows for t in row] == tiles and MAX_WIDTH >= 14 + 9 * 114
