"""The explorer widget: builds, redraws, explains bad input inline, escapes names, and
tells a block's journey (hand-worked tiny GQA case); ``import syncviz`` stays widget-free."""

from __future__ import annotations

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
    ex = Explorer("llama3-8b", Parallel(tp=2), Parallel(tp=4))
    assert ex.message.value == ""
    assert "llama3-8b (scaled)" in ex.status.value
    labels = [label for label, _ in ex.param.options]
    assert "layer 0 · self_attn.qkv_proj.weight (qkv)" in labels
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
    assert tiny.image.value == qkv_png  # cached picture, same overlay


def test_step_slider_walks_ops(tiny):
    """Step 2 of the qkv regroup is the getitem taking Q heads 0-1, highlighted in the figure."""
    tiny.param.value = QKV
    base = tiny.image.value
    tiny.step.value = 2
    assert "getitem" in tiny.step_text.value
    assert "carries Q head 0, Q head 1" in tiny.step_text.value
    assert tiny.image.value != base
    tiny.step.value = 0


def test_filter_narrows_parameters(tiny):
    """Typing in the search box keeps only matching parameters."""
    tiny.filter.value = "o_proj"
    assert [key for _, key in tiny.param.options] == [O_PROJ]
    tiny.filter.value = ""
    assert len(tiny.param.options) == 6


def test_invalid_size_is_explained_inline():
    """dst tp 3 with src tp 2 shows the rule and the fix in the page; nothing raises."""
    ex = Explorer("llama3-8b", Parallel(tp=2), Parallel(tp=4))
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
    assert "starts: src rank 0 (pp0 tp0): rows 8-9 of" in text
    assert "getitem(#6[8, 2, 8] float64, [4, 5, None])" in text  # the op that picked it
    assert "ends: dst rank 1 (pp0 tp0): rows 4-5 of" in text
    assert "dst rank 2 (pp0 tp1): rows 0-1" in text and "WRONG" in text
    tiny.block.value = 0  # Q head 0: src rank 0 rows 0-1 -> dst rank 1 rows 0-1, right
    assert "ends: dst rank 1 (pp0 tp0): rows 0-1 of" in tiny.journey.value
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
