"""The explorer widget: builds, redraws, explains bad input inline, escapes names, and
tells a block's journey (hand-worked tiny GQA case); ``import syncviz`` stays widget-free."""

from __future__ import annotations

import html
import subprocess
import sys

import pytest

from syncviz import Parallel
from syncviz.spec import ModelSpec
from syncviz.sync.megatron_vllm import MegatronVllmLlamaSync
from syncviz.widgets.explorer import Explorer  # ipywidgets is a hard dependency

QKV = "model.model.layers.0.self_attn.qkv_proj.weight"
O_PROJ = "model.model.layers.0.self_attn.o_proj.weight"
# hidden 8, heads 4, kv groups 2, head_dim 2: qkv is [Q0 Q1 Q2 Q3 K0 K1 V0 V1] x 2 rows.


@pytest.fixture(scope="module")
def tiny(tiny_spec) -> Explorer:
    return Explorer(spec=tiny_spec, src=Parallel(tp=1), dst=Parallel(tp=2), scaled=False)


def test_builds_for_a_preset():
    """A preset gives a status line, parameters grouped by layer, and a PNG figure."""
    ex = Explorer("llama3-8b", Parallel(tp=2), Parallel(tp=4), scaled=True)
    assert ex.message.value == ""
    assert "llama3-8b (scaled)" in ex.status.value
    labels = [label for label, _ in ex.param.options]
    assert labels == [
        "ERROR · layer 0 · input_layernorm.weight (input_norm)",
        "ERROR · layer 0 · self_attn.qkv_proj.weight (qkv)",
        "WRONG · layer 0 · self_attn.o_proj.weight (o_proj)",
        "ERROR · layer 0 · post_attention_layernorm.weight (post_attention_norm)",
        "OK · layer 0 · mlp.gate_up_proj.weight (gate_up)",
        "OK · layer 0 · mlp.down_proj.weight (down)",
    ]
    assert ex.param.value.endswith("o_proj.weight")  # it opens on the first WRONG parameter
    assert ex.image.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert ex.widget is ex


def test_changing_parameter_changes_figure(tiny):
    """Picking another parameter redraws: different PNG bytes, new steps and blocks."""
    tiny.param.value = QKV
    qkv_png = tiny.image.value
    qkv_blocks = [label for label, _ in tiny.block.options]
    tiny.param.value = O_PROJ
    assert tiny.image.value != qkv_png
    assert qkv_blocks == [
        "Q head 0", "Q head 1", "Q head 2", "Q head 3", "K head 0", "K head 1", "V head 0",
        "V head 1",
    ]  # fmt: skip
    tiny.param.value = QKV
    assert tiny.image.value == qkv_png  # the cached picture


def test_step_slider_walks_ops(tiny):
    """Step 2 of the qkv regroup is the getitem taking Q heads 0-1 (trainer rows 0-3, which
    land at vLLM tp 0 rows 0-3), said by blocks and rank names; its frame is drawn."""
    from syncviz.diagram import layout_diagram
    from syncviz.diagram.pil import frame_png

    tiny.param.value = QKV
    base = tiny.image.value
    tiny.step.value = 2
    assert "getitem" in tiny.step_text.value
    assert (
        "carries Q heads 0-1<br>reads trainer tp 0 (rank 0) rows 0-3"
        " -&gt; writes vLLM tp 0 (rank 1) rows 0-3<br>" in tiny.step_text.value
    )
    assert tiny.image.value is base  # the big picture stays; only the step strip is drawn
    d = layout_diagram(tiny.result, QKV, step=2)
    assert tiny.step_image.value == frame_png(d.frame)
    tiny.step.value = 0
    assert tiny.step_image.value == b""


