"""Findings as data: their lines, merged over ranks, grouped over layers, all from the data."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from syncviz import Parallel, preset
from syncviz.check import ParamCheck, TensorCheck
from syncviz.findings import (
    Finding,
    Role,
    Span,
    drop_local_place,
    groups,
    ranks_legend,
    tell,
    who,
)
from syncviz.run.plan import build_plan

KEY = "model.model.layers.{}.self_attn.o_proj.weight"


def wrong_columns(world: int, tp: int, layer: int = 0) -> Finding:
    return Finding(
        KEY.format(layer), world, "wrong", tp, span=Span("column", 0, 3, "heads 0-1"),
        holds="heads 0-3 rows 0-3", expected="heads 0-1",
    )  # fmt: skip


def test_each_kind_of_finding_reads_as_one_line():
    """Columns (several: 'hold'), one row ('holds'), a note, an error and a dump's rank."""
    row = Finding("k", 5, "wrong", 1, span=Span("row", 7, 7), holds="K head 0", expected="Q head 1")
    assert wrong_columns(1, 0).line() == (
        "dst rank 1 (tp 0), columns 0-3 (heads 0-1): hold heads 0-3 rows 0-3, expected heads 0-1"
    )
    assert row.line() == "dst rank 5 (tp 1), row 7: holds K head 0, expected Q head 1"
    assert Finding("k", 2, "unwritten", 1, note="never written").line() == (
        "dst rank 2 (tp 1): never written"
    )
    error = Finding("k", 0, "error", stage="regroup", note="IndexError: too many indices")
    assert error.line() == "rank 0 regroup: IndexError: too many indices"
    assert error.what() == "regroup: IndexError: too many indices"
    stale = Finding("k", 3, "wrong", 1, span=Span("element", 0, 63), holds="stale", pp=1,
                    spelling="engine")  # fmt: skip
    assert stale.line() == "pp 1 tp 1, elements 0-63: holds stale"
    assert Finding("k", 1, "missing", 1, spelling="engine", note="missing from tp1.st").line() == (
        "tp 1: missing from tp1.st"
    )


def test_identical_words_on_several_ranks_are_told_once():
    """Ranks 1 and 2 both never written, rank 1 also rewritten: two lines, ranks merged."""
    found = [
        Finding("k", 1, "unwritten", 0, note="never written"),
        Finding("k", 2, "unwritten", 1, note="never written"),
        Finding("k", 1, "rewritten", 0, note="written 2 times"),
    ]
    told = tell(found, None, by_role=True)
    assert [(t.words, t.worlds) for t in told] == [
        ("never written", (1, 2)),
        ("written 2 times", (1,)),
    ]
    # Without roles to name the ranks apart, each line keeps its own rank.
    assert [t.words for t in tell(found, None, by_role=False)] == [
        "dst rank 1 (tp 0): never written",
        "dst rank 2 (tp 1): never written",
        "dst rank 1 (tp 0): written 2 times",
    ]


@dataclass
class Param:
    """The parts of a ParamCheck that grouping reads."""

    key: str
    layer: int | None
    status: str = "wrong"
    found: list[Finding] = field(default_factory=list)

    def findings(self) -> list[Finding]:
        return self.found


def test_same_findings_on_every_layer_form_one_group():
    """Layers 0, 1 and 3 alike (each holds its own layer's mlp elements) group as 0-1,3;
    layer 2, wrong on another rank, is a group of its own, told by its key."""

    def param(layer: int, world: int = 1) -> Param:
        mlp = f"model.model.layers.{layer}.mlp.down_proj.weight"
        other = Finding(KEY.format(layer), world, "wrong", 0, holds=f"elements of {mlp}",
                        layers=(layer,))  # fmt: skip
        return Param(KEY.format(layer), layer, found=[wrong_columns(world, 0, layer), other])

    roles = {1: Role("vLLM", 0), 2: Role("vLLM", 1)}
    found = groups([param(0), param(1), param(2, world=2), param(3)], by_role=True)
    assert [(g.layers, g.keys[0]) for g in found] == [
        ([0, 1, 3], KEY.format(0)),
        ([2], KEY.format(2)),
    ]
    assert found[0].text(roles) == [
        "WRONG layers 0-1,3: self_attn.o_proj.weight",
        "  vLLM tp 0 (rank 1): columns 0-3 (heads 0-1): hold heads 0-3 rows 0-3,"
        " expected heads 0-1",
        "  vLLM tp 0 (rank 1): holds elements of model.model.layers.0.mlp.down_proj.weight",
    ]
    assert found[1].text(roles)[0] == f"WRONG {KEY.format(2)}"


def test_a_parameter_outside_the_layers_is_told_by_its_key():
    """lm_head (no layer) and more lines than a group shows: the rest are counted."""
    lines = [Finding("lm_head.weight", w, "unwritten", w, note="never written") for w in range(8)]
    many = [Finding("lm_head.weight", 0, "wrong", 0, note=f"note {n}") for n in range(7)]
    (group,) = groups([Param("lm_head.weight", None, found=lines + many)], by_role=True)
    text = group.text({})
    assert text[0] == "WRONG lm_head.weight"
    assert text[1] == "  never written" and text[-1] == "  ... 2 more (--verbose lists them)"
    assert len(text) == 1 + 6 + 1


