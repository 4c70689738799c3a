"""The Explorer session without widgets: what it computes for a choice, what it offers,
what it caches, and what it says while it works (hand-worked tiny GQA case)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import syncviz.diagram
import syncviz.explorer_session as session_module
from syncviz import Parallel
from syncviz.explorer_session import ExplorerSession
from syncviz.journey import param_steps
from syncviz.spec import ModelSpec

QKV = "model.model.layers.0.self_attn.qkv_proj.weight"
O_PROJ = "model.model.layers.0.self_attn.o_proj.weight"
# hidden 8, heads 4, kv groups 2, head_dim 2: qkv is [Q0 Q1 Q2 Q3 K0 K1 V0 V1] x 2 rows.
MOE = ModelSpec("m", "qwen2-moe", 1, 8, 4, 2, 8, 64, qkv_bias=True, num_experts=4,
                moe_ffn_hidden_size=4, shared_expert_ffn_hidden_size=8,
                shared_expert_gate=True)  # fmt: skip


@pytest.fixture
def opened(tiny_spec) -> ExplorerSession:
    s = ExplorerSession()
    assert s.open(tiny_spec, Parallel(tp=1), Parallel(tp=2)) == ""
    return s


def test_the_session_module_loads_no_widgets():
    """``import syncviz.explorer_session`` imports neither ipywidgets nor matplotlib."""
    code = (
        "import sys, syncviz.explorer_session;"
        "print(sorted(m for m in ('ipywidgets', 'matplotlib', 'anywidget') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_choosing_a_parameter_draws_only_that_parameter(opened, monkeypatch):
    """Opening draws nothing; choosing qkv draws the qkv diagram alone, replays no steps
    (the step count is read from the trace) and follows no journey."""
    drawn, replayed, followed = [], [], []
    layout_diagram = syncviz.diagram.layout_diagram
    monkeypatch.setattr(
        syncviz.diagram,
        "layout_diagram",
        lambda *a, **k: drawn.append(a[1]) or layout_diagram(*a, **k),
    )
    monkeypatch.setattr(session_module, "param_steps", lambda *a: replayed.append(a) or [])
    monkeypatch.setattr(session_module, "block_journey", lambda *a: followed.append(a))
    opened.forget()
    assert drawn == []
    shown = opened.choose(QKV)
    assert drawn == [QKV] and replayed == [] and followed == []
    assert shown.picture.png[:4] == b"\x89PNG" and shown.picture.diagram.key == QKV
    assert shown.steps == len(param_steps(opened.result, QKV)) > 0
    assert shown.blocks == [
        "Q head 0", "Q head 1", "Q head 2", "Q head 3", "K head 0", "K head 1", "V head 0",
        "V head 1",
    ]  # fmt: skip
    assert opened.choose(QKV).picture is shown.picture and drawn == [QKV]  # cached


def test_views_offered_only_where_they_apply(tiny_spec):
    """A dense model offers layout and transfer; a model with routed experts adds experts;
    inputs that cannot be shown offer none."""
    s = ExplorerSession()
    s.open(tiny_spec, Parallel(tp=1), Parallel(tp=2))
    assert s.views() == ["layout", "transfer"]
    assert s.open(MOE, Parallel(tp=1), Parallel(tp=2)) == ""
    assert s.views() == ["layout", "experts", "transfer"]
    error = s.open(tiny_spec, Parallel(tp=1), Parallel(tp=3))
    assert error.startswith("dst tp (3) must divide num_attention_heads (4)")
    assert s.views() == [] and s.result is None and s.params() == []


def test_parameters_marked_and_filtered_and_the_first_wrong_one(opened):
    """tp1 -> tp2 with the faithful sync: every parameter of layer 0 is listed with its
    check mark; a filter keeps o_proj alone; the opening goes to the first WRONG one."""
    labels = [label for label, _ in opened.params()]
    assert labels == [
        "ERROR · layer 0 · input_layernorm.weight (input_norm)",
        "WRONG · layer 0 · self_attn.qkv_proj.weight (qkv)",
        "WRONG · layer 0 · self_attn.o_proj.weight (o_proj)",
        "ERROR · layer 0 · post_attention_layernorm.weight (post_attention_norm)",
        "OK · layer 0 · mlp.gate_up_proj.weight (gate_up)",
        "OK · layer 0 · mlp.down_proj.weight (down)",
    ]
    assert opened.params("O_PROJ") == [(labels[2], O_PROJ)]
    assert opened.first_bad() == QKV


def test_a_run_is_kept_and_said_while_it_goes(tiny_spec, monkeypatch):
    """The busy callback hears the run, then the picture, each cleared after; the same
    inputs again run nothing and say nothing."""
    import syncviz.run.inprocess

    said: list[str] = []
    runs = []
    run_sync = syncviz.run.inprocess.run_sync
    monkeypatch.setattr(
        syncviz.run.inprocess, "run_sync", lambda *a, **k: runs.append(a) or run_sync(*a, **k)
    )
    s = ExplorerSession(busy=said.append)
    s.open(tiny_spec, Parallel(tp=1), Parallel(tp=2))
    s.choose(QKV)
    assert said == [
        "running the sync and the check at real sizes (symbolic ids)", "",
        "drawing the layout view", "",
    ]  # fmt: skip
    said.clear()
    s.open(tiny_spec, Parallel(tp=1), Parallel(tp=2))
    s.choose(QKV)
    assert said == [] and len(runs) == 1


def test_a_step_replays_once_and_a_real_size_hover_never(opened, monkeypatch):
    """At real sizes a hover reads no steps ("via steps" absent) and starts no replay;
    step 2 replays qkv once (the getitem taking Q heads 0-1, its frame drawn); the hover
    then names the steps."""
    calls = []
    monkeypatch.setattr(
        session_module, "param_steps", lambda *a: calls.append(a) or param_steps(*a)
    )
    opened.forget()
    opened.choose(QKV)
    words = opened.hover("vLLM holds", 2, 0, 3)
    assert "came from trainer tp 0 (rank 0)" in words and "via steps" not in words
    assert calls == []
    shown = opened.step(2)
    assert shown.step.op.op == "getitem" and shown.step.blocks == ("Q head 0", "Q head 1")
    assert shown.png[:4] == b"\x89PNG" and shown.total == opened.step_count()
    opened.step(3)
    assert len(calls) == 1
    assert "via steps" in opened.hover("vLLM holds", 2, 0, 3)
    assert opened.step(0).png == b"" and opened.step(0).step is None


def test_a_cell_names_its_block_and_its_journey(opened):
    """vLLM tp1 (rank 2) row 0 holds K head 0 (block 4) where Q head 2 is expected; K head
    0's journey ends there, rows 0-1, where vLLM tp0 (rank 1) rows 4-5 ([Q0 Q1 K0 V0]) is
    where it belongs: WRONG. Other views answer no cell."""
    opened.choose(QKV)
    assert opened.block_at("vLLM holds", 2, 0, 3) == 4
    assert opened.block_at("vLLM expected", 2, 0, 3) == 2  # Q head 2
    assert opened.block_at("vLLM holds", 99, 0, 0) is None  # no such panel
    journey = opened.journey(4)
    assert journey.label == "K head 0" and not journey.ok
    text = journey.text()
    assert "ends: vLLM tp 1 (rank 2): rows 0-1 of" in text
    assert text.endswith("expects it at:\n  vLLM tp 0 (rank 1): rows 4-5")
    assert opened.journey(4) is journey  # cached
    opened.show("transfer")
    assert (
        opened.hover("vLLM holds", 2, 0, 3) is None and opened.block_at("trainer", 0, 0, 0) is None
    )
