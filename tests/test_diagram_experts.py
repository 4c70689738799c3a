"""The expert view: before/after tables of routed experts, aggregation, caps, PNG colours."""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mcolors
import matplotlib.image as mpimg
import pytest

from syncviz import Parallel, preset
from syncviz.cli.render import render_configure, render_main
from syncviz.diagram.experts import expert_diagram, expert_text, slice_cell
from syncviz.diagram.mpl import OK_FACE, UNWRITTEN_COLOR, rank_color, render
from syncviz.errors import SyncvizError
from syncviz.oracle import model_layout
from syncviz.run.inprocess import run_sync
from syncviz.spec import ModelSpec

QWEN = ModelSpec(
    name="tiny",
    family="qwen2-moe",
    num_layers=1,
    hidden_size=8,
    num_attention_heads=4,
    num_query_groups=2,
    ffn_hidden_size=8,
    vocab_size=64,
    qkv_bias=True,
    num_experts=4,
    moe_ffn_hidden_size=4,
    shared_expert_ffn_hidden_size=8,
    shared_expert_gate=True,
)
MIXTRAL = ModelSpec("tiny", "mixtral", 1, 8, 4, 2, 8, 64, num_experts=4, moe_ffn_hidden_size=4)
QWEN_W13 = "model.model.layers.0.mlp.experts.w13_weight"
QWEN_W2 = "model.model.layers.0.mlp.experts.w2_weight"
MIXTRAL_W13 = "model.model.layers.0.block_sparse_moe.experts.w13_weight"

# HEP: 4 experts over ep*tp = 2 trainer ranks, rank 0 (tp0) holds experts 0-1 whole and
# rank 1 (tp1) experts 2-3; each of the 4 vLLM ranks needs a quarter of every expert's
# gate and up rows (w13) or down columns (w2), and both synchronizers deliver them.
# moe ffn 4 over 4 vLLM ranks: rank j holds gate row j and up row j (w13), down col j (w2).
QWEN_SLICES = {
    "experts_w13": " | ".join(f"ok: gate row {j}, up row {j}" for j in range(4)),
    "experts_w2": " | ".join(f"ok: col {j}" for j in range(4)),
}


def _qwen_tables(kind: str) -> list[str]:
    return [
        "before (trainer ranks): rank 0 tp0 ep0 | rank 1 tp1 ep0",
        "  experts 0-1 (2, all ok): whole | -",
        "  experts 2-3 (2, all ok): - | whole",
        "after (vLLM ranks): rank 2 tp0 | rank 3 tp1 | rank 4 tp2 | rank 5 tp3",
        f"  experts 0-1 (2, all ok): {QWEN_SLICES[kind]}",
        f"  experts 2-3 (2, all ok): {QWEN_SLICES[kind]}",
        "routed experts exchanged by allgather among trainer ranks 0, 1",
    ]


@pytest.mark.parametrize("synchronizer", ["chatlearn", "corrected"])
@pytest.mark.parametrize(
    ("key", "shape", "kind"),
    [(QWEN_W13, "[4, 8, 8]", "experts_w13"), (QWEN_W2, "[4, 8, 4]", "experts_w2")],
)
def test_tiny_qwen_hep_s2_d4(synchronizer, key, shape, kind):
    """qwen2-moe s=2 -> d=4: whole experts split 0-1 | 2-3 before, every slice ok after."""
    result = run_sync(QWEN, Parallel(tp=2), Parallel(tp=4), synchronizer=synchronizer, layers=[0])
    text = expert_text(expert_diagram(result, key))
    assert text == "\n".join(
        [f"experts {key} {shape} ({kind}): tiny, src tp2 -> dst tp4", *_qwen_tables(kind)]
    )


@pytest.mark.parametrize(
    ("synchronizer", "status"), [("chatlearn", "unwritten"), ("corrected", "ok")]
)
def test_tiny_mixtral_tp_sharded_s2_d4(synchronizer, status):
    """mixtral s=2 -> d=4: each trainer rank holds half of every expert; faithful writes none;
    corrected gives vLLM rank j gate row j and up row j of every expert (moe ffn 4)."""
    after = [status] * 4 if status == "unwritten" else QWEN_SLICES["experts_w13"].split(" | ")
    result = run_sync(
        MIXTRAL, Parallel(tp=2), Parallel(tp=4), synchronizer=synchronizer, layers=[0]
    )
    assert expert_text(expert_diagram(result, MIXTRAL_W13)) == "\n".join([
        f"experts {MIXTRAL_W13} [4, 8, 8] (experts_w13): tiny, src tp2 -> dst tp4",
        "before (trainer ranks): rank 0 tp0 ep0 | rank 1 tp1 ep0",
        f"  experts 0-3 (4, all {status}): 1/2 | 1/2",
        "after (vLLM ranks): rank 2 tp0 | rank 3 tp1 | rank 4 tp2 | rank 5 tp3",
        f"  experts 0-3 (4, all {status}): " + " | ".join(after),
        "routed experts exchanged by allgather among trainer ranks 0, 1",
    ])  # fmt: skip


