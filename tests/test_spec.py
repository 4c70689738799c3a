"""ModelSpec: reading Hugging Face config.json files, and the layout-preserving downscale."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncviz.errors import SyncvizError
from syncviz.parallel import Parallel, validate
from syncviz.presets import CONFIGS_DIR, PRESETS, preset, shipped_config
from syncviz.rules import rules
from syncviz.spec import ModelSpec

LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "num_hidden_layers": 4,
    "hidden_size": 128,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "intermediate_size": 352,
    "vocab_size": 1000,
}


# ---------------------------------------------------------------- from_hf_config


def test_llama_dict() -> None:
    """A Llama config gives family llama-mcore, GQA 8/2, head_dim 128/8 = 16, no bias."""
    spec = ModelSpec.from_hf_config(LLAMA, name="toy")
    assert spec == ModelSpec("toy", "llama-mcore", 4, 128, 8, 2, 352, 1000, head_dim=16)


def test_missing_kv_heads_means_multi_head() -> None:
    """Without num_key_value_heads every head has its own K/V head."""
    config = {k: v for k, v in LLAMA.items() if k != "num_key_value_heads"}
    assert ModelSpec.from_hf_config(config).num_query_groups == 8


def test_head_dim_tie_and_bias_are_honoured() -> None:
    """head_dim 32 (not 128/8), tied embeddings and attention_bias are read as written."""
    config = {**LLAMA, "head_dim": 32, "tie_word_embeddings": True, "attention_bias": True}
    spec = ModelSpec.from_hf_config(config)
    assert (spec.head_dim, spec.tie_word_embeddings, spec.qkv_bias) == (32, True, True)


def test_qwen2_dict() -> None:
    """Qwen2 always has QKV biases."""
    config = {**LLAMA, "architectures": ["Qwen2ForCausalLM"]}
    spec = ModelSpec.from_hf_config(config)
    assert (spec.family, spec.qkv_bias) == ("qwen2", True)


def test_qwen2_moe_dict() -> None:
    """Qwen2-MoE reads experts, per-expert and shared sizes; a shared expert implies its gate."""
    config = {
        **LLAMA,
        "architectures": ["Qwen2MoeForCausalLM"],
        "num_experts": 6,
        "moe_intermediate_size": 48,
        "shared_expert_intermediate_size": 96,
    }
    spec = ModelSpec.from_hf_config(config, name="qm")
    assert spec == ModelSpec(
        "qm", "qwen2-moe", 4, 128, 8, 2, 352, 1000, qkv_bias=True, num_experts=6,
        moe_ffn_hidden_size=48, shared_expert_ffn_hidden_size=96, shared_expert_gate=True,
    )  # fmt: skip


def test_mixtral_dict() -> None:
    """Mixtral's intermediate_size is each expert's size; num_local_experts the count."""
    config = {**LLAMA, "architectures": ["MixtralForCausalLM"], "num_local_experts": 4}
    spec = ModelSpec.from_hf_config(config)
    assert (spec.family, spec.num_experts, spec.moe_ffn_hidden_size) == ("mixtral", 4, 352)


def test_qwen_v1_dict() -> None:
    """QWen v1 halves the fused intermediate_size and takes kv_channels as head_dim."""
    config = {
        "architectures": ["QWenLMHeadModel"],
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "num_attention_heads": 4,
        "kv_channels": 16,
        "intermediate_size": 344,
        "vocab_size": 500,
    }
    spec = ModelSpec.from_hf_config(config)
    assert (spec.family, spec.ffn_hidden_size, spec.head_dim) == ("qwen-v1", 172, 16)
    assert (spec.num_query_groups, spec.qkv_bias) == (4, True)


def test_model_type_stands_in_for_missing_architectures() -> None:
    """A config without architectures is read by its model_type."""
    config = {k: v for k, v in LLAMA.items() if k != "architectures"}
    config = {**config, "model_type": "mixtral", "num_local_experts": 2}
    assert ModelSpec.from_hf_config(config).family == "mixtral"


def test_file_and_folder(tmp_path: Path) -> None:
    """A path to config.json, or to its folder, reads the same; the folder names the spec."""
    folder = tmp_path / "My-Model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LLAMA))
    from_file = ModelSpec.from_hf_config(folder / "config.json")
    from_folder = ModelSpec.from_hf_config(str(folder))
    assert from_file == from_folder
    assert from_file.name == "My-Model"
    assert from_file == ModelSpec.from_hf_config(LLAMA, name="My-Model")


def test_shipped_files_read_directly() -> None:
    """The shipped JSON files are plain config.json files from_hf_config reads."""
    mixtral = ModelSpec.from_hf_config(CONFIGS_DIR / "mixtral-tiny.json")
    assert (mixtral.name, mixtral.num_experts, mixtral.num_query_groups) == ("mixtral-tiny", 4, 2)
    assert ModelSpec.from_hf_config(CONFIGS_DIR / "gqa-custom.json") == shipped_config("gqa-custom")


def test_unknown_architecture_lists_supported() -> None:
    """An unsupported architecture is named, with the supported ones in the fix."""
    with pytest.raises(SyncvizError) as info:
        ModelSpec.from_hf_config({**LLAMA, "architectures": ["GPT2LMHeadModel"]})
    text = str(info.value)
    assert "architecture GPT2LMHeadModel in the config dict is not supported" in text
    assert (
        "LlamaForCausalLM, QWenLMHeadModel, Qwen2ForCausalLM, Qwen2MoeForCausalLM,"
        " MixtralForCausalLM, MistralForCausalLM, Qwen3ForCausalLM, Qwen3MoeForCausalLM" in text
    )


def test_no_architecture_at_all() -> None:
    """Neither architectures nor a known model_type: the fix says to add architectures."""
    config = {k: v for k, v in LLAMA.items() if k != "architectures"}
    with pytest.raises(SyncvizError, match=r"has no 'architectures' list.*add \"architectures\""):
        ModelSpec.from_hf_config(config)


def test_missing_file(tmp_path: Path) -> None:
    """A missing file names its path and what to pass instead."""
    missing = tmp_path / "nope.json"
    with pytest.raises(SyncvizError) as info:
        ModelSpec.from_hf_config(missing)
    assert str(missing) in str(info.value)
    assert "does not exist: pass the path of a Hugging Face config.json" in str(info.value)


def test_malformed_json(tmp_path: Path) -> None:
    """Broken JSON names the file, the line and column, and asks to fix the syntax."""
    path = tmp_path / "config.json"
    path.write_text('{"hidden_size": 64,\n "vocab_size": }')
    with pytest.raises(SyncvizError) as info:
        ModelSpec.from_hf_config(path)
    assert str(path) in str(info.value)
    assert "is not valid JSON" in str(info.value)
    assert "line 2" in str(info.value)
    assert info.value.fix == "fix the JSON syntax; the file must hold one JSON object"


def test_json_that_is_not_an_object(tmp_path: Path) -> None:
    """A JSON list is refused: a config.json holds one object."""
    path = tmp_path / "config.json"
    path.write_text("[1, 2]")
    with pytest.raises(SyncvizError, match="holds a JSON list, not an object"):
        ModelSpec.from_hf_config(path)


def test_missing_key_is_named(tmp_path: Path) -> None:
    """A missing required key is named, with the file it is missing from."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({k: v for k, v in LLAMA.items() if k != "hidden_size"}))
    with pytest.raises(SyncvizError) as info:
        ModelSpec.from_hf_config(path)
    assert f"{str(path)!r} has no 'hidden_size'" in str(info.value)
    assert 'add "hidden_size": <positive integer>' in str(info.value)