def test_no_internal_tensor_ids_on_the_page(tiny):
    """Step words and journeys name tensors by their shapes: the trace's refs (#6) and the
    ids' dtype never show; every step of the qkv regroup and each block's journey."""
    import re

    tiny.param.value = QKV
    texts = []
    for i in range(1, tiny.step.max + 1):
        tiny.step.value = i
        texts.append(tiny.step_text.value)
    tiny.step.value = 2
    assert "getitem([8, 2, 8], [0, 2, None]) -&gt; [2, 2, 8]" in tiny.step_text.value
    tiny.step.value = 0
    for b in range(len(tiny.block.options)):
        tiny.block.value = b
        texts.append(tiny.journey.value)
    assert len(texts) > 6
    for text in texts:
        assert not re.search(r"#\d+\[|'#\d+'", text) and "float64" not in text, text


def test_filter_narrows_parameters(tiny):
    """Typing in the search box keeps only matching parameters."""
    tiny.filter.value = "o_proj"
    assert [key for _, key in tiny.param.options] == [O_PROJ]
    tiny.filter.value = ""
    assert len(tiny.param.options) == 6


def test_invalid_size_is_explained_inline():
    """dst tp 3 with src tp 2 shows the rule and the fix in the page; nothing raises."""
    ex = Explorer("llama3-8b", Parallel(tp=2), Parallel(tp=4), scaled=True)
    ex.dst_tp.value = 3
    assert "dst tp (3) must divide num_attention_heads (32): use 2, 4, 8, 16 or 32" in (
        ex.message.value
    )
    assert ex.image.value == b"" and ex.param.options == ()
    ex.dst_tp.value = 8
    assert ex.message.value == "" and ex.image.value


def test_names_are_html_escaped():
    """A model called '<b>bold</b>' is shown as text, never as markup."""
    spec = ModelSpec("<b>bold</b>", "llama-mcore", 1, 8, 4, 2, 8, 64, head_dim=2)
    ex = Explorer(spec=spec, src=Parallel(tp=1), dst=Parallel(tp=2), scaled=False)
    assert "&lt;b&gt;bold&lt;/b&gt;" in ex.status.value
    assert "<b>bold</b>" not in ex.status.value


def test_block_journey_hand_worked(tiny):
    """s=1 -> d=2: Q head 2 starts on src rank 0 rows 8-9, the faithful sync puts it on
    dst rank 1 (rows 4-5), but vLLM tp1 (rank 2) must hold it in rows 0-1: WRONG."""
    tiny.param.value = QKV
    tiny.block.value = 2  # Q head 2
    text = tiny.journey.value
    assert "Q head 2" in text
    assert "starts: trainer tp 0 (rank 0): rows 8-9 of" in text
    assert "getitem([8, 2, 8], [4, 5, None])" in text  # the op that picked it, by shapes
    assert "ends: vLLM tp 0 (rank 1): rows 4-5 of" in text
    assert "vLLM tp 1 (rank 2): rows 0-1" in text and "WRONG" in text
    tiny.block.value = 0  # Q head 0: src rank 0 rows 0-1 -> dst rank 1 rows 0-1, right
    assert "ends: vLLM tp 0 (rank 1): rows 0-1 of" in tiny.journey.value
    assert "right" in tiny.journey.value


def test_user_synchronizer_and_failures_inline(tiny_spec):
    """A user class is a choice; one that raises is reported inline, not raised."""

    class Broken(MegatronVllmLlamaSync):
        def regroup_params_to_sync(self, *args, **kwargs):
            raise RuntimeError("boom")

    ex = Explorer(
        spec=tiny_spec,
        src=Parallel(tp=1),
        dst=Parallel(tp=2),
        scaled=False,
        synchronizers={"mine": MegatronVllmLlamaSync, "broken": Broken},
    )
    ex.synchronizer.value = "mine"
    assert "synchronizer mine" in ex.status.value and ex.image.value
    ex.synchronizer.value = "broken"
    shown = ex.message.value + ex.status.value + ex.details.value
    assert "boom" in shown


