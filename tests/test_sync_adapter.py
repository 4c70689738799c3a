"""Duck-typed models from a ModelSpec, and choosing the synchronizer class from them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from syncviz.parallel import Parallel
from syncviz.spec import ModelSpec
from syncviz.sync import (
    BaseSync,
    MegatronMegatronSync,
    MegatronVllmLlamaSync,
    MegatronVllmQWen2Sync,
    MegatronVllmQWenSync,
    get_synchronizer,
)
from syncviz.sync.adapter import MEGATRON, ModuleArgs, StageActor, SyncModel, models_for


def _spec(family: str, **extra) -> ModelSpec:
    sizes = dict(num_layers=2, hidden_size=32, num_attention_heads=8, num_query_groups=2)
    sizes.update(extra)
    return ModelSpec(name="t", family=family, ffn_hidden_size=64, vocab_size=100, **sizes)


def test_models_carry_megatron_argument_names_with_each_sides_parallel_sizes():
    """src/dst args_dict hold the spec sizes and that side's tp/pp/ep."""
    src, dst = models_for(_spec("qwen2"), Parallel(tp=2, pp=2, ep=1), Parallel(tp=4))
    args = src.module_args.args_dict
    assert (args["tensor_model_parallel_size"], args["pipeline_model_parallel_size"]) == (2, 2)
    assert (args["num_attention_heads"], args["num_query_groups"]) == (8, 2)
    assert args["group_query_attention"] is True
    assert args["hidden_size"] == 32 and args["kv_channels"] == 4
    assert dst.module_args.args_dict["tensor_model_parallel_size"] == 4
    assert (src.backend, dst.backend) == ("megatron", "vllm")


def test_mha_spec_has_group_query_attention_off():
    """num_query_groups == heads means plain multi-head attention."""
    src, _ = models_for(_spec("llama-legacy", num_query_groups=8), Parallel(tp=1), Parallel(tp=1))
    assert src.module_args["group_query_attention"] is False
    assert src.module_args["use_legacy_models"] is True


@pytest.mark.parametrize(
    ("family", "cls"),
    [
        ("llama-legacy", MegatronVllmLlamaSync),
        ("llama-mcore", MegatronVllmLlamaSync),
        ("qwen-v1", MegatronVllmQWenSync),
        ("qwen2", MegatronVllmQWen2Sync),
        ("qwen2-moe", MegatronVllmQWen2Sync),
    ],
)
def test_get_synchronizer_picks_the_class_by_architecture(family, cls):
    """Each supported family gets ChatLearn's class for its HF architecture."""
    extra = {"num_experts": 4, "moe_ffn_hidden_size": 8} if family == "qwen2-moe" else {}
    sync = get_synchronizer(*models_for(_spec(family, **extra), Parallel(tp=1), Parallel(tp=2)))
    assert type(sync) is cls


def test_unsupported_architecture_raises_the_original_error():
    """Mixtral has no ChatLearn synchronizer: RuntimeError with the original text."""
    spec = _spec("mixtral", num_experts=4, moe_ffn_hidden_size=32)
    models = models_for(spec, Parallel(tp=1), Parallel(tp=2))
    with pytest.raises(RuntimeError) as info:
        get_synchronizer(*models)
    assert str(info.value) == (
        "Unsupported model MixtralForCausalLM, Expect QWenLMHeadModel, Qwen2ForCausalLM,"
        " Qwen2MoeForCausalLM or LlamaForCausalLM."
    )


def test_get_synchronizer_unwraps_dist_models_and_handles_other_backends():
    """replicas[0].model is used; megatron->megatron and anything else get their classes."""
    megatron = SyncModel("a", MEGATRON, ModuleArgs({}))
    wrapped = SimpleNamespace(replicas=[SimpleNamespace(model=megatron)])
    assert type(get_synchronizer(wrapped, megatron)) is MegatronMegatronSync
    other = SyncModel("b", "hf", ModuleArgs({}))
    assert type(get_synchronizer(other, megatron)) is BaseSync


def test_qwen2_synchronizer_maps_names_with_both_stage_offsets():
    """Built from models_for, name mapping adds src + dst layer offsets (1 + 2 -> layer 3)."""
    sync = MegatronVllmQWen2Sync(*models_for(_spec("qwen2"), Parallel(tp=1), Parallel(tp=1)))
    src = ["module.module.language_model.encoder.layers.0.self_attention.query_key_value.weight"]
    _, dst = sync.map_name_from_src_to_dst(StageActor(1), StageActor(2), src, [])
    assert dst == ["model.model.layers.3.self_attn.qkv_proj.weight"]
    assert sync.concat_params_dict == {"modules": ["mlp.w1", "mlp.w2"], "dim": 0}


@pytest.mark.parametrize(
    ("family", "map_class"),
    [("llama-legacy", "Megatron2LlamaSyncMap"), ("llama-mcore", "MCore2LlamaSyncMap")],
)
def test_llama_sync_map_follows_use_legacy_models(family, map_class):
    """Legacy Llama specs get the legacy name map, Megatron-Core ones the MCore map."""
    sync = MegatronVllmLlamaSync(*models_for(_spec(family), Parallel(tp=1), Parallel(tp=1)))
    sync.map_name_from_src_to_dst(StageActor(0), StageActor(0), [], [])
    assert type(sync.sync_map).__name__ == map_class
