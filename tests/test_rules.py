"""The one rule table: every fix it suggests is accepted, every size it accepts can be laid out.

The walks below take the suggestions literally, as a user would, and call
``validate`` again on the result; the property tests build the oracle layout
(and run the corrected synchronizer) for sizes the table accepts.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncviz.check import check
from syncviz.errors import SyncvizError
from syncviz.oracle import conventions, model_layout
from syncviz.parallel import Parallel, validate
from syncviz.presets import PRESETS, shipped_config
from syncviz.rules import first_broken, rules, substitute
from syncviz.run.inprocess import run_sync
from syncviz.spec import ModelSpec

SPECS = {**PRESETS, "gqa-custom": shipped_config("gqa-custom")}


def _grid(spec: ModelSpec) -> list[tuple[Parallel, Parallel]]:
    eps = (1, 2, 4, 6) if spec.is_moe else (1, 2)
    return [
        (Parallel(s, ep=e, pp=p), Parallel(d))
        for s in (1, 2, 3, 6, 8, 12, 16, 32)
        for d in (1, 3, 4, 6, 8, 16, 24, 32)
        for e in eps
        for p in (1, 3)
    ]


@pytest.mark.parametrize("name", list(SPECS))
def test_every_suggestion_fixes_its_field(name: str) -> None:
    """Taking any suggested value leaves no broken rule whose fix is for that same field."""
    spec = SPECS[name]
    for src, dst in _grid(spec):
        broken = first_broken(spec, src, dst)
        if broken is None:
            continue
        assert [int(v) for v in re.findall(r"\d+", broken.fix.split("use ")[-1])][
            : len(broken.choices)
        ] == list(broken.choices)
        for value in broken.choices:
            after = first_broken(spec, *substitute(src, dst, broken.field, value))
            assert after is None or after.field != broken.field, (src, dst, value, after)


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("pick", [min, max])
def test_walking_the_suggestions_ends_accepted(name: str, pick) -> None:
    """Following the fixes one at a time (smallest or largest offered) reaches valid sizes."""
    spec = SPECS[name]
    for start in _grid(spec):
        src, dst = start
        for _ in range(6):
            broken = first_broken(spec, src, dst)
            if broken is None or not broken.choices:
                break
            src, dst = substitute(src, dst, broken.field, pick(broken.choices))
        broken = first_broken(spec, src, dst)
        # The only dead end is a field no single value fixes; it says so.
        assert broken is None or broken.fix.startswith("no value fits"), (start, broken)
        if broken is None:
            validate(spec, src, dst)


def test_issue_case_llama3_8b_3_to_6() -> None:
    """llama3-8b 3 -> 6: src tp must divide 32 heads and 8 groups: 1, 2, 4 or 8; then dst."""
    spec = PRESETS["llama3-8b"]
    with pytest.raises(SyncvizError) as info:
        validate(spec, Parallel(3), Parallel(6))
    assert str(info.value) == "src tp (3) must divide num_attention_heads (32): use 1, 2, 4 or 8"
    for s in (1, 2, 4, 8):
        with pytest.raises(SyncvizError) as after:
            validate(spec, Parallel(s), Parallel(6))
        assert after.value.message.startswith("dst tp (6) must")
        suggested = [int(v) for v in re.findall(r"\d+", after.value.fix or "")]
        assert suggested and all(v % s == 0 for v in suggested)
        for d in suggested:
            validate(spec, Parallel(s), Parallel(d))


def test_oracle_checks_only_layout_rules() -> None:
    """The oracle lays out dst tp 2 from src tp 4 (vLLM needs no multiple); validate refuses."""
    spec = PRESETS["llama3-8b"]
    layout = model_layout(spec, Parallel(4), Parallel(2), layers=[0])
    assert {t.tp for p in layout for t in p.dst} == {0, 1}
    with pytest.raises(SyncvizError, match=r"dst tp \(2\) must be a multiple of src tp \(4\)"):
        validate(spec, Parallel(4), Parallel(2))


def test_rule_kinds_are_named() -> None:
    """Only the multiple-of rule is the synchronizer's own; the rest are the layout's."""
    table = rules(PRESETS["mixtral-8x7b"])
    assert [r.reads for r in table if r.needs == "sync"] == [("dst.tp", "src.tp")]


@st.composite
def specs_and_sizes(draw: st.DrawFn) -> tuple[ModelSpec, Parallel, Parallel]:
    heads = draw(st.sampled_from([2, 4, 6, 8, 12]))
    groups = draw(st.sampled_from([g for g in range(1, heads + 1) if heads % g == 0]))
    family = draw(st.sampled_from(["llama-mcore", "qwen2", "qwen2-moe", "mixtral", "qwen3-moe"]))
    moe, qwen_moe = family in ("qwen2-moe", "mixtral", "qwen3-moe"), family == "qwen2-moe"
    spec = ModelSpec(
        "random", family, draw(st.integers(1, 4)), heads * 2, heads, groups,
        draw(st.sampled_from([12, 24, 36, 48])), draw(st.integers(60, 300)),
        num_experts=draw(st.sampled_from([4, 6, 8])) if moe else 0,
        moe_ffn_hidden_size=draw(st.sampled_from([12, 24])) if moe else 0,
        shared_expert_ffn_hidden_size=draw(st.sampled_from([0, 24])) if qwen_moe else 0,
        shared_expert_gate=qwen_moe,
    )  # fmt: skip
    src = Parallel(
        draw(st.sampled_from([1, 2, 3, 4, 6])),
        pp=draw(st.sampled_from([1, 2])),
        ep=draw(st.sampled_from([1, 2, 3])) if moe else 1,
    )
    dst = Parallel(draw(st.sampled_from([1, 2, 3, 4, 6, 8, 12])))
    return spec, src, dst


@settings(max_examples=60, deadline=None)
@given(specs_and_sizes())
def test_accepted_sizes_lay_out_and_fixes_are_accepted(case) -> None:
    """Property: sizes validate accepts build an oracle layout; a refused size's fix is accepted
    for its field (the sizes with the fix taken break no rule about that field)."""
    spec, src, dst = case
    walked = _walk(spec, src, dst)
    if walked is not None:
        layout = model_layout(spec, *walked)
        assert len(layout) > 0
    broken = first_broken(spec, src, dst)
    for value in broken.choices if broken else ():
        after = first_broken(spec, *substitute(src, dst, broken.field, value))
        assert after is None or after.field != broken.field


def _walk(spec: ModelSpec, src: Parallel, dst: Parallel) -> tuple[Parallel, Parallel] | None:
    """The sizes after taking the largest suggested value until none is broken (None: dead end)."""
    for _ in range(8):
        broken = first_broken(spec, src, dst)
        if broken is None:
            return src, dst
        if not broken.choices:
            return None
        src, dst = substitute(src, dst, broken.field, max(broken.choices))
    raise AssertionError(f"no end to the suggestions from {src}, {dst}")


@settings(max_examples=12, deadline=None)
@given(specs_and_sizes())
def test_accepted_sizes_run_and_check(case) -> None:
    """Property: sizes reached by taking the fixes run through the corrected synchronizer to a
    clean check (Megatron-Core experts under trainer ep > 1 included)."""
    spec, src, dst = case
    walked = _walk(spec, src, dst)
    if walked is None:
        return
    src, dst = walked
    assert conventions(spec.family)  # the family has a layout
    result = run_sync(spec, src, dst, synchronizer="corrected", trace=False)
    report = check(result, "corrected")
    assert report.ok, str(report)