@pytest.fixture(scope="module")
def mixtral_w13():
    layout = model_layout(MIXTRAL, Parallel(tp=1), Parallel(tp=1), layers=[0])
    param = layout.param(MIXTRAL_W13)
    return param, param.dst[0].index.ids()  # [4 experts, 8 rows (gate 0-3, up 4-7), 8 cols]


def test_slice_cell_words(mixtral_w13):
    """Hand-made slices: another expert's rows, shuffled rows, holes, foreign data."""
    param, ids = mixtral_w13
    want = ids[0, 0:4]  # expert 0 gate rows 0-3
    assert slice_cell(param, 7, want.clone(), want).status == "ok"
    wrong = slice_cell(param, 7, ids[3, 4:8], want)
    assert (wrong.status, wrong.text, wrong.rank) == (
        "wrong",
        "holds expert 3 up",
        7,
    )  # the whole up block
    two = slice_cell(param, 7, ids[1, 2:6], want).text
    assert two == "holds expert 1 gate rows 2-3, up rows 0-1"
    assert slice_cell(param, 7, want.flip(0), want).text == "right elements, wrong places"
    holes = want.clone()
    holes[1] = -2
    assert (slice_cell(param, 7, holes, want).text) == "8 of 32 unwritten"
    assert slice_cell(param, 7, holes * 0 - 2, want).key == ("unwritten", "")
    foreign = want.clone()
    foreign[0, 0] = -3
    assert slice_cell(param, 7, foreign, want).text == "holds data of another parameter"


@pytest.mark.parametrize("n", [64, 128, 256])
def test_many_experts_aggregate_with_exact_counts(n):
    """n experts over 4 HEP trainer ranks (tp2 ep2) -> vLLM tp4: four rows of n/4 whole
    experts each, every vLLM rank holding gate row j and up row j of every expert."""
    spec = ModelSpec("m", "qwen2-moe", 1, 8, 4, 2, 8, 64, qkv_bias=True, num_experts=n,
                     moe_ffn_hidden_size=4, shared_expert_ffn_hidden_size=8,
                     shared_expert_gate=True)  # fmt: skip
    result = run_sync(spec, Parallel(tp=2, ep=2), Parallel(tp=4), layers=[0])
    d = expert_diagram(result, QWEN_W13)
    q = n // 4
    labels = [f"experts {k * q}-{(k + 1) * q - 1} ({q}, all ok)" for k in range(4)]
    assert [r.label for r in d.rows] == labels
    assert [[c.text for c in r.before] for r in d.rows] == [
        ["whole" if j == k else "" for j in range(4)] for k in range(4)
    ]
    slices = [f"gate row {j}, up row {j}" for j in range(4)]
    assert all([c.text for c in r.after] == slices for r in d.rows)
    assert d.notes == ["routed experts exchanged by allgather among trainer ranks 0, 1, 2, 3"]


def test_64_expert_preset_capped_rows_counted():
    """qwen2-57b-a14b s=2 -> d=4, rows capped at 1: the note counts the 32 experts left out."""
    src, dst = Parallel(tp=2), Parallel(tp=4)
    result = run_sync(preset("qwen2-57b-a14b").scaled(src, dst), src, dst, layers=[0])
    d = expert_diagram(result, QWEN_W13)
    assert [r.label for r in d.rows] == ["experts 0-31 (32, all ok)", "experts 32-63 (32, all ok)"]
    capped = expert_diagram(result, QWEN_W13, max_rows=1)
    assert capped.notes[-1] == "... 32 more experts (all ok)"


def test_tp16_columns_capped():
    """s=2 -> d=16: the after table shows 8 vLLM ranks and counts the 8 left out."""
    src, dst = Parallel(tp=2), Parallel(tp=16)
    result = run_sync(preset("qwen1.5-moe-a2.7b").scaled(src, dst), src, dst, layers=[0])
    d = expert_diagram(result, QWEN_W13)
    assert [c.world for c in d.dst] == list(range(2, 10))
    assert all(len(r.after) == 8 for r in d.rows)
    assert d.notes[1:] == ["... 8 more vLLM ranks"]
    assert d.rows[0].label == "experts 0-29 (30, all ok)"


