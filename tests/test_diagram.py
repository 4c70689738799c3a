"""Diagram model: provenance rasters against hand-worked literals, actual beside expected,
movement bands, steps, PNG pixels at known cells, SVG, and the render command."""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg
import pytest
import torch

from syncviz import Parallel
from syncviz.check import element_status
from syncviz.cli.render import _words as render_words
from syncviz.cli.render import render_configure, render_main
from syncviz.diagram import layout_diagram, layout_text, render, transfer_diagram, transfer_text
from syncviz.diagram.raster import BlockTable, raster, raster_text
from syncviz.journey import param_steps
from syncviz.oracle import model_layout
from syncviz.run.inprocess import run_sync
from syncviz.spec import ModelSpec

QKV = "model.model.layers.0.self_attn.qkv_proj.weight"
O_PROJ = "model.model.layers.0.self_attn.o_proj.weight"
FALLBACKS = ("drawn by status", "other blocks", "more wrong blocks")


@pytest.fixture(scope="module")
def tiny_result(tiny_spec):
    return run_sync(tiny_spec, Parallel(tp=1), Parallel(tp=2), layers=[0])


def _param(spec, kind, d, s=1, layers=(0,)):
    layout = model_layout(spec, Parallel(tp=s), Parallel(tp=d), layers=layers)
    return next(p for p in layout if p.kind == kind)


def _expected_text(spec, kind, d, tp, inner=False, **kw):
    param = _param(spec, kind, d, **kw)
    return raster_text(raster(param.dst[tp].index.ids(), BlockTable(param)), inner)


# ---------------------------------------------------------------- rasters, hand-worked


def test_qkv_gqa_fewer_ranks_than_groups():
    """8 Q heads, 4 groups, head_dim 1, d=2: tp1 holds Q4-Q7, K2-K3, V2-V3, one row each."""
    spec = ModelSpec("g", "llama-mcore", 1, 4, 8, 4, 8, 64, head_dim=1)
    rows = ["q4", "q5", "q6", "q7", "k2", "k3", "v2", "v3"]
    assert _expected_text(spec, "qkv", 2, 1) == "\n".join(
        f"rows {i}: {t}*4" for i, t in enumerate(rows)
    )


def test_qkv_gqa_ranks_equal_groups():
    """4 Q heads, 2 groups, head_dim 2, d=2: tp0 holds Q0 Q1 K0 V0, two rows per head."""
    spec = ModelSpec("g", "llama-mcore", 1, 8, 4, 2, 8, 64, head_dim=2)
    assert _expected_text(spec, "qkv", 2, 0) == "\n".join(
        ["rows 0-1: q0*8", "rows 2-3: q1*8", "rows 4-5: k0*8", "rows 6-7: v0*8"]
    )


def test_qkv_gqa_more_ranks_than_groups_replicates_kv():
    """4 Q heads, 2 groups, d=4: tp3 holds Q3 and the replicated K1, V1, shared with tp2."""
    spec = ModelSpec("g", "llama-mcore", 1, 8, 4, 2, 8, 64, head_dim=2)
    assert _expected_text(spec, "qkv", 4, 3, inner=True) == "\n".join([
        "rows 0: q3:0*8", "rows 1: q3:1*8", "rows 2: k1:0*8", "rows 3: k1:1*8",
        "rows 4: v1:0*8", "rows 5: v1:1*8",
    ])  # fmt: skip
    result = run_sync(spec, Parallel(tp=2), Parallel(tp=4), synchronizer="corrected", layers=[0])
    d = layout_diagram(result, QKV)
    worlds = [p.rank for p in d.dst]
    assert d.dst[3].shared == {"K head 1": [worlds[2]], "V head 1": [worlds[2]]}
    assert d.wrong_count == 0 and "!" not in layout_text(d)


def test_qkv_faithful_s1_d2_holds_beside_expected(tiny_result):
    """ChatLearn s=1 -> d=2 cuts mcore rows [Q0 Q1 K0 V0 Q2 Q3 K1 V1] as if HF-ordered."""
    text = layout_text(layout_diagram(tiny_result, QKV))
    rank2 = text.split("  vLLM tp 1 (rank 2) [8, 8]\n", 1)[1].split("movement")[0]
    assert rank2.splitlines() == [
        "    holds",
        "      rows 0-1: k0!*8",
        "      rows 2-3: v0!*8",
        "      rows 4-5: q3!*8",
        "      rows 6-7: v1*8",
        "    expected",
        "      rows 0-1: q2*8",
        "      rows 2-3: q3*8",
        "      rows 4-5: k1*8",
        "      rows 6-7: v1*8",
        "    WRONG rows 0-1: holds K head 0, expected Q head 2",
        "    WRONG rows 2-3: holds V head 0, expected Q head 3",
        "    WRONG rows 4-5: holds Q head 3, expected K head 1",
    ]