def test_import_syncviz_loads_no_widgets():
    """``import syncviz`` (and the journey module) never imports ipywidgets or matplotlib."""
    code = (
        "import sys, syncviz, syncviz.journey, syncviz.widgets;"
        "print(sorted(m for m in ('ipywidgets', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_answers_run_on_one_thread_with_the_collector_paused(tiny, monkeypatch):
    """While the explorer answers (a hover here) torch has one intra-op thread and the cycle
    collector is off; after, both are as they were, also when the answer raised."""
    import gc
    import importlib

    import torch

    hover = importlib.import_module("syncviz.diagram.hover")  # the module the explorer reads
    seen = []

    def words(*args, **kwargs):
        seen.append((torch.get_num_threads(), gc.isenabled()))
        if len(seen) == 2:
            raise RuntimeError("a failing answer")
        return "the words"

    monkeypatch.setattr(hover, "cell_words", words)
    tiny.param.value = QKV
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        tiny.image.hover = ["vLLM holds", 2, 0, 1]
        assert tiny.image.words == "the words"
        assert (torch.get_num_threads(), gc.isenabled()) == (2, True)
        with pytest.raises(RuntimeError, match="a failing answer"):
            tiny.image.hover = ["vLLM holds", 2, 0, 2]
        assert (torch.get_num_threads(), gc.isenabled()) == (2, True)
    finally:
        torch.set_num_threads(threads)
    assert seen == [(1, False), (1, False)]


def test_hover_and_click_read_the_core(tiny):
    """Hovering vLLM tp1's first cell reads what it holds vs expects and where it came from;
    clicking it selects K head 0 (what it holds) and shows that block's journey."""
    tiny.param.value = QKV
    tiny.view.value = "layout"
    rank2 = next(p for p in tiny.image.panels if p["side"] == "vLLM holds" and p["rank"] == 2)
    assert rank2["cells"] == [8, 8] and rank2["box"][2] > rank2["box"][0]
    tiny.image.hover = ["vLLM holds", 2, 0, 3]
    assert tiny.image.words.startswith(
        "vLLM tp 1 (rank 2) row 0 col 3 holds K head 0 row 0 col 3,"
        " expected Q head 2 row 0 col 3: WRONG; came from trainer tp 0 (rank 0) row 4 col 3"
    )
    tiny.image.picked = ["vLLM holds", 2, 0, 3]
    assert tiny.block.label == "K head 0" and "journey of <b>K head 0</b>" in tiny.journey.value


def test_experts_view_draws_routed_experts():
    """The experts view draws a routed-expert tensor (a PNG without hover panels)."""
    ex = Explorer("qwen1.5-moe-a2.7b", Parallel(tp=2), Parallel(tp=4), scaled=True)
    ex.view.value = "experts"
    assert ex.image.value[:4] == b"\x89PNG" and ex.image.panels == []


def test_real_sizes_run_symbolic_and_scaled_runs_are_estimated(tiny_spec, monkeypatch):
    """With 1000 bytes free, real sizes still run and draw (symbolic ids: pictures, steps and
    a block's journey read maps, so the journey of K head 0 is followed, not refused); the
    materialized downscale is refused inline with the fix; freed memory is asked again."""
    import syncviz.run.memory
    from syncviz.provenance import SymbolicTensor

    monkeypatch.setattr(syncviz.run.memory, "available_bytes", lambda: 1000)
    ex = Explorer(spec=tiny_spec, src=Parallel(tp=1), dst=Parallel(tp=2), scaled=False)
    assert ex.message.value == "" and "MISMATCH" in ex.status.value
    assert all(isinstance(t, SymbolicTensor) for t in ex.result.dst_tensors[1].values())
    ex.param.value = QKV
    assert ex.image.value[:4] == b"\x89PNG" and ex.step.max > 0
    ex.block.value = 4  # K head 0
    assert "journey of <b>K head 0</b>" in ex.journey.value and "no journey" not in ex.journey.value
    assert ex.journey_image.value[:4] == b"\x89PNG"
    ex.scaled.value = True
    shown = ex.message.value
    assert "this run needs ~" in shown and "the machine has 1000 B available" in shown
    assert "pick one layer, or untick the downscale" in shown and "Traceback" not in shown
    assert ex.image.value == b"" and ex.busy.value == ""
    monkeypatch.undo()
    ex.synchronizer.value = "corrected"  # any change asks again: a refusal is not kept
    assert ex.message.value == "" and "(scaled)" in ex.status.value
    assert all(isinstance(t, SymbolicTensor) for t in ex.result.dst_tensors[1].values())
    ex.scaled.value = False
    ex.param.value = QKV
    assert ex.image.value[:4] == b"\x89PNG" and ex.step.max > 0


def test_steps_are_replayed_only_when_asked(tiny, monkeypatch):
    """A first view replays no steps, yet the slider's range is the step list's length;
    moving the slider replays that parameter once."""
    import syncviz.explorer_session as session
    from syncviz.journey import param_steps

    calls = []
    monkeypatch.setattr(session, "param_steps", lambda *a: calls.append(a) or param_steps(*a))
    tiny.session.forget()
    for key in (O_PROJ, QKV):
        tiny.param.value = key
        assert tiny.step.max == len(param_steps(tiny.result, key)) > 0
    assert calls == []
    tiny.step.value = 1
    tiny.step.value = 2
    assert [key for _, key in calls] == [QKV] and "step 2/" in tiny.step_text.value


def test_png_and_cached_text_match_pil():
    """The Explorer's PNG decodes to the picture's pixels, and text drawn by the
    mask-caching font (twice: the second time from the cache) is PIL's own text."""
    import io

    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    from syncviz.diagram.pil_layout import _font, png_bytes

    def drawn(font) -> np.ndarray:
        im = Image.new("RGB", (120, 40), "white")
        draw = ImageDraw.Draw(im)
        draw.text((60, 20), "Q head 17", fill="black", font=font, anchor="rm")
        draw.text((61, 21), "Q head 17", fill="#A0105A", font=font, anchor="rm")
        return np.asarray(im)

    plain = ImageFont.load_default(size=13)
    assert type(_font(13)) is not type(plain)
    want = drawn(plain)
    assert (want != 255).any()
    assert np.array_equal(drawn(_font(13)), want) and np.array_equal(drawn(_font(13)), want)
    im = Image.fromarray(want)
    back = Image.open(io.BytesIO(png_bytes(im)))
    assert np.array_equal(np.asarray(back), want)


def test_a_kind_drawn_in_one_layer_is_reused_in_the_next(monkeypatch):
    """All layers of a 3-layer model: layer 1's qkv holds what layer 0's does, so its picture
    is layer 0's diagram renamed, pixel for pixel what drawing layer 1 afresh gives."""
    import syncviz.diagram
    from syncviz.diagram.pil_layout import layout_png

    spec = ModelSpec("tiny3", "llama-mcore", 3, 8, 4, 2, 8, 64, head_dim=2)
    ex = Explorer(spec=spec, src=Parallel(tp=1), dst=Parallel(tp=2), scaled=True, layer=-1)
    ex.param.value = QKV
    drawn = []
    fresh = syncviz.diagram.layout_diagram
    monkeypatch.setattr(syncviz.diagram, "layout_diagram", lambda *a, **k: drawn.append(a[1]))
    layer1 = QKV.replace("layers.0", "layers.1")
    ex.param.value = layer1
    assert drawn == []
    want, panels = layout_png(fresh(ex.result, layer1, ex.report, steps=[], regions=False))
    assert ex.image.value == want and ex.image.panels == panels
    ex.image.hover = ["vLLM holds", 2, 0, 3]
    assert "holds K head 0 row 0 col 3, expected Q head 2 row 0 col 3: WRONG" in ex.image.words


def test_busy_line_while_a_run_goes(tiny_spec, monkeypatch):
    """While a real-size run goes the busy line names it, and it is cleared afterwards."""
    import syncviz.run.inprocess

    ex = Explorer(spec=tiny_spec, src=Parallel(tp=1), dst=Parallel(tp=2), scaled=False)
    seen = []
    run_sync = syncviz.run.inprocess.run_sync

    def watched(*args, **kwargs):
        seen.append((ex.busy.value, kwargs["provenance"]))
        return run_sync(*args, **kwargs)

    monkeypatch.setattr(syncviz.run.inprocess, "run_sync", watched)
    ex.synchronizer.value = "corrected"
    assert len(seen) == 1 and seen[0][1] == "symbolic"
    assert "running the sync and the check at real sizes (symbolic ids)" in seen[0][0]
    assert ex.busy.value == "" and "corrected" in ex.status.value


def test_default_sizes_are_one_constant(tiny_spec, monkeypatch):
    """Without ``scaled``, SCALED_DEFAULT decides: True draws the downscale, False runs the
    real sizes on symbolic ids (the same widget, the checkbox showing which)."""
    import syncviz.widgets.explorer as explorer
    from syncviz.provenance import SymbolicTensor

    for default in (True, False):
        monkeypatch.setattr(explorer, "SCALED_DEFAULT", default)
        ex = Explorer(spec=tiny_spec, src=Parallel(tp=1), dst=Parallel(tp=2))
        held = ex.result.dst_tensors[1].values()
        assert ex.scaled.value is default and ex.image.value[:4] == b"\x89PNG"
        assert ("(scaled)" in ex.status.value) is default
        assert all(isinstance(t, SymbolicTensor) for t in held)  # a result holds maps only


def test_real_size_hover_waits_for_the_slider_to_replay(tiny_spec, monkeypatch):
    """At real sizes a hover never starts the replay: it names the ops ("via steps")
    only once the step slider has replayed them; scaled runs name them at once."""
    import syncviz.explorer_session as session
    from syncviz.journey import param_steps

    calls = []
    monkeypatch.setattr(session, "param_steps", lambda *a: calls.append(a) or param_steps(*a))
    for scaled in (False, True):
        ex = Explorer(spec=tiny_spec, src=Parallel(tp=1), dst=Parallel(tp=2), scaled=scaled)
        ex.param.value = QKV
        panel = next(p for p in ex.image.panels if p["side"] == "vLLM holds" and p["rank"] == 2)
        ex.image.hover = [panel["side"], 2, 0, 3]
        assert ("via steps" in ex.image.words) is scaled and len(calls) == int(scaled)
        assert "came from trainer tp 0 (rank 0)" in ex.image.words
        if not scaled:
            ex.step.value = 1
            ex.image.hover = [panel["side"], 2, 0, 2]
            assert "via steps" in ex.image.words and len(calls) == 1
            calls.clear()


def test_a_step_that_cannot_be_drawn_is_said_in_words(tiny_spec, monkeypatch):
    """A step frame the diagram model refuses (e.g. a step tensor too fragmented to draw at
    real sizes) leaves the strip empty and says why beside it; the widget does not raise."""
    import syncviz.diagram.model
    from syncviz.errors import SyncvizError

    ex = Explorer(spec=tiny_spec, src=Parallel(tp=1), dst=Parallel(tp=2), scaled=False)
    ex.param.value = QKV

    def refuse(d, number, cell=None):
        raise SyncvizError("a tensor of shape [8] holds ids too fragmented to draw", fix="x")

    monkeypatch.setattr(syncviz.diagram.model, "frame", refuse)
    ex.step.value = 1
    assert ex.step_image.value == b""
    assert "step 1 not drawn: a tensor of shape [8] holds ids too fragmented" in ex.step_text.value
    monkeypatch.undo()
    ex.step.value = 2
    assert ex.step_image.value[:4] == b"\x89PNG"


def _widget_tree(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _widget_tree(child)


def test_views_offered_only_where_they_apply():
    """The experts view is offered for a MoE model only; a dense model offers layout and
    transfer, and switching to a MoE model keeps the chosen view where it still applies."""
    ex = Explorer("llama3-8b", Parallel(tp=2), Parallel(tp=4), scaled=True)
    assert ex.view.options == ("layout", "transfer")
    ex.view.value = "transfer"
    ex.model.value = "qwen1.5-moe-a2.7b"
    assert ex.view.options == ("layout", "experts", "transfer")
    assert ex.view.value == "transfer"


def test_layout_holds_still(tiny):
    """No ipywidgets Image anywhere (an empty one is a broken icon); the step frame and its
    words sit in a constant-height box after the picture; the busy line keeps its line."""
    from syncviz.widgets.picture import Picture, Still

    tree = list(_widget_tree(tiny))
    assert not [x for x in tree if type(x).__name__ == "Image"]
    children = list(tiny.children)
    assert children.index(tiny.step_box) == children.index(tiny.image) + 1
    assert tiny.step_box.layout.height.endswith("px")
    assert list(tiny.step_box.children) == [tiny.step_text, tiny.step_image]
    assert isinstance(tiny.image, Picture) and isinstance(tiny.step_image, Still)
    assert tiny.busy.layout.min_height == "22px"
    before = children.index(tiny.image)
    tiny.param.value = QKV
    tiny.step.value = 3
    assert tiny.step_image.value[:4] == b"\x89PNG"
    assert list(tiny.children).index(tiny.image) == before  # nothing inserted above it
    tiny.step.value = 0


def test_a_problem_leaves_words_not_an_empty_image():
    """Inputs that cannot be shown empty the picture and say why in its note."""
    ex = Explorer("llama3-8b", Parallel(tp=2), Parallel(tp=4), scaled=True)
    ex.dst_tp.value = 3
    assert ex.image.value == b"" and ex.image.note.startswith("no picture: dst tp (3)")
    assert ex.image.words == "" and ex.image.words_for == []


def test_words_for_every_panel_name_their_cell(tiny):
    """Hovering the first cell of each panel of o_proj gives words opening with that panel's
    title and element, tagged with the cell they are for; a new view clears them."""
    tiny.param.value = O_PROJ
    tiny.view.value = "layout"
    titles = {
        "trainer": "trainer tp 0 (rank 0)",
        "vLLM holds": "vLLM tp {} (rank {})",
        "vLLM expected": "vLLM tp {} (rank {})",
    }
    assert len(tiny.image.panels) == 5
    for panel in tiny.image.panels:
        side, rank = panel["side"], panel["rank"]
        ni, nj = panel["cells"]
        cell = [side, rank, ni - 1, nj - 1]
        tiny.image.hover = cell
        assert tiny.image.words_for == cell
        title = titles[side].format(rank - 1, rank)
        assert tiny.image.words.startswith(title + " row "), tiny.image.words
        if side != "trainer":
            assert ", expected " in tiny.image.words
    tiny.view.value = "transfer"
    assert tiny.image.words == "" and tiny.image.words_for == [] and tiny.image.panels == []
    tiny.view.value = "layout"


def test_an_unwritten_cell_says_only_that(tiny_spec):
    """tp2 -> tp4: the post-attention norm's regroup raises, so nothing is written; both
    vLLM sides say element 0 was never written and what it should hold, no origin or path."""
    ex = Explorer(spec=tiny_spec, src=Parallel(tp=2), dst=Parallel(tp=4), scaled=False)
    ex.param.value = "model.model.layers.0.post_attention_layernorm.weight"
    assert ex.param.label.startswith("ERROR")
    for side in ("vLLM holds", "vLLM expected"):
        ex.image.hover = [side, 2, 0, 0]
        assert ex.image.words == (
            "vLLM tp 0 (rank 2) element 0: never written"
            " (it should hold post-attention norm element 0)"
        )


def test_pictures_keep_9pt_text_in_a_970px_cell(tiny):
    """Shrunk to a 970 px cell, the layout picture, a step frame and the transfer map keep
    their smallest text at 12 px (9 pt) or more (PNG widths and font sizes as drawn)."""
    import io

    from matplotlib.text import Text
    from PIL import Image

    from syncviz.diagram import pil, pil_layout, render, transfer_diagram
    from syncviz.diagram.mpl import DPI

    def shown(px: float, width: float) -> float:
        return px * min(1.0, 970 / width)

    tiny.param.value = O_PROJ
    assert shown(pil_layout.FONT_PX, Image.open(io.BytesIO(tiny.image.value)).width) >= 12
    tiny.step.value = 1
    assert shown(pil.FONT_PX, Image.open(io.BytesIO(tiny.step_image.value)).width) >= 12
    tiny.step.value = 0
    fig = render(transfer_diagram(tiny.result)).fig
    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_text()]
    assert len(sizes) > 5
    assert shown(min(sizes) * DPI / 72, fig.get_figwidth() * DPI) >= 12


def test_journey_words_evenly_spaced_rows_as_a_range(tiny_spec):
    """tp2 -> tp4 o_proj [8, 8]: trainer tp0's [8, 4] shard (heads 0-1) is sent flat and
    halved; vLLM tp0 views its 16 ids as [8, 2], so row r holds shard row r//2, columns
    2(r%2)..: head 1 sits in rows 1, 3, 5, 7, worded as one range, where the oracle wants
    all of vLLM tp1's rows 0-7."""
    ex = Explorer(spec=tiny_spec, src=Parallel(tp=2), dst=Parallel(tp=4), scaled=False)
    ex.param.value = O_PROJ
    ex.block.value = 1
    assert ex.block.label == "head 1"
    text = html.unescape(ex.journey.value)
    assert f"ends: vLLM tp 0 (rank 2): rows 1-7 step 2 (every other row) of {O_PROJ}" in text
    assert "vLLM tp 1 (rank 3): rows 0-7" in text and "WRONG" in text


def test_busy_line_while_a_journey_is_followed(tiny_spec, monkeypatch):
    """Following a block's journey names it in the busy line while it runs, then clears it."""
    import syncviz.explorer_session as session

    ex = Explorer(spec=tiny_spec, src=Parallel(tp=1), dst=Parallel(tp=2), scaled=False)
    ex.param.value = QKV
    seen = []
    follow = session.block_journey

    def watched(*args):
        seen.append(ex.busy.value)
        return follow(*args)

    monkeypatch.setattr(session, "block_journey", watched)
    ex.block.value = 3
    assert len(seen) == 1 and "following the journey of Q head 3" in seen[0]
    assert ex.busy.value == "" and "journey of <b>Q head 3</b>" in ex.journey.value


def test_experts_view_fits_a_970px_cell():
    """qwen2-57b-a14b's experts view (4 trainer and 4 vLLM ranks) is drawn at most 960 px
    wide, so a 970 px cell shows its 9 pt text unshrunk (its figure alone is 1053 px)."""
    import io

    from PIL import Image

    ex = Explorer("qwen2-57b-a14b", Parallel(tp=2, ep=2), Parallel(tp=4), scaled=True)
    ex.view.value = "experts"
    assert ex.image.value[:4] == b"\x89PNG"
    assert Image.open(io.BytesIO(ex.image.value)).width <= 960
    from matplotlib.text import Text

    from syncviz.diagram.experts import expert_diagram
    from syncviz.explorer_session import expert_key, figure

    fig = figure(expert_diagram(ex.result, expert_key(ex.result, None))).fig
    assert fig.get_figwidth() * 100 <= 960
    assert min(t.get_fontsize() for t in fig.findobj(Text) if t.get_text()) >= 9


def test_the_details_box_names_ranks_as_check_does(tiny):
    """The tiny 1 -> 2 o_proj finding (the faithful port's flat halves: vLLM tp 0 holds heads
    0-3 rows 0-3 where heads 0-1 belong) reads in the details box as in ``check``'s text,
    line for line, never as the report's raw ``dst rank 1 (tp 0)``."""
    from syncviz.check import check

    tiny.param.value = O_PROJ
    text = check(tiny.result).text().splitlines()
    at = text.index(f"WRONG {O_PROJ}")
    lines = [line.strip() for line in text[at + 1 : at + 3]]
    assert lines == [
        "vLLM tp 0 (rank 1): columns 0-3 (heads 0-1): hold heads 0-3 rows 0-3, expected heads 0-1",
        "vLLM tp 1 (rank 2): columns 0-3 (heads 2-3): hold heads 0-3 rows 4-7, expected heads 2-3",
    ]
    assert all(html.escape(line) in tiny.details.value for line in lines)
    assert "dst rank" not in tiny.details.value
