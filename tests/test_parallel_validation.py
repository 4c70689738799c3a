"""validate(): each broken rule is named with its side, field, value, rule and the valid values.

Every expected text below is worked out by hand from the model's sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from syncviz.errors import SyncvizError
from syncviz.parallel import Parallel, valid_choices, valid_tp_sizes, validate
from syncviz.presets import preset, shipped_config
from syncviz.spec import ModelSpec

# A dense model whose padded vocab (1024) is the only size 3 does not divide.
VOCAB_1024 = ModelSpec("vocab-1024", "llama-mcore", 2, 48, 12, 12, 96, 1000)
# A Qwen2-MoE model whose shared expert (100) is the only size 8 does not divide.
SHARED_100 = ModelSpec("shared-100", "qwen2-moe", 2, 64, 8, 8, 64, 1000, num_experts=16,
                       moe_ffn_hidden_size=64, shared_expert_ffn_hidden_size=100,
                       shared_expert_gate=True)  # fmt: skip
# A Mixtral-like model whose per-expert FFN (100) is not divisible by 8.
MOE_100 = ModelSpec("moe-100", "mixtral", 2, 64, 8, 8, 100, 1000, num_experts=4,
                    moe_ffn_hidden_size=100)  # fmt: skip


def spec_of(name_or_spec: str | ModelSpec) -> ModelSpec:
    if isinstance(name_or_spec, ModelSpec):
        return name_or_spec
    if name_or_spec in ("gqa-custom", "mixtral-tiny"):
        return shipped_config(name_or_spec)
    return preset(name_or_spec)


@dataclass(frozen=True)
class Bad:
    """One invalid combination and the literal texts its error must hold."""

    spec: str | ModelSpec
    src: Parallel
    dst: Parallel
    subject: str  # side, field and value
    rule: str
    fix: str


INVALID = [
    # dst tp 3 is broken on its own, so src tp's fix ignores the multiple-of rule;
    # src tp must also divide the 8 K/V groups.
    Bad("llama3-8b", Parallel(3), Parallel(3), "src tp (3)",
        "must divide num_attention_heads (32)", "use 1, 2, 4 or 8"),
    Bad("llama3-8b", Parallel(3), Parallel(6), "src tp (3)",
        "must divide num_attention_heads (32)", "use 1, 2, 4 or 8"),
    Bad("llama3-8b", Parallel(32), Parallel(6), "src tp (32)",
        "must divide num_query_groups (8)", "use 1, 2, 4 or 8"),
    # src tp 8 fits on its own, so dst tp's fix keeps the multiple-of rule.
    Bad("llama3-8b", Parallel(8), Parallel(6), "dst tp (6)",
        "must divide num_attention_heads (32)", "use 8, 16 or 32"),
    Bad("llama3-8b", Parallel(8), Parallel(4), "dst tp (4)",
        "must be a multiple of src tp (8)", "use 8, 16 or 32"),
    Bad(ModelSpec("kv2", "llama-mcore", 2, 64, 8, 2, 64, 256), Parallel(4), Parallel(8),
        "src tp (4)", "must divide num_query_groups (2)", "use 1 or 2"),
    # Rules on one field come before those tying two together.
    Bad("llama3-8b", Parallel(2), Parallel(3), "dst tp (3)",
        "must divide num_attention_heads (32)", "use 2, 4, 8, 16 or 32"),
    Bad("llama3-8b", Parallel(2), Parallel(6), "dst tp (6)",
        "must divide num_attention_heads (32)", "use 2, 4, 8, 16 or 32"),
    Bad("llama2-7b", Parallel(4), Parallel(2), "dst tp (2)",
        "must be a multiple of src tp (4)", "use 4, 8, 16 or 32"),
    Bad("qwen-7b", Parallel(3), Parallel(6), "src tp (3)",
        "must divide num_attention_heads (32)", "use 1, 2, 4, 8, 16 or 32"),
    Bad("qwen2-72b", Parallel(1), Parallel(128), "dst tp (128)",
        "must divide num_attention_heads (64)", "use 1, 2, 4, 8, 16, 32 or 64"),
    Bad("qwen1.5-moe-a2.7b", Parallel(1), Parallel(3), "dst tp (3)",
        "must divide num_attention_heads (16)", "use 1, 2, 4, 8 or 16"),
    Bad("qwen2-7b", Parallel(7), Parallel(7), "src tp (7)",
        "must divide num_query_groups (4)", "use 1, 2 or 4"),
    Bad("qwen2-7b", Parallel(2), Parallel(14), "dst tp (14)",
        "and num_query_groups (4) must divide one another", "use 2 or 4"),
    Bad("gqa-custom", Parallel(3), Parallel(6), "src tp (3)",
        "must divide num_query_groups (4)", "use 1, 2 or 4"),
    Bad("gqa-custom", Parallel(2), Parallel(6), "dst tp (6)",
        "and num_query_groups (4) must divide one another", "use 2, 4 or 12"),
    Bad("qwen2-7b", Parallel(2), Parallel(28), "dst tp (28)",
        "must divide ffn_hidden_size (18944)", "use 2 or 4"),
    Bad("qwen2-57b-a14b", Parallel(2), Parallel(28), "dst tp (28)",
        "must divide moe_ffn_hidden_size (2560)", "use 2 or 4"),
    Bad(MOE_100, Parallel(8), Parallel(8), "src tp (8)",
        "must divide moe_ffn_hidden_size (100)", "use 1, 2 or 4"),
    Bad(SHARED_100, Parallel(8), Parallel(8), "src tp (8)",
        "must divide shared_expert_ffn_hidden_size (100)", "use 1, 2 or 4"),
    Bad(SHARED_100, Parallel(1), Parallel(8), "dst tp (8)",
        "must divide shared_expert_ffn_hidden_size (100)", "use 1, 2 or 4"),
    Bad(VOCAB_1024, Parallel(1), Parallel(3), "dst tp (3)",
        "must divide padded_vocab_size (1024)", "use 1, 2 or 4"),
    Bad(VOCAB_1024, Parallel(3), Parallel(3), "dst tp (3)",  # 3, 6 and 12 all fail the vocab
        "must divide padded_vocab_size (1024)",
        "no value fits the other sizes; change them together (see valid_choices)"),
    Bad(VOCAB_1024, Parallel(3), Parallel(1), "dst tp (1)",  # src tp 3 leaves no dst tp
        "must be a multiple of src tp (3)",
        "no dst tp fits src tp 3: use src tp 1 (with dst tp 1)"),
    Bad("mixtral-8x7b", Parallel(2, ep=3), Parallel(2), "src ep (3)",
        "must divide num_experts (8)", "use 1, 2, 4 or 8"),
    Bad("qwen1.5-moe-a2.7b", Parallel(2, ep=4), Parallel(2), "src ep*tp (4*2 = 8)",
        "must divide num_experts (60)", "use src ep 1, 2, 3, 5, 6, 10, 15 or 30"),
    Bad("qwen2-57b-a14b", Parallel(4, ep=32), Parallel(4), "src ep*tp (32*4 = 128)",
        "must divide num_experts (64)", "use src ep 1, 2, 4, 8 or 16"),
    Bad("qwen1.5-moe-a2.7b", Parallel(8), Parallel(8), "src ep*tp (1*8 = 8)",
        "must divide num_experts (60)",
        "no src ep fits src tp 8: use src tp 1, 2 or 4 (with src ep 1)"),
    Bad("llama2-7b", Parallel(2, ep=2), Parallel(2), "src ep (2)",
        "must be 1 for a dense model (num_experts is 0)", "use 1"),
    Bad("llama2-7b", Parallel(2), Parallel(2, ep=2), "dst ep (2)",
        "must be 1 for a dense model (num_experts is 0)", "use 1"),
    Bad("mixtral-8x7b", Parallel(2, ep=8), Parallel(2, ep=8), "dst ep (8)",
        "must be 1 or dst tp (2): the engine's expert-parallel group", "use 1 or 2"),
    Bad("llama2-7b", Parallel(2, pp=3), Parallel(2), "src pp (3)",
        "must divide num_layers (32)", "use 1, 2, 4, 8, 16 or 32"),
    Bad("qwen2-7b", Parallel(2), Parallel(2, pp=3), "dst pp (3)",
        "must divide num_layers (28)", "use 1, 2, 4, 7, 14 or 28"),
    Bad("mixtral-tiny", Parallel(2, pp=4), Parallel(2), "src pp (4)",
        "must divide num_layers (2)", "use 1 or 2"),
]  # fmt: skip


@pytest.mark.parametrize("case", INVALID, ids=lambda c: f"{c.subject}-{c.rule[:24]}")
def test_invalid_sizes_are_explained(case: Bad) -> None:
    """The first broken rule raises, naming side, field, value, the rule and the valid values."""
    with pytest.raises(SyncvizError) as info:
        validate(spec_of(case.spec), case.src, case.dst)
    assert info.value.message.startswith(f"{case.subject} {case.rule}")
    assert info.value.fix == case.fix
    assert str(info.value).endswith(f": {case.fix}")


VALID = [
    ("llama3-8b", Parallel(2), Parallel(4)),
    ("llama3-8b", Parallel(8, pp=4), Parallel(32)),  # 32 > 8 groups: each K/V head on 4 ranks
    ("llama2-7b", Parallel(1), Parallel(1)),
    ("qwen-7b", Parallel(4, pp=2), Parallel(8)),
    ("qwen2-7b", Parallel(2), Parallel(4, pp=7)),
    ("qwen2-72b", Parallel(8, pp=8), Parallel(16)),
    ("qwen1.5-moe-a2.7b", Parallel(4, ep=15), Parallel(16)),
    ("qwen2-57b-a14b", Parallel(2, ep=16), Parallel(4)),
    ("mixtral-8x7b", Parallel(2, pp=4, ep=4), Parallel(8, pp=2)),
    ("gqa-custom", Parallel(4), Parallel(12)),
    ("mixtral-tiny", Parallel(2, ep=4), Parallel(8)),
    # dst tp 8 > 2 groups: each K/V head replicated on 4 vLLM ranks.
    (ModelSpec("kv2", "llama-mcore", 2, 64, 8, 2, 64, 256), Parallel(2), Parallel(8)),
]


@pytest.mark.parametrize("name, src, dst", VALID, ids=lambda v: str(v))
def test_valid_sizes_pass(name: str | ModelSpec, src: Parallel, dst: Parallel) -> None:
    """Sizes that fit every rule return None."""
    assert validate(spec_of(name), src, dst) is None


@pytest.mark.parametrize(
    "name, src_tp, expected",
    [
        ("llama3-8b", None, (1, 2, 4, 8)),  # src tp divides the 8 K/V groups
        ("llama3-8b", 4, (4, 8, 16, 32)),
        ("qwen2-7b", None, (1, 2, 4)),
        ("qwen2-7b", 2, (2, 4)),
        ("qwen1.5-moe-a2.7b", None, (1, 2, 4)),  # 60 experts over ep*tp with ep 1
        ("qwen1.5-moe-a2.7b", 4, (4, 8, 16)),
        ("gqa-custom", None, (1, 2, 4)),
    ],
)
def test_valid_tp_sizes(name: str, src_tp: int | None, expected: tuple[int, ...]) -> None:
    """valid_tp_sizes lists source tp sizes, or destination ones for a given source."""
    src = None if src_tp is None else Parallel(src_tp)
    assert valid_tp_sizes(spec_of(name), src) == expected


@pytest.mark.parametrize("name", ["llama3-70b", "qwen2-7b", "qwen2-57b-a14b", "gqa-custom"])
def test_validate_agrees_with_valid_tp_sizes(name: str) -> None:
    """For every tp pair up to 32, validate passes exactly when both sizes are listed as valid."""
    spec = spec_of(name)
    for s in range(1, 33):
        for d in range(1, 33):
            listed = s in valid_tp_sizes(spec) and d in valid_tp_sizes(spec, Parallel(s))
            try:
                validate(spec, Parallel(s), Parallel(d))
                passed = True
            except SyncvizError:
                passed = False
            assert passed == listed, (s, d)


def test_valid_choices_for_pp() -> None:
    """valid_choices lists pipeline sizes that divide the layers (mixtral-8x7b: 32 layers)."""
    spec = preset("mixtral-8x7b")
    assert valid_choices(spec, Parallel(2), Parallel(2), "dst.pp") == (1, 2, 4, 8, 16, 32)


def test_unknown_field_is_an_error() -> None:
    """valid_choices names the fields it knows when given another."""
    with pytest.raises(SyncvizError, match=r"field 'dst\.dp' is not known"):
        valid_choices(preset("llama3-8b"), Parallel(1), Parallel(1), "dst.dp")


def test_wrong_argument_types() -> None:
    """validate wants a ModelSpec and two Parallel sizes, and says so."""
    with pytest.raises(SyncvizError, match=r"spec \(str\) must be a ModelSpec"):
        validate("llama3-8b", Parallel(1), Parallel(1))  # type: ignore[arg-type]
    with pytest.raises(SyncvizError, match=r"dst \(4\) must be a Parallel: use e.g. dst=Parallel"):
        validate(preset("llama3-8b"), Parallel(1), 4)  # type: ignore[arg-type]