def test_o_proj_row_split_bug(tiny_result):
    """o_proj [8, 8] s=1 -> d=2 cut as a flat chunk: local row i of tp t holds global row
    (8t+i)//2, columns of heads 2((8t+i)%2) and +1, where columns of heads 2t, 2t+1 belong:
    every column is wrong (only row 0 of tp 0 is right), worded by the columns' heads."""
    d = layout_diagram(tiny_result, O_PROJ)
    assert d.axis == 1  # o_proj's blocks (heads) are columns
    for tp, panel in enumerate(d.dst):
        holds, want = [], []
        for i in range(8):
            g_row, first = (8 * tp + i) // 2, 2 * ((8 * tp + i) % 2)
            ok = (first, g_row) == (2 * tp, i)
            mark = "" if ok else "!"
            holds.append(f"rows {i}: h{first}:{g_row}{mark}*2 h{first + 1}:{g_row}{mark}*2")
            want.append(f"rows {i}: h{2 * tp}:{i}*2 h{2 * tp + 1}:{i}*2")
        assert raster_text(panel.actual, inner=True) == "\n".join(holds)
        assert raster_text(panel.expected, inner=True) == "\n".join(want)
    assert [r.text for p in d.dst for r in p.regions] == [
        "columns 0-3 (heads 0-1): hold heads 0-3 rows 0-3, expected heads 0-1",
        "columns 0-3 (heads 2-3): hold heads 0-3 rows 4-7, expected heads 2-3",
    ]


def test_gate_up_halves():
    """gate_up [16, 4] to d=2: each rank holds its half of gate then its half of up."""
    spec = ModelSpec("g", "llama-mcore", 1, 4, 4, 2, 8, 64, head_dim=1)
    assert _expected_text(spec, "gate_up", 2, 1, inner=True) == "\n".join(
        [f"rows {i}: g:{4 + i}*4" for i in range(4)]
        + [f"rows {4 + i}: u:{4 + i}*4" for i in range(4)]
    )


def test_experts_w13_stacked_bands():
    """4 experts, moe ffn 4, d=2: tp0 holds rows 0-1 of each expert's gate, then of its up."""
    spec = ModelSpec("m", "qwen2-moe", 1, 8, 4, 2, 8, 64, qkv_bias=True, num_experts=4,
                     moe_ffn_hidden_size=4, shared_expert_ffn_hidden_size=8,
                     shared_expert_gate=True)  # fmt: skip
    text = _expected_text(spec, "experts_w13", 2, 0)
    lines = []
    for e in range(4):
        lines += [f"rows {4 * e}-{4 * e + 1}: e{e}g*8", f"rows {4 * e + 2}-{4 * e + 3}: e{e}u*8"]
    assert text == "\n".join(lines)


def test_vocab_padding():
    """vocab 70 over d=4 pads to 128 rows: tp2 holds vocab rows 64-69, then 26 padding rows."""
    spec = ModelSpec("tiny", "llama-mcore", 2, 8, 4, 2, 4, 70)
    param = _param(spec, "embed", 4, layers=None)
    r = raster(param.dst[2].index.ids(), BlockTable(param))
    assert raster_text(r) == "rows 0-5: w*8\nrows 6-31: pad*8"
    assert raster_text(r, inner=True).splitlines()[0] == "rows 0: w:64*8"


def test_downsampled_cells_marked_mixed():
    """Cells of 4 rows over 8 Q heads of one row: each cell holds 4 heads and says so."""
    spec = ModelSpec("g", "llama-mcore", 1, 4, 8, 4, 8, 64, head_dim=1)
    param = _param(spec, "qkv", 2)
    r = raster(param.dst[0].index.ids(), BlockTable(param), max_cells=4)
    assert r.cell == (2, 1)
    assert raster_text(r) == "rows 0-1: q0~*4\nrows 2-3: q2~*4\nrows 4-5: k0~*4\nrows 6-7: v0~*4"