def test_not_an_expert_param():
    """A dense parameter is refused with the rule and a fix."""
    result = run_sync(QWEN, Parallel(tp=1), Parallel(tp=1), layers=[0])
    with pytest.raises(SyncvizError, match="not a routed-expert tensor"):
        expert_diagram(result, "model.model.layers.0.self_attn.o_proj.weight")


def _pixel_rgb(png, xy):
    x, y = xy
    return tuple(float(c) for c in png[int(y), int(x), :3])


def test_png_cell_colours(tmp_path):
    """Before cells have the holder's rank colour, ok cells pale indigo, unwritten grey."""
    result = run_sync(QWEN, Parallel(tp=2), Parallel(tp=4), layers=[0])
    d = expert_diagram(result, QWEN_W13)
    fig = render(d)
    png = mpimg.imread(fig.save(tmp_path / "e.png"))
    held = d.rows[1].before[1]  # experts 2-3 on rank 1
    assert (held.rank, held.status) == (1, "whole")
    got = _pixel_rgb(png, fig.rect_pixel(held, 0.12, 0.5))
    assert got == pytest.approx(mcolors.to_rgb(rank_color(1)), abs=0.02)
    empty = d.rows[1].before[0]
    assert _pixel_rgb(png, fig.rect_pixel(empty, 0.5, 0.5)) == pytest.approx((1, 1, 1), abs=0.02)
    ok = d.rows[0].after[3]
    got = _pixel_rgb(png, fig.rect_pixel(ok, 0.12, 0.5))
    assert got == pytest.approx(mcolors.to_rgb(OK_FACE), abs=0.02)
    faithful = run_sync(MIXTRAL, Parallel(tp=2), Parallel(tp=4), layers=[0])
    dm = expert_diagram(faithful, MIXTRAL_W13)
    fig = render(dm)
    png = mpimg.imread(fig.save(tmp_path / "m.png"))
    gap = dm.rows[0].after[0]
    got = _pixel_rgb(png, fig.rect_pixel(gap, 0.1, 0.5))
    assert got == pytest.approx(mcolors.to_rgb(UNWRITTEN_COLOR), abs=0.02)


def test_render_experts_view(tmp_path, capsys):
    """`render --view experts` draws the expert view; --param w2 picks w2; dense models refuse."""
    parser = argparse.ArgumentParser()
    render_configure(parser)
    out = tmp_path / "w2.png"
    args = parser.parse_args(
        ["--preset", "qwen1.5-moe-a2.7b", "--src-tp", "2", "--dst-tp", "4", "--view", "experts",
         "--param", "w2", "-o", str(out)]
    )  # fmt: skip
    assert render_main(args) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert mpimg.imread(out).shape[0] > 100
    args = parser.parse_args(["--preset", "llama3-8b", "--view", "experts", "-o", str(out)])
    with pytest.raises(SyncvizError, match="no routed experts"):
        render_main(args)


def _text_sizes(fig) -> list[float]:
    from matplotlib.text import Text

    return [t.get_fontsize() for t in fig.fig.findobj(Text) if t.get_text()]


@pytest.mark.parametrize(
    ("name", "dst_tp"),
    [("qwen2-57b-a14b", 4), ("qwen1.5-moe-a2.7b", 4), ("qwen1.5-moe-a2.7b", 8),
     ("qwen1.5-moe-a2.7b", 16)],
)  # fmt: skip
def test_render_experts_png_fits_a_notebook_cell(tmp_path, name, dst_tp):
    """`render --view experts`, tp2 ep2 -> tp 4/8/16 (qwen2-57b-a14b's 28 heads allow only
    d <= 4, so 8 and 16 use qwen1.5-moe-a2.7b): the PNG is at most 1100 px wide, every shown
    vLLM rank has its column of cells, and no text is below 9 pt."""
    parser = argparse.ArgumentParser()
    render_configure(parser)
    out = tmp_path / f"e{dst_tp}.png"
    args = parser.parse_args(
        ["--preset", name, "--src-tp", "2", "--src-ep", "2",
         "--dst-tp", str(dst_tp), "--view", "experts", "-o", str(out)]
    )  # fmt: skip
    assert render_main(args) == 0
    assert mpimg.imread(out).shape[1] <= 1100
    src, dst = Parallel(tp=2, ep=2), Parallel(tp=dst_tp)
    result = run_sync(preset(name).scaled(src, dst), src, dst, layers=[0])
    d = expert_diagram(result, QWEN_W13)
    fig = render(d)
    assert fig.size_px[0] <= 1100 and min(_text_sizes(fig)) >= 9
    xs = sorted({round(fig.rect_pixel(c)[0]) for c in d.rows[0].after})
    assert len(xs) == min(dst_tp, 8)
    assert all(0 < x < 1100 for x in xs)


