"""Diagram model, text rendering, PNG/SVG rendering and the render command."""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mcolors
import matplotlib.image as mpimg
import pytest

from syncviz import Parallel
from syncviz.check import check
from syncviz.cli.render import render_configure, render_main
from syncviz.diagram import layout_diagram, layout_text, render, transfer_diagram, transfer_text
from syncviz.diagram.mpl import FAMILY_COLORS
from syncviz.run.inprocess import run_sync

QKV = "model.model.layers.0.self_attn.qkv_proj.weight"
O_PROJ = "model.model.layers.0.self_attn.o_proj.weight"


@pytest.fixture(scope="module")
def tiny_result(tiny_spec):
    return run_sync(tiny_spec, Parallel(tp=1), Parallel(tp=2), layers=[0])


def _section(text: str, start: str, stop: str | None) -> str:
    lines = text.splitlines()
    a = lines.index(start)
    b = lines.index(stop) if stop else len(lines)
    return "\n".join(lines[a:b])


def test_qkv_text_faithful_s1_d2(tiny_result):
    """qkv s=1 -> d=2: mcore rows [Q0 Q1 K0 V0 Q2 Q3 K1 V1] cut as if HF-ordered."""
    text = layout_text(layout_diagram(tiny_result, QKV))
    assert text.splitlines()[0] == (f"layout {QKV} [16, 8] (qkv): tiny, src tp1 -> dst tp2")
    assert _section(text, "source", "steps") == "\n".join([
        "source",
        "  src pp0 tp0 (rank 0) [16, 8]",
        "    rows 0-1 cols 0-7: Q head 0 [q0] from rank 0 ok",
        "    rows 2-3 cols 0-7: Q head 1 [q1] from rank 0 ok",
        "    rows 4-5 cols 0-7: K head 0 [k0] from rank 0 ok",
        "    rows 6-7 cols 0-7: V head 0 [v0] from rank 0 ok",
        "    rows 8-9 cols 0-7: Q head 2 [q2] from rank 0 ok",
        "    rows 10-11 cols 0-7: Q head 3 [q3] from rank 0 ok",
        "    rows 12-13 cols 0-7: K head 1 [k1] from rank 0 ok",
        "    rows 14-15 cols 0-7: V head 1 [v1] from rank 0 ok",
    ])  # fmt: skip
    assert _section(text, "destination", None) == "\n".join([
        "destination",
        "  dst pp0 tp0 (rank 1) [8, 8]",
        "    rows 0-1 cols 0-7: Q head 0 [q0] from rank 0 ok",
        "    rows 2-3 cols 0-7: Q head 1 [q1] from rank 0 ok",
        "    rows 4-5 cols 0-7: Q head 2 [q2] from rank 0 wrong: holds Q head 2, expected K head 0",
        "    rows 6-7 cols 0-7: K head 1 [k1] from rank 0 wrong: holds K head 1, expected V head 0",
        "  dst pp0 tp1 (rank 2) [8, 8]",
        "    rows 0-1 cols 0-7: K head 0 [k0] from rank 0 wrong: holds K head 0, expected Q head 2",
        "    rows 2-3 cols 0-7: V head 0 [v0] from rank 0 wrong: holds V head 0, expected Q head 3",
        "    rows 4-5 cols 0-7: Q head 3 [q3] from rank 0 wrong: holds Q head 3, expected K head 1",
        "    rows 6-7 cols 0-7: V head 1 [v1] from rank 0 ok",
    ])  # fmt: skip


def test_o_proj_text_faithful_s1_d2(tiny_result):
    """o_proj [8, 8] -> two [8, 4]: a flat chunk, so local row i holds global row i//2."""
    d = layout_diagram(tiny_result, O_PROJ, check(tiny_result))
    text = layout_text(d)
    # Source: one [8, 8] shard, one column run per head.
    assert _section(text, "source", "steps").splitlines()[2:] == [
        f"    rows 0-7 cols {2 * h}-{2 * h + 1}: head {h} [o{h}] from rank 0 ok" for h in range(4)
    ]
    # Destination tp0: row i holds global row i//2, cols 4*(i%2).. -> heads 2*(i%2), +1.
    expected = ["destination", "  dst pp0 tp0 (rank 1) [8, 4]"]
    for tp in (0, 1):
        if tp == 1:
            expected.append("  dst pp0 tp1 (rank 2) [8, 4]")
        for i in range(8):
            flat_row = 8 * tp + i
            g_row, first = flat_row // 2, 2 * (flat_row % 2)
            for j in range(2):
                held, want = first + j, 2 * tp + j
                ok = (held, g_row) == (want, i)
                line = f"    rows {i} cols {2 * j}-{2 * j + 1}: head {held} [o{held}] from rank 0 "
                line += (
                    "ok"
                    if ok
                    else (f"wrong: holds head {held} row {g_row}, expected head {want} row {i}")
                )
                expected.append(line)
    assert _section(text, "destination", "check") == "\n".join(expected)
    assert d.wrong_count == 28
    assert "check" in text.splitlines()
    assert d.problems[0].startswith("dst rank 1 (tp 0), rows 1-7: holds")


def test_unwritten_norm_marked(tiny_result):
    """The faithful port fails on the norm for s=1 -> d=2: destination panels say unwritten."""
    d = layout_diagram(tiny_result, "model.model.layers.0.input_layernorm.weight")
    assert [r.status for p in d.dst for r in p.rects] == ["unwritten", "unwritten"]
    assert d.dst[0].rects[0].col1 == 8 and d.dst[0].grid == (1, 8)