def test_downsampling_never_hides_a_wrong_element():
    """One wrong element among 16k, cells of 8x8: its cell is marked wrong, no other is."""
    param = _param(ModelSpec("b", "llama-mcore", 1, 128, 8, 4, 256, 64), "qkv", 1)
    want = param.dst[0].index.ids()
    got = want.clone().to(torch.float64)
    got[37, 90] = float(want[0, 0])
    r = raster(got, BlockTable(param), element_status(got, want), max_cells=32)
    assert r.cell == (8, 4)
    assert torch.nonzero(r.status).tolist() == [[37 // 8, 90 // 4]]


# ---------------------------------------------------------------- bands, steps


def test_bands_follow_rows(tiny_result):
    """Trainer rows 4-5 (K head 0) land wrong at rows 0-1 of tp1; V head 1 lands right."""
    d = layout_diagram(tiny_result, QKV)
    text = layout_text(d).split("movement (rows)\n", 1)[1].splitlines()
    assert "  rank 0 4-5 -> rank 2 0-1: K head 0 WRONG" in text
    assert "  rank 0 14-15 -> rank 2 6-7: V head 1" in text
    assert len([b for b in d.bands if not b.wrong]) == 3


def test_step_frame_is_the_shared_step_list():
    """qwen1.5-moe s=2 -> d=4 qkv, step 13: the frame names and draws that op of param_steps."""
    from syncviz import preset

    src, dst = Parallel(tp=2), Parallel(tp=4)
    result = run_sync(preset("qwen1.5-moe-a2.7b").scaled(src, dst), src, dst, layers=[0])
    steps = param_steps(result, QKV)
    d = layout_diagram(result, QKV, step=13)
    chosen = steps[12]
    assert d.steps[12].op.index == chosen.op.index and d.steps[12].rank == chosen.rank
    assert d.frame.step.text == chosen.text and d.frame.text.startswith("step 13/")
    assert chosen.outputs is not None
    drawn = [p.actual.block for p in d.frame.outputs]
    table = d.table
    cell = d.frame.outputs[0].actual.cell
    assert all(
        torch.equal(a, raster(o, table, cell=cell).block)
        for a, o in zip(drawn, chosen.outputs, strict=True)
    )


def test_receiving_rank_steps_are_replayed(tiny_spec):
    """s=2 -> d=2: a vLLM rank's view of its received buffer is replayed on ids."""
    result = run_sync(tiny_spec, Parallel(tp=2), Parallel(tp=2), layers=[0])
    received = [s for s in param_steps(result, QKV) if result.plan.roles[s.rank].side == "dst"]
    assert received and all(s.outputs is not None for s in received)
    assert received[0].blocks == ("Q head 0", "Q head 1", "K head 0", "V head 0")


# ---------------------------------------------------------------- pictures


def _pixel(png, xy):
    x, y = xy
    return tuple(round(float(c) * 255) for c in png[int(y), int(x), :3])


def test_png_pixels_at_known_cells(tiny_result, tmp_path):
    """Q head 0 row 0 is #4477AA; Q head 2 (shade 2) is that darkened 38%; K head 0 is #CCBB44;
    the edge of a wrong region is magenta; the figure is at most 1100 px wide."""
    d = layout_diagram(tiny_result, QKV)
    fig = render(d)
    png = mpimg.imread(fig.save(tmp_path / "q.png"))
    assert png.shape[1] <= 1100
    assert _pixel(png, fig.cell_pixel("trainer", 0, 0, 0)) == pytest.approx((68, 119, 170), abs=2)
    assert _pixel(png, fig.cell_pixel("vLLM holds", 1, 4, 0)) == pytest.approx((42, 74, 105), abs=2)
    assert _pixel(png, fig.cell_pixel("vLLM expected", 1, 4, 0)) == pytest.approx(
        (204, 187, 68), abs=2
    )
    x, y_mid = fig.cell_pixel("vLLM holds", 1, 4, 3)
    _, y_above = fig.cell_pixel("vLLM holds", 1, 3, 3)
    edge = [_pixel(png, (x, y)) for y in range(int(y_above) + 1, int(y_mid))]
    assert any(abs(r - 238) < 30 and abs(g - 51) < 40 and abs(b - 119) < 40 for r, g, b in edge)


def test_svg_text_stays_text_and_transfer_saves(tiny_result, tmp_path):
    """SVG keeps its words as <text>; the transfer map saves a PNG; a bad suffix is refused."""
    from syncviz.errors import SyncvizError

    svg = render(layout_diagram(tiny_result, QKV)).save(tmp_path / "q.svg").read_text()
    assert "<svg" in svg[:500] and "<text" in svg and "vLLM holds" in svg
    fig = render(transfer_diagram(tiny_result))
    assert mpimg.imread(fig.save(tmp_path / "t.png")).shape[0] > 100
    with pytest.raises(SyncvizError, match="suffix"):
        fig.save(tmp_path / "t.jpg")


def test_transfer_text(tiny_result):
    """s=1 -> d=2: rank 0 sends all 4 synced params (384 float64) to 1, which forwards half to 2."""
    assert transfer_text(transfer_diagram(tiny_result)) == "\n".join([
        "transfer tiny: src tp1 -> dst tp2",
        "source ranks: tp 0 (rank 0)",
        "destination ranks: tp 0 (rank 1), tp 1 (rank 2)",
        "stage1: 0 -> 1  3.0 KiB, 4 params",
        "stage2: 1 -> 2  1.5 KiB, 4 params",
    ])  # fmt: skip


def _render(tmp_path, *argv):
    parser = argparse.ArgumentParser()
    render_configure(parser)
    return render_main(parser.parse_args([*argv, "-o", str(tmp_path / "x.png")]))


def test_render_o_proj_says_what_was_expected(tmp_path, capsys):
    """`render --param o_proj` (llama3-8b 1 -> 2) prints the path and every wrong region, by
    columns and their heads, at the model's real sizes by default (2048 columns a rank, heads
    of 128), at small ones with --scaled (64 columns, heads of 4)."""
    assert _render(tmp_path, "--preset", "llama3-8b", "--src-tp", "1", "--dst-tp", "2",
                   "--param", "o_proj") == 0  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    assert out[0] == str(tmp_path / "x.png")
    assert len(out) == 3 and all(
        line.startswith("WRONG ") and ", expected " in line for line in out[1:]
    )
    assert out[1] == (
        "WRONG vLLM tp 0 (rank 1): columns 0-2047 (heads 0-15): hold heads 0-31 rows 0-2047,"
        " expected heads 0-15"
    )
    assert mpimg.imread(tmp_path / "x.png").shape[1] <= 1100
    assert _render(tmp_path, "--preset", "llama3-8b", "--src-tp", "1", "--dst-tp", "2",
                   "--param", "o_proj", "--scaled") == 0  # fmt: skip
    scaled = capsys.readouterr().out.splitlines()
    assert scaled[1] == (
        "WRONG vLLM tp 0 (rank 1): columns 0-63 (heads 0-15): hold heads 0-31 rows 0-63,"
        " expected heads 0-15"
    )


def test_render_embed_tokens_and_step(tmp_path, capsys):
    """`--param embed_tokens` draws the embedding; `--step 2` names that step and the
    trainer rows it read in words."""
    assert _render(tmp_path, "--preset", "llama3-8b", "--src-tp", "2", "--dst-tp", "4",
                   "--param", "embed_tokens") == 0  # fmt: skip
    assert (
        capsys.readouterr().out.splitlines()[1] == "every vLLM rank holds what the oracle expects"
    )
    assert _render(tmp_path, "--preset", "llama3-8b", "--src-tp", "1", "--dst-tp", "2",
                   "--param", "qkv", "--step", "2", "--scaled") == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2].startswith("step 2/") and "getitem" in lines[-2]
    assert lines[-1].startswith("reads trainer tp 0 (rank 0) rows 0-")


def test_every_preset_every_parameter_has_no_fallback():
    """Every parameter of every preset (scaled, s=2 -> d=4; s=1 for one K/V group): no
    fallback words, every wrong region says what was expected, every wrong cell lies in a
    described region."""
    from syncviz.presets import PRESETS

    for name, spec in PRESETS.items():
        s = 2 if spec.num_query_groups % 2 == 0 else 1  # a trainer tp divides the K/V groups
        src = Parallel(tp=s, ep=2) if spec.is_moe else Parallel(tp=s)
        dst = Parallel(tp=4)
        result = run_sync(spec.scaled(src, dst), src, dst, layers=[0])
        for p in result.plan.layout:
            d = layout_diagram(result, p.key)
            text = layout_text(d)
            printed = "\n".join(render_words(d))  # what `syncviz render` prints
            assert not any(f in text or f in printed for f in FALLBACKS), (name, p.key)
            assert all(", expected " in line for line in render_words(d) if "WRONG" in line)
            for panel in d.dst:
                assert bool(panel.regions) == bool(panel.wrong_cells), (name, p.key, panel.title)
                assert all(", expected " in r.text for r in panel.regions)


def test_step_frame_is_drawn_under_the_figure(tiny_result, tmp_path):
    """With step 1 the figure gains the step strip (its tensors only: the big panels show
    the marks): taller, and its first pixels below the words are the rasters of what the
    step read (not blank)."""
    from syncviz.diagram.pil import frame_png

    plain = mpimg.imread(render(layout_diagram(tiny_result, QKV)).save(tmp_path / "a.png"))
    d = layout_diagram(tiny_result, QKV, step=1)
    stepped = mpimg.imread(render(d).save(tmp_path / "b.png"))
    strip = mpimg.imread(__import__("io").BytesIO(frame_png(d.frame, panels=False)))
    assert stepped.shape[1] == plain.shape[1] <= 1100
    assert stepped.shape[0] >= plain.shape[0] + strip.shape[0]
    bottom = stepped[-strip.shape[0] - 5 :, :, :3]
    assert (bottom < 0.9).any()  # coloured cells, not an empty band