@pytest.mark.parametrize("value", [0, -4, "64", 6.5, True])
def test_bad_size_values(value: object) -> None:
    """A size that is not a positive integer is refused, naming the key and the value."""
    with pytest.raises(SyncvizError, match=f"hidden_size \\({value!r}\\) in the config dict"):
        ModelSpec.from_hf_config({**LLAMA, "hidden_size": value})


def test_mixed_dense_and_moe_layers_are_refused() -> None:
    """Qwen2-MoE configs with dense layers (mlp_only_layers) cannot be one ModelSpec."""
    config = {
        **LLAMA,
        "architectures": ["Qwen2MoeForCausalLM"],
        "num_experts": 4,
        "moe_intermediate_size": 32,
        "mlp_only_layers": [0],
    }
    with pytest.raises(SyncvizError, match="mixes dense and MoE layers"):
        ModelSpec.from_hf_config(config)


def test_not_a_path_or_dict() -> None:
    """Something that is neither a path nor a dict is refused by type."""
    with pytest.raises(SyncvizError, match=r"config \(int\) must be a path or a dict"):
        ModelSpec.from_hf_config(42)  # type: ignore[arg-type]


# ---------------------------------------------------------------- scaled


def first_broken_rule(spec: ModelSpec, src: Parallel, dst: Parallel) -> int | None:
    """Index of the first rule the sizes break (the rule lists of a spec and its scaled copy
    line up: they depend only on the family and on which sizes are non-zero)."""
    for index, rule in enumerate(rules(spec)):
        if not rule.holds(src, dst):
            return index
    return None