def test_replicated_norm_flag(tiny_spec):
    """Norms held by every trainer rank are flagged replicated; sharded qkv is not."""
    result = run_sync(tiny_spec, Parallel(tp=2), Parallel(tp=2), layers=[0])
    norm = layout_diagram(result, "model.model.layers.0.input_layernorm.weight")
    qkv = layout_diagram(result, QKV)
    assert all(r.replicated for p in norm.src for r in p.rects)
    assert not any(r.replicated for p in qkv.src for r in p.rects)
    assert [r.src_rank for r in qkv.dst[1].rects] == [1, 1, 1, 1]
    assert qkv.wrong_count == 0


def test_transfer_text(tiny_result):
    """s=1 -> d=2: rank 0 sends all 4 synced params (384 float64) to 1, which forwards half to 2."""
    assert transfer_text(transfer_diagram(tiny_result)) == "\n".join([
        "transfer tiny: src tp1 -> dst tp2",
        "source ranks: rank 0: pp0 tp0",
        "destination ranks: rank 1: pp0 tp0, rank 2: pp0 tp1",
        "stage1: 0 -> 1  3.0 KiB, 4 params",
        "stage2: 1 -> 2  1.5 KiB, 4 params",
    ])  # fmt: skip


def test_expert_bands_capped():
    """A 60-expert w13 destination draws 8 bands and says how many experts it left out."""
    from syncviz import preset

    src, dst = Parallel(tp=2, ep=2), Parallel(tp=4)
    spec = preset("qwen1.5-moe-a2.7b").scaled(src, dst)
    result = run_sync(spec, src, dst, layers=[0])
    key = next(p.key for p in result.plan.layout.params if "w13" in p.key)
    panel = layout_diagram(result, key).dst[0]
    assert panel.bands == 8 and panel.notes[0] == f"... {spec.num_experts - 8} more experts"
    assert panel.grid[0] == 8 * panel.shape[1]
    assert {r.family for r in panel.rects} <= {"expert", "unwritten"}


def _pixel_rgb(png, xy):
    x, y = xy
    return tuple(float(c) for c in png[int(y), int(x), :3])


def test_png_pixel_is_family_colour(tiny_result, tmp_path):
    """The PNG pixel inside the head-0 rect (shade 0) has the o-family colour; K head 0 is k."""
    d = layout_diagram(tiny_result, O_PROJ)
    fig = render(d)
    png = mpimg.imread(fig.save(tmp_path / "o.png"))
    head0 = d.src[0].rects[0]
    assert (head0.label, head0.shade) == ("head 0", 0)
    want = mcolors.to_rgb(FAMILY_COLORS["o"])
    assert _pixel_rgb(png, fig.rect_pixel(head0, 0.5, 0.2)) == pytest.approx(want, abs=0.02)
    qkv = layout_diagram(tiny_result, QKV)
    fig = render(qkv)
    png = mpimg.imread(fig.save(tmp_path / "q.png"))
    k0 = qkv.src[0].rects[2]
    assert k0.label == "K head 0"
    got = _pixel_rgb(png, fig.rect_pixel(k0, 0.15, 0.5))
    assert got == pytest.approx(mcolors.to_rgb(FAMILY_COLORS["k"]), abs=0.02)


def test_svg_and_transfer_save(tiny_result, tmp_path):
    """SVG output is an svg document; the transfer map saves a PNG; a bad suffix is refused."""
    from syncviz.errors import SyncvizError

    path = render(layout_diagram(tiny_result, QKV)).save(tmp_path / "q.svg")
    assert "<svg" in path.read_text()[:500]
    fig = render(transfer_diagram(tiny_result))
    assert mpimg.imread(fig.save(tmp_path / "t.png")).shape[0] > 100
    assert fig._repr_png_()[:4] == b"\x89PNG"
    with pytest.raises(SyncvizError, match="suffix"):
        fig.save(tmp_path / "t.jpg")


def test_render_main_writes_file(tmp_path, capsys):
    """`render --view layout` on a preset writes the PNG and prints its path."""
    parser = argparse.ArgumentParser()
    render_configure(parser)
    out = tmp_path / "qkv.png"
    args = parser.parse_args(
        ["--preset", "llama3-8b", "--src-tp", "2", "--dst-tp", "4", "--param", "qkv_proj",
         "-o", str(out)]
    )  # fmt: skip
    assert render_main(args) == 0
    assert out.exists() and capsys.readouterr().out.strip() == str(out)


def test_scattered_wrong_tensor_is_drawn_by_status_not_left_blank():
    """llama3-8b o_proj s=1 -> d=2 (flat chunks): every vLLM element is covered by a drawn rect."""
    from syncviz import Parallel, preset
    from syncviz.diagram import layout_diagram
    from syncviz.run.inprocess import run_sync

    result = run_sync(preset("llama3-8b").scaled(), Parallel(tp=1), Parallel(tp=2), layers=[0])
    diagram = layout_diagram(result, "model.model.layers.0.self_attn.o_proj.weight")
    for panel in diagram.dst:
        covered = sum((r.row1 - r.row0) * (r.col1 - r.col0) for r in panel.rects)
        assert covered == panel.grid[0] * panel.grid[1]
        assert any("drawn by status" in note for note in panel.notes)
        assert {r.status for r in panel.rects} >= {"wrong"}