def test_render_experts_wraps_any_rank_count():
    """10 trainer and 16 vLLM columns (no cap): still <= 1100 px wide, text >= 9 pt, and each
    vLLM cell sits in a separate place inside the figure."""
    src, dst = Parallel(tp=2, ep=5), Parallel(tp=16)
    result = run_sync(preset("qwen1.5-moe-a2.7b").scaled(src, dst), src, dst, layers=[0])
    d = expert_diagram(result, QWEN_W13, max_columns=16)
    assert (len(d.src), len(d.dst)) == (10, 16)
    fig = render(d)
    assert fig.size_px[0] <= 1100 and min(_text_sizes(fig)) >= 9
    spots = {tuple(round(v) for v in fig.rect_pixel(c)) for c in d.rows[0].after}
    assert len(spots) == 16
    assert all(0 < x < fig.size_px[0] and 0 < y < fig.size_px[1] for x, y in spots)


# gpt-oss's fc1: 2 experts, moe ffn 4 over 2 vLLM ranks; rank j holds gate rows 2j-2j+1
# and up rows 2j-2j+1 of each expert stored g, u, g, u (vLLM's interleaved w13).
GPT_OSS = ModelSpec(
    "tiny", "gpt-oss", 1, 8, 4, 2, 8, 64, head_dim=2, num_experts=2, moe_ffn_hidden_size=4
)


@pytest.mark.parametrize("provenance", ["materialized", "symbolic"])
def test_interleaved_experts_say_so(provenance):
    """gpt-oss's w13 slices read "gate/up rows 2-3, interleaved"; Mixtral's stay two runs."""
    result = run_sync(
        GPT_OSS, Parallel(tp=1), Parallel(tp=2), synchronizer="corrected", layers=[0],
        provenance=provenance,
    )  # fmt: skip
    d = expert_diagram(result, "model.model.layers.0.mlp.experts.w13_weight")
    assert [[c.text for c in row.after] for row in d.rows] == [
        ["gate/up rows 0-1, interleaved", "gate/up rows 2-3, interleaved"]
    ]
    result = run_sync(
        MIXTRAL, Parallel(tp=1), Parallel(tp=2), synchronizer="corrected", layers=[0],
        provenance=provenance,
    )  # fmt: skip
    d = expert_diagram(result, MIXTRAL_W13)
    assert [c.text for c in d.rows[0].after] == ["gate rows 0-1, up rows 0-1",
                                                 "gate rows 2-3, up rows 2-3"]  # fmt: skip


def test_dst_ep_columns_name_the_ep_rank():
    """Under destination EP 2 (E=4, linear) the after columns read "rank 1 tp0 ep0",
    "rank 2 tp1 ep1", each holding its two experts whole."""
    result = run_sync(QWEN, Parallel(tp=1), Parallel(tp=2, ep=2), synchronizer="corrected")
    d = expert_diagram(result, QWEN_W13)
    assert [c.label for c in d.dst] == ["rank 1 tp0 ep0", "rank 2 tp1 ep1"]
    assert [(r.first, r.last, [c.status for c in r.after]) for r in d.rows] == [
        (0, 1, ["ok", "none"]),
        (2, 3, ["none", "ok"]),
    ]


def test_interleaved_slot_of_many_rows_read_from_its_map(monkeypatch):
    """An interleaved fc1 slot of 512 one-row regions (too many pairs to overlay) that
    holds exactly the oracle's regions is judged ok from its map, never read per element,
    its boxes taken from the oracle's pieces (no map read back per slot)."""
    import syncviz.diagram.experts as experts

    def no_materializing(*args):
        raise AssertionError("a slot was read element by element")

    read_back = experts.map_pieces

    def whole_maps_only(region_map, *args, **kw):
        assert region_map.shape[0] != 1, "a slot's map was read back"
        return read_back(region_map, *args, **kw)

    spec = ModelSpec(
        "t", "gpt-oss", 1, 64, 4, 2, 8, 64, head_dim=16, num_experts=2, moe_ffn_hidden_size=1024
    )
    result = run_sync(
        spec, Parallel(tp=1), Parallel(tp=2), synchronizer="corrected", layers=[0],
        provenance="symbolic",
    )  # fmt: skip
    monkeypatch.setattr(experts, "_materialized_cell", no_materializing)
    monkeypatch.setattr(experts, "map_pieces", whole_maps_only)
    d = expert_diagram(result, "model.model.layers.0.mlp.experts.w13_weight")
    assert [(c.status, c.text) for c in d.rows[0].after] == [
        ("ok", "gate/up rows 0-511, interleaved"),
        ("ok", "gate/up rows 512-1023, interleaved"),
    ]
    assert (d.rows[0].first, d.rows[0].last) == (0, 1)