def test_scaled_llama3_70b_hand_worked() -> None:
    """llama3-70b: 64 heads x 4 = 256 hidden; ffn 28672 = 2^12*7 is divisible by every tp up
    to 64, so it becomes 2 rows per rank at tp 64 = 128; vocab 128256 = 2^8*501 keeps 256."""
    small = preset("llama3-70b").scaled()
    assert (small.hidden_size, small.head_dim, small.ffn_hidden_size) == (256, 4, 128)
    assert (small.vocab_size, small.padded_vocab_size) == (256, 256)
    assert (small.num_layers, small.num_attention_heads, small.num_query_groups) == (80, 64, 8)
    assert small.name == "llama3-70b (scaled)"


def test_scaled_qwen2_7b_hand_worked() -> None:
    """qwen2-7b: ffn 18944 = 2^9*37 is divisible by tp 1, 2, 4 but not 7, so it becomes 8
    (2 rows per rank at tp 4, and not a multiple of 7); the padded vocab 152064 = 2^9*297
    is divisible by 128*2 and 128*4 but not by 7, so it becomes 512."""
    small = preset("qwen2-7b").scaled()
    assert (small.hidden_size, small.ffn_hidden_size, small.vocab_size) == (112, 8, 512)


def test_scaled_keeps_what_fixes_the_layout() -> None:
    """Scaling keeps family, layers, heads, groups, experts and the flags of every preset."""
    kept = ("family", "num_layers", "num_attention_heads", "num_query_groups", "num_experts",
            "tie_word_embeddings", "qkv_bias", "shared_expert_gate")  # fmt: skip
    for spec in PRESETS.values():
        small = spec.scaled()
        assert [getattr(small, k) for k in kept] == [getattr(spec, k) for k in kept]
        assert small.head_dim == 4
        # An explicit head_dim (Qwen3) stays apart from hidden/heads when scaled.
        explicit = spec.hidden_size != spec.num_attention_heads * spec.head_dim
        assert (small.hidden_size != small.num_attention_heads * 4) == explicit, spec.name
        padding = spec.padded_vocab_size - spec.vocab_size
        assert small.padded_vocab_size - small.vocab_size == padding


@pytest.mark.parametrize(
    "name, src, dst",
    [
        ("llama3-70b", Parallel(8), Parallel(8)),
        ("llama3-8b", Parallel(2), Parallel(16)),
        ("qwen2-7b", Parallel(2), Parallel(4)),
        ("qwen1.5-moe-a2.7b", Parallel(4, ep=15), Parallel(16)),
        ("qwen2-57b-a14b", Parallel(2, ep=16), Parallel(4)),
        ("mixtral-8x7b", Parallel(2, ep=4), Parallel(8)),
    ],
)
def test_scaled_keeps_divisibility(name: str, src: Parallel, dst: Parallel) -> None:
    """A scaled spec passes validate for valid sizes, and every split size divides by tp."""
    small = preset(name).scaled(src, dst)
    validate(small, src, dst)
    for tp in (src.tp, dst.tp):
        assert small.hidden_size % tp == 0
        assert small.num_attention_heads * small.head_dim % tp == 0
        assert small.ffn_hidden_size % tp == 0 or small.is_moe
        assert small.moe_ffn_hidden_size % tp == 0
        assert small.shared_expert_ffn_hidden_size % tp == 0
    assert small.padded_vocab_size % dst.tp == 0