def test_ranks_by_role_merge_tps_of_one_stem_only():
    """Trainer pp 1 ep 0 tps 0-1 merge; a trainer and a vLLM rank are each named."""
    roles = {
        0: Role("trainer", 0, pp=0, ep=0), 1: Role("trainer", 1, pp=0, ep=0),
        2: Role("trainer", 0, pp=1, ep=0), 3: Role("trainer", 1, pp=1, ep=0),
        4: Role("vLLM", 0), 5: Role("vLLM", 1),
    }  # fmt: skip
    assert who([2, 3], roles) == "trainer pp 1 tp 0-1 ep 0 (ranks 2-3): "
    assert who([3, 4], roles) == "trainer pp 1 tp 1 ep 0 (rank 3), vLLM tp 0 (rank 4): "
    assert who([9], roles) == "rank (rank 9): "
    assert who([-1], roles) == "" and who([1], {}) == ""
    assert ranks_legend(roles) == (
        "trainer pp 0 tp 0-1 ep 0 = ranks 0-1; trainer pp 1 tp 0-1 ep 0 = ranks 2-3;"
        " vLLM tp 0-1 = ranks 4-5"
    )


@pytest.mark.parametrize(
    ("model", "src", "dst", "names"),
    [
        # world ranks: trainer pp-major (pp 0: tp 0-1, pp 1: tp 0-1), then the engine's tp
        ("qwen2-7b", Parallel(2, pp=2), Parallel(4), {1: "trainer pp 0 tp 1", 4: "vLLM tp 0"}),
        ("qwen2-57b-a14b", Parallel(2, ep=2), Parallel(4), {3: "trainer tp 1 ep 1"}),
        ("llama3-8b", Parallel(1), Parallel(2, engine="sglang"), {0: "trainer tp 0"}),
    ],
)
def test_a_plan_names_its_ranks_by_role(model, src, dst, names):
    """pp is said where a side has two stages, ep where the trainer has two; hand-worked."""
    plan = build_plan(preset(model).scaled(), src, dst, layers=[0])
    for world, name in names.items():
        assert plan.rank_name(world) == f"{name} (rank {world})"
        assert plan.role(world).words() == name
    engine = plan.role(len(plan.roles) - 1)
    assert engine.name == ("SGLang" if dst.engine == "sglang" else "vLLM")
    assert engine.tp == dst.tp - 1


@pytest.mark.parametrize(
    ("text", "units", "short"),
    [
        ("rows 0-3: Q head 1", None, "Q head 1"),
        ("element 5: bias 5", None, "bias 5"),
        ("cols 0-7: heads 0-1", None, "heads 0-1"),
        ("experts 0-1: whole experts 2-3", None, "experts 0-1: whole experts 2-3"),
        ("experts 0-1: whole experts 2-3", ("row", "expert"), "whole experts 2-3"),
        ("rows 0-1: Q head 0; rows 2-3: K head 0", None, "rows 0-1: Q head 0; rows 2-3: K head 0"),
        ("rows a-b: Q head 0", None, "rows a-b: Q head 0"),
        ("Q heads 0-3", None, "Q heads 0-3"),
    ],
)
def test_a_single_piece_loses_its_local_place(text, units, short):
    """Only '<row|element|col>[s] <numbers>: ' before one piece goes; several pieces keep theirs."""
    assert (drop_local_place(text) if units is None else drop_local_place(text, units)) == short


def test_json_writes_findings_as_lines_and_leaves_the_layer_out():
    """A ParamCheck's dict: errors and problems as their lines, keys as the report has them."""
    tensor = TensorCheck(1, 0, "wrong", 16, 0, 1, [wrong_columns(1, 0)])
    error = Finding(KEY.format(0), 0, "error", stage="regroup", note="boom")
    data = ParamCheck(KEY.format(0), "error", [tensor], [error], layer=0).as_dict()
    assert list(data) == ["key", "status", "tensors", "errors"]
    assert data["errors"] == ["rank 0 regroup: boom"]
    assert data["tensors"] == [
        {
            "rank": 1, "tp": 0, "status": "wrong", "wrong": 16, "unwritten": 0, "writes": 1,
            "problems": [wrong_columns(1, 0).line()],
        }
    ]  # fmt: skip


def test_check_keeps_a_wrong_column_run_as_data():
    """The faithful port's flat o_proj split (tiny run, tp 1 -> 2): vLLM tp 0 (rank 1) holds
    heads 0-3 rows 0-3 in its columns 0-3, which should carry heads 0-1."""
    from syncviz.check import check
    from syncviz.run.inprocess import tiny_run

    o_proj = check(tiny_run()).bad()[2]
    first = o_proj.tensors[0].findings[0]
    assert (first.param, first.world, first.tp, first.status) == (o_proj.key, 1, 0, "wrong")
    assert first.span == Span("column", 0, 3, "heads 0-1")
    assert (first.holds, first.expected) == ("heads 0-3 rows 0-3", "heads 0-1")


def test_diagnose_keeps_a_wrong_row_run_as_data():
    """lm_head planted as tp 0's on tp 1 (tiny qwen2, vocab 90 padded to 128 over tp 2): tp 1's
    rows 0-63 hold tp 0's vocab rows, where vocab rows 64-89 and padding are due."""
    from syncviz.diagnose.core import run_diagnosis
    from syncviz.diagnose.fixtures import planted
    from syncviz.diagnose.words import report

    ref, dump = planted("qwen2", tp=2, bugs={"lm_head": "tp0"})
    (found,) = report(run_diagnosis(ref, dump, 2)).bad()[0].findings()
    assert (found.world, found.tp, found.pp, found.spelling) == (1, 1, None, "engine")
    assert found.span == Span("row", 0, 63)
    assert found.holds == "tp 0's vocab rows 0-63"
    assert found.expected == "rows 0-25: vocab rows 64-89; rows 26-63: padding"
