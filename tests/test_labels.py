"""Label choice (diagram/labels.py) against hand-worked cases on the tiny spec, and the
never-overprint rule on a real 64-head panel.

Tiny qkv trainer shard [16, 8], heads of 2 rows: Q0 Q1 K0 V0 Q2 Q3 K1 V1, run middles at
rows 1, 3, ..., 15. o_proj [8, 8]: heads h0-h3 of 2 columns, middles at columns 1, 3, 5, 7.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from syncviz import Parallel, preset
from syncviz.diagram.labels import MIXED_LINE, block_runs, choose, panel_labels
from syncviz.diagram.model import layout_diagram
from syncviz.diagram.raster import BlockTable, raster
from syncviz.oracle import model_layout
from syncviz.run.inprocess import run_sync
from syncviz.spec import ModelSpec

SPEC = ModelSpec("tiny", "llama-mcore", 1, 8, 4, 2, 8, 64, head_dim=2)


@pytest.fixture(scope="module")
def layout():
    return model_layout(SPEC, Parallel(tp=1), Parallel(tp=2), layers=[0])


def _trainer(layout, n: int, **kw):
    param = layout.params[n]
    return raster(param.src[0].index.ids(), BlockTable(param), **kw)


def _shown(r, axis: int, gap: float, scale: float = 1.0):
    return [(x.text, x.at) for x in panel_labels(r, axis, lambda m: m * scale, gap)]


def test_every_label_fits_at_one_line_per_head(layout):
    """Gap 2 = one head: all eight labels, in row order."""
    assert [t for t, _ in _shown(_trainer(layout, 1), 0, 2)] == [
        "Q0", "Q1", "K0", "V0", "Q2", "Q3", "K1", "V1",
    ]  # fmt: skip


def test_new_families_first_then_the_gaps(layout):
    """Gap 3: first-of-family runs placed first (Q0 1, K0 5, V0 7 too close to K0, Q2 9,
    K1 13, V1 15 too close), then Q1 (3) and Q3 (11) are too close to their neighbours."""
    assert _shown(_trainer(layout, 1), 0, 3) == [
        ("Q0", 1.0), ("K0", 5.0), ("Q2", 9.0), ("K1", 13.0),
    ]  # fmt: skip


def test_placement_units_are_the_renderers(layout):
    """At 10 px per row, a 25 px gap is 2.5 rows: the gap-3 result plus nothing more
    (Q1 at 30 px is 20 px from Q0), positions in px."""
    assert _shown(_trainer(layout, 1), 0, 25, scale=10) == [
        ("Q0", 10.0), ("K0", 50.0), ("Q2", 90.0), ("K1", 130.0),
    ]  # fmt: skip


def test_column_blocks(layout):
    """o_proj: heads on columns; one family, so only h0 is first; gap 3 keeps h0 and h2."""
    r = _trainer(layout, 2)
    assert block_runs(r, 1) == [(0, 2, 0), (2, 4, 1), (4, 6, 2), (6, 8, 3)]
    assert [t for t, _ in _shown(r, 1, 3)] == ["h0", "h2"]


def test_columns_that_read_several_heads_get_no_label(layout):
    """o_proj split by rows (the faithful port at tp 1 -> 2): vLLM rank 0's [8, 4] holds
    global rows 0-3 read as 8 rows of 4, so local column 0 reads h0 on even rows and h2
    on odd ones: no column names one head, no label; the expected shard's columns do
    (h0, h1)."""
    param = layout.params[2]
    split_by_rows = raster(torch.arange(32).view(8, 4), BlockTable(param))
    assert {b for _, _, b in block_runs(split_by_rows, 1)} == {MIXED_LINE}
    assert _shown(split_by_rows, 1, 1) == []
    expected = raster(param.dst[0].index.ids(), BlockTable(param))
    assert [t for t, _ in _shown(expected, 1, 1)] == ["h0", "h1"]


def test_mixed_wrong_lines_get_no_label_right_ones_do(layout):
    """The same split drawn 2 rows a cell: each cell of local column 0 holds h0 and h2
    (mixed) and starts on h0, so every column line reads one block; marked not right it
    gets no label, while the same mixed cells marked right keep theirs (h0, h1)."""
    param = layout.params[2]
    ids = torch.arange(32).view(8, 4)
    wrong = raster(ids, BlockTable(param), status=torch.ones(8, 4, dtype=torch.int8), cell=(2, 1))
    assert bool(wrong.mixed.all())
    assert _shown(wrong, 1, 1) == []
    right = raster(ids, BlockTable(param), cell=(2, 1))
    assert [t for t, _ in _shown(right, 1, 1)] == ["h0", "h1"]


def test_downsampled_cells_merge_into_runs(layout):
    """Cells of 4 rows: Q0+Q1 read as Q0 (cell 0), K0+V0 as K0 (cell 1): runs of 4 rows."""
    r = _trainer(layout, 1, cell=(4, 8))
    assert block_runs(r, 0) == [(0, 4, 0), (4, 8, 4), (8, 12, 2), (12, 16, 5)]
    assert [t for t, _ in _shown(r, 0, 4)] == ["Q0", "K0", "Q2", "K1"]


def test_special_blocks_and_a_bare_table():
    """Unwritten/padding runs get words; ``choose`` needs only families and blocks."""
    from types import SimpleNamespace

    t = SimpleNamespace(families=["q"], blocks=[SimpleNamespace(family="q", index=7)])
    got = choose([(0, 4, -2), (4, 6, 0), (6, 8, -1)], t, lambda m: m, 1)
    assert [(x.text, x.mid) for x in got] == [("unwritten", 2.0), ("Q7", 5.0), ("pad", 7.0)]


def test_never_overprint_on_64_heads():
    """llama3-70b 4 -> 8 qkv (scaled): on every panel, at the PIL renderer's 16 px gap and
    its scale, placed labels are >= 16 px apart and each first-of-family run that fits is
    shown (the trainer's first K head)."""
    src, dst = Parallel(tp=4), Parallel(tp=8)
    result = run_sync(preset("llama3-70b").scaled(src, dst), src, dst, layers=[0])
    d = layout_diagram(result, "model.model.layers.0.self_attn.qkv_proj.weight")
    for p in d.src + d.dst:
        labels = panel_labels(p.actual, 0, lambda m: m * 2.0, 16)
        at = [x.at for x in labels]
        assert all(b - a >= 16 for a, b in itertools.pairwise(at)), p.title
    first = panel_labels(d.src[0].actual, 0, lambda m: m * 2.0, 16)
    assert any(x.text.startswith("K") for x in first) and first[0].text.startswith("Q")


# MLA, two heads: q_proj [10, 8] is per head 3 nope rows then 2 rope rows (run middles
# 1.5, 4, 6.5, 9); kv_b_proj [16, 4] per head 3 k_nope rows then 5 v rows (1.5, 5.5, 9.5,
# 13.5). One trainer rank holds each whole.
MLA = ModelSpec(
    "mla", "deepseek-v3", 1, 8, 2, 2, 8, 64, num_experts=2, moe_ffn_hidden_size=4,
    kv_lora_rank=4, qk_nope_head_dim=3, qk_rope_head_dim=2, v_head_dim=5,
)  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "gap", "expected"),
    [
        ("q_proj", 2, [("Q0 nope", 1.5), ("Q0 rope", 4.0), ("Q1 nope", 6.5), ("Q1 rope", 9.0)]),
        # rope 2.5 rows after its nope: only the nope labels fit a 3-row gap.
        ("q_proj", 3, [("Q0 nope", 1.5), ("Q1 nope", 6.5)]),
        ("kv_b_proj", 4, [("K0 k_nope", 1.5), ("V0", 5.5), ("K1 k_nope", 9.5), ("V1", 13.5)]),
    ],
)
def test_mla_heads_are_labelled_by_part(kind, gap, expected):
    """MLA's up projections name each head's parts: "Q0 nope"/"Q0 rope", "K0 k_nope"/"V0"."""
    layout = model_layout(MLA, Parallel(tp=1), Parallel(tp=2), layers=[0])
    param = next(p for p in layout.params if p.kind == kind)
    r = raster(param.src[0].index.ids(), BlockTable(param))
    assert _shown(r, 0, gap) == expected