@pytest.mark.parametrize("name", ["llama3-70b", "qwen2-7b", "qwen1.5-moe-a2.7b", "gqa-custom"])
def test_scaled_breaks_the_same_rules(name: str) -> None:
    """For every tp pair up to 32, the scaled spec breaks the same first rule as the original."""
    spec = shipped_config(name) if name == "gqa-custom" else preset(name)
    small = spec.scaled()
    for s in range(1, 33):
        for d in range(1, 33):
            src, dst = Parallel(s), Parallel(d)
            assert first_broken_rule(small, src, dst) == first_broken_rule(spec, src, dst), (s, d)


def test_scaled_keeps_vllm_vocab_padding() -> None:
    """mixtral-tiny's vocab 1000 pads by 24 rows to 1024; the scaled vocab pads by 24 too."""
    small = shipped_config("mixtral-tiny").scaled()
    assert small.padded_vocab_size - small.vocab_size == 24
    assert small.vocab_size % 64 == 40


def test_scaled_with_sizes_outside_the_heads() -> None:
    """Given src/dst tps are candidates too, so an invalid size stays invalid for the same rule."""
    spec = preset("llama3-8b")
    src, dst = Parallel(2), Parallel(3)
    small = spec.scaled(src, dst)
    assert first_broken_rule(small, src, dst) == first_broken_rule(spec, src, dst) is not None


def test_scaled_explicit_head_dim() -> None:
    """With head_dim not hidden/heads, hidden keeps its own divisibility and head_dim shrinks."""
    spec = ModelSpec("hd", "llama-mcore", 2, 96, 8, 2, 192, 500, head_dim=16)
    small = spec.scaled(target_head_dim=2)
    assert (small.head_dim, small.hidden_size % 8, small.hidden_size < 96) == (2, 0, True)


def test_scaled_layers_option() -> None:
    """num_layers= reduces layers; it must still divide by the given pp sizes."""
    spec = preset("llama3-8b")
    assert spec.scaled(num_layers=4).num_layers == 4
    assert spec.scaled(Parallel(2, pp=2), Parallel(2, pp=4), num_layers=8).num_layers == 8
    with pytest.raises(SyncvizError, match=r"num_layers \(6\) must be divisible by dst pp \(4\)"):
        spec.scaled(Parallel(2, pp=2), Parallel(2, pp=4), num_layers=6)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_scaled_rejects_bad_head_dim(bad: object) -> None:
    """target_head_dim must be a positive integer."""
    with pytest.raises(SyncvizError, match=r"target_head_dim \(.*\) must be a positive integer"):
        preset("llama3-8b").scaled(target_head_dim=bad)  # type: ignore[arg-type]


def test_scaling_twice_does_not_repeat_the_suffix() -> None:
    """The name carries one "(scaled)" however often a spec is scaled."""
    assert preset("qwen-7b").scaled().scaled().name == "qwen-7b (scaled)"


@st.composite
def small_specs(draw: st.DrawFn) -> ModelSpec:
    heads = draw(st.sampled_from([4, 6, 8, 12, 16, 24, 28, 32]))
    groups = draw(st.sampled_from([g for g in range(1, heads + 1) if heads % g == 0]))
    moe = draw(st.booleans())
    return ModelSpec(
        "random", "qwen2-moe" if moe else "qwen2", draw(st.integers(1, 12)), heads * 8, heads,
        groups, draw(st.integers(1, 40_000)), draw(st.integers(1, 200_000)),
        num_experts=draw(st.sampled_from([4, 8, 60, 64])) if moe else 0,
        moe_ffn_hidden_size=draw(st.integers(1, 5000)) if moe else 0,
        shared_expert_ffn_hidden_size=draw(st.integers(0, 20_000)) if moe else 0,
    )  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(small_specs())
def test_scaled_random_specs_break_the_same_rules(spec: ModelSpec) -> None:
    """Property: for random specs, every tp pair up to 16 breaks the same first rule scaled."""
    small = spec.scaled()
    assert small.ffn_hidden_size <= max(spec.ffn_hidden_size, 2 * spec.num_attention_heads)
    for s in range(1, 17):
        for d in range(1, 17):
            src, dst = Parallel(s), Parallel(d)
            assert first_broken_rule(small, src, dst) == first_broken_rule(spec, src, dst), (s, d)
