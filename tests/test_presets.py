"""Presets and shipped configs, against hand-written facts from the published config.json files."""

from __future__ import annotations

from dataclasses import replace

import pytest

from syncviz.errors import SyncvizError
from syncviz.presets import PRESETS, preset, shipped_config, shipped_configs
from syncviz.spec import ModelSpec

# The fields that fix the layout, copied by hand from each model's published config.json.
PUBLISHED = {
    "llama2-7b": {  # meta-llama/Llama-2-7b-hf
        "architectures": ["LlamaForCausalLM"], "num_hidden_layers": 32, "hidden_size": 4096,
        "num_attention_heads": 32, "intermediate_size": 11008, "vocab_size": 32000,
        "tie_word_embeddings": False,
    },
    "llama3-8b": {  # meta-llama/Meta-Llama-3-8B
        "architectures": ["LlamaForCausalLM"], "num_hidden_layers": 32, "hidden_size": 4096,
        "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
        "vocab_size": 128256, "tie_word_embeddings": False,
    },
    "llama3-70b": {  # meta-llama/Meta-Llama-3-70B
        "architectures": ["LlamaForCausalLM"], "num_hidden_layers": 80, "hidden_size": 8192,
        "num_attention_heads": 64, "num_key_value_heads": 8, "intermediate_size": 28672,
        "vocab_size": 128256, "tie_word_embeddings": False,
    },
    "llama3.1-405b": {  # meta-llama/Llama-3.1-405B
        "architectures": ["LlamaForCausalLM"], "num_hidden_layers": 126, "hidden_size": 16384,
        "num_attention_heads": 128, "num_key_value_heads": 8, "intermediate_size": 53248,
        "vocab_size": 128256, "tie_word_embeddings": False,
    },
    "qwen-7b": {  # Qwen/Qwen-7B
        "architectures": ["QWenLMHeadModel"], "num_hidden_layers": 32, "hidden_size": 4096,
        "num_attention_heads": 32, "kv_channels": 128, "intermediate_size": 22016,
        "vocab_size": 151936, "tie_word_embeddings": False,
    },
    "qwen2-7b": {  # Qwen/Qwen2-7B
        "architectures": ["Qwen2ForCausalLM"], "num_hidden_layers": 28, "hidden_size": 3584,
        "num_attention_heads": 28, "num_key_value_heads": 4, "intermediate_size": 18944,
        "vocab_size": 152064, "tie_word_embeddings": False,
    },
    "qwen2-72b": {  # Qwen/Qwen2-72B
        "architectures": ["Qwen2ForCausalLM"], "num_hidden_layers": 80, "hidden_size": 8192,
        "num_attention_heads": 64, "num_key_value_heads": 8, "intermediate_size": 29568,
        "vocab_size": 152064, "tie_word_embeddings": False,
    },
    "qwen1.5-moe-a2.7b": {  # Qwen/Qwen1.5-MoE-A2.7B
        "architectures": ["Qwen2MoeForCausalLM"], "num_hidden_layers": 24, "hidden_size": 2048,
        "num_attention_heads": 16, "num_key_value_heads": 16, "intermediate_size": 5632,
        "num_experts": 60, "moe_intermediate_size": 1408,
        "shared_expert_intermediate_size": 5632, "vocab_size": 151936,
        "tie_word_embeddings": False,
    },
    "qwen2-57b-a14b": {  # Qwen/Qwen2-57B-A14B
        "architectures": ["Qwen2MoeForCausalLM"], "num_hidden_layers": 28, "hidden_size": 3584,
        "num_attention_heads": 28, "num_key_value_heads": 4, "intermediate_size": 18944,
        "num_experts": 64, "moe_intermediate_size": 2560,
        "shared_expert_intermediate_size": 20480, "vocab_size": 151936,
        "tie_word_embeddings": False, "decoder_sparse_step": 1, "mlp_only_layers": [],
    },
    "mixtral-8x7b": {  # mistralai/Mixtral-8x7B-v0.1
        "architectures": ["MixtralForCausalLM"], "num_hidden_layers": 32, "hidden_size": 4096,
        "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
        "num_local_experts": 8, "vocab_size": 32000, "tie_word_embeddings": False,
    },
    "mistral-7b-v0.3": {  # mistralai/Mistral-7B-v0.3
        "architectures": ["MistralForCausalLM"], "model_type": "mistral",
        "num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32,
        "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 32768,
        "tie_word_embeddings": False, "sliding_window": None, "rope_theta": 1000000.0,
    },
    "qwen3-0.6b": {  # Qwen/Qwen3-0.6B
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "num_hidden_layers": 28,
        "hidden_size": 1024, "num_attention_heads": 16, "num_key_value_heads": 8,
        "head_dim": 128, "intermediate_size": 3072, "vocab_size": 151936,
        "tie_word_embeddings": True, "attention_bias": False, "max_window_layers": 28,
        "use_sliding_window": False,
    },
    "qwen3-8b": {  # Qwen/Qwen3-8B
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "num_hidden_layers": 36,
        "hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8,
        "head_dim": 128, "intermediate_size": 12288, "vocab_size": 151936,
        "tie_word_embeddings": False, "attention_bias": False, "max_window_layers": 36,
    },
    "qwen3-32b": {  # Qwen/Qwen3-32B
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "num_hidden_layers": 64,
        "hidden_size": 5120, "num_attention_heads": 64, "num_key_value_heads": 8,
        "head_dim": 128, "intermediate_size": 25600, "vocab_size": 151936,
        "tie_word_embeddings": False, "attention_bias": False,
    },
    "qwen3-30b-a3b": {  # Qwen/Qwen3-30B-A3B
        "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
        "num_hidden_layers": 48, "hidden_size": 2048, "num_attention_heads": 32,
        "num_key_value_heads": 4, "head_dim": 128, "intermediate_size": 6144,
        "moe_intermediate_size": 768, "num_experts": 128, "num_experts_per_tok": 8,
        "decoder_sparse_step": 1, "mlp_only_layers": [], "norm_topk_prob": True,
        "vocab_size": 151936, "tie_word_embeddings": False, "attention_bias": False,
    },
    "qwen3-235b-a22b": {  # Qwen/Qwen3-235B-A22B
        "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
        "num_hidden_layers": 94, "hidden_size": 4096, "num_attention_heads": 64,
        "num_key_value_heads": 4, "head_dim": 128, "intermediate_size": 12288,
        "moe_intermediate_size": 1536, "num_experts": 128, "num_experts_per_tok": 8,
        "decoder_sparse_step": 1, "mlp_only_layers": [], "vocab_size": 151936,
        "tie_word_embeddings": False, "attention_bias": False,
    },
    "gpt-oss-20b": {  # openai/gpt-oss-20b
        "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss",
        "num_hidden_layers": 24, "hidden_size": 2880, "num_attention_heads": 64,
        "num_key_value_heads": 8, "head_dim": 64, "intermediate_size": 2880,
        "num_local_experts": 32, "num_experts_per_tok": 4, "experts_per_token": 4,
        "vocab_size": 201088, "tie_word_embeddings": False, "attention_bias": True,
        "sliding_window": 128, "layer_types": ["sliding_attention", "full_attention"] * 12,
        "swiglu_limit": 7.0, "quantization_config": {"quant_method": "mxfp4"},
    },
    "gpt-oss-120b": {  # openai/gpt-oss-120b
        "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss",
        "num_hidden_layers": 36, "hidden_size": 2880, "num_attention_heads": 64,
        "num_key_value_heads": 8, "head_dim": 64, "intermediate_size": 2880,
        "num_local_experts": 128, "num_experts_per_tok": 4, "experts_per_token": 4,
        "vocab_size": 201088, "tie_word_embeddings": False, "attention_bias": True,
        "sliding_window": 128, "layer_types": ["sliding_attention", "full_attention"] * 18,
        "swiglu_limit": 7.0, "quantization_config": {"quant_method": "mxfp4"},
    },
    "deepseek-v3": {  # deepseek-ai/DeepSeek-V3
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
        "num_hidden_layers": 61, "hidden_size": 7168, "num_attention_heads": 128,
        "num_key_value_heads": 128, "intermediate_size": 18432, "moe_intermediate_size": 2048,
        "n_routed_experts": 256, "n_shared_experts": 1, "first_k_dense_replace": 3,
        "moe_layer_freq": 1, "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128,
        "qk_rope_head_dim": 64, "v_head_dim": 128, "topk_method": "noaux_tc", "n_group": 8,
        "topk_group": 4, "num_experts_per_tok": 8, "num_nextn_predict_layers": 1,
        "vocab_size": 129280, "tie_word_embeddings": False,
        "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3",
                                "quant_method": "fp8", "weight_block_size": [128, 128]},
    },
    "kimi-k2": {  # moonshotai/Kimi-K2-Instruct
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "kimi_k2",
        "num_hidden_layers": 61, "hidden_size": 7168, "num_attention_heads": 64,
        "num_key_value_heads": 64, "intermediate_size": 18432, "moe_intermediate_size": 2048,
        "n_routed_experts": 384, "n_shared_experts": 1, "first_k_dense_replace": 1,
        "moe_layer_freq": 1, "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128,
        "qk_rope_head_dim": 64, "v_head_dim": 128, "topk_method": "noaux_tc", "n_group": 1,
        "topk_group": 1, "num_experts_per_tok": 8, "num_nextn_predict_layers": 0,
        "vocab_size": 163840, "tie_word_embeddings": False,
    },
    "moonlight-16b-a3b": {  # moonshotai/Moonlight-16B-A3B
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
        "num_hidden_layers": 27, "hidden_size": 2048, "num_attention_heads": 16,
        "num_key_value_heads": 16, "intermediate_size": 11264, "moe_intermediate_size": 1408,
        "n_routed_experts": 64, "n_shared_experts": 2, "first_k_dense_replace": 1,
        "moe_layer_freq": 1, "q_lora_rank": None, "kv_lora_rank": 512, "qk_nope_head_dim": 128,
        "qk_rope_head_dim": 64, "v_head_dim": 128, "topk_method": "noaux_tc",
        "vocab_size": 163840, "tie_word_embeddings": False,
    },
    "glm-4.5": {  # zai-org/GLM-4.5
        "architectures": ["Glm4MoeForCausalLM"], "model_type": "glm4_moe",
        "num_hidden_layers": 92, "hidden_size": 5120, "num_attention_heads": 96,
        "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 12288,
        "moe_intermediate_size": 1536, "n_routed_experts": 160, "n_shared_experts": 1,
        "first_k_dense_replace": 3, "attention_bias": True, "use_qk_norm": True,
        "partial_rotary_factor": 0.5, "num_nextn_predict_layers": 1, "n_group": 1,
        "topk_group": 1, "num_experts_per_tok": 8, "vocab_size": 151552,
        "tie_word_embeddings": False,
    },
    "glm-4.5-air": {  # zai-org/GLM-4.5-Air
        "architectures": ["Glm4MoeForCausalLM"], "model_type": "glm4_moe",
        "num_hidden_layers": 46, "hidden_size": 4096, "num_attention_heads": 96,
        "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 10944,
        "moe_intermediate_size": 1408, "n_routed_experts": 128, "n_shared_experts": 1,
        "first_k_dense_replace": 1, "attention_bias": True, "use_qk_norm": False,
        "partial_rotary_factor": 0.5, "num_nextn_predict_layers": 1, "n_group": 1,
        "topk_group": 1, "num_experts_per_tok": 8, "vocab_size": 151552,
        "tie_word_embeddings": False,
    },
    # google/gemma-3-12b-it, as published: the multimodal wrapper; its text_config leaves
    # head_dim, vocab_size and tie_word_embeddings to Gemma3TextConfig's defaults.
    "gemma3-12b": {
        "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
        "text_config": {
            "hidden_size": 3840, "intermediate_size": 15360, "model_type": "gemma3_text",
            "num_attention_heads": 16, "num_hidden_layers": 48, "num_key_value_heads": 8,
            "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "sliding_window": 1024,
        },
        "vision_config": {"hidden_size": 1152, "num_hidden_layers": 27},
    },
    "gemma3-1b": {  # google/gemma-3-1b-it
        "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
        "num_hidden_layers": 26, "hidden_size": 1152, "num_attention_heads": 4,
        "num_key_value_heads": 1, "head_dim": 256, "intermediate_size": 6912,
        "vocab_size": 262144, "attention_bias": False, "query_pre_attn_scalar": 256,
        "sliding_window": 512, "sliding_window_pattern": 6,
    },
}  # fmt: skip

FAMILIES = {
    "llama2-7b": "llama-legacy",
    "llama3-8b": "llama-mcore",
    "llama3-70b": "llama-mcore",
    "llama3.1-405b": "llama-mcore",
    "qwen-7b": "qwen-v1",
    "qwen2-7b": "qwen2",
    "qwen2-72b": "qwen2",
    "qwen1.5-moe-a2.7b": "qwen2-moe",
    "qwen2-57b-a14b": "qwen2-moe",
    "mixtral-8x7b": "mixtral",
    "mistral-7b-v0.3": "mistral",
    "qwen3-0.6b": "qwen3",
    "qwen3-8b": "qwen3",
    "qwen3-32b": "qwen3",
    "qwen3-30b-a3b": "qwen3-moe",
    "qwen3-235b-a22b": "qwen3-moe",
    "gpt-oss-20b": "gpt-oss",
    "gpt-oss-120b": "gpt-oss",
    "deepseek-v3": "deepseek-v3",
    "kimi-k2": "deepseek-v3",
    "moonlight-16b-a3b": "deepseek-v3",
    "glm-4.5": "glm4-moe",
    "glm-4.5-air": "glm4-moe",
    "gemma3-12b": "gemma3",
    "gemma3-1b": "gemma3",
}


def test_the_presets_and_their_families() -> None:
    """Exactly the twenty-five presets exist, each in its agreed trainer family."""
    assert {name: spec.family for name, spec in PRESETS.items()} == FAMILIES


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_matches_published_config(name: str) -> None:
    """Reading the published config.json gives the preset (llama2-7b's family aside)."""
    read = ModelSpec.from_hf_config(PUBLISHED[name], name=name)
    assert replace(read, family=PRESETS[name].family) == PRESETS[name]


def test_llama3_8b_sizes() -> None:
    """llama3-8b: head_dim 4096/32 = 128, 4 queries per K/V head, vocab already a multiple of 64."""
    spec = preset("llama3-8b")
    assert (spec.head_dim, spec.queries_per_group, spec.is_gqa) == (128, 4, True)
    assert spec.padded_vocab_size == 128256


def test_qwen2_7b_sizes() -> None:
    """qwen2-7b: head_dim 3584/28 = 128, 7 queries per K/V head, padded vocab 152064, QKV bias."""
    spec = preset("qwen2-7b")
    assert (spec.head_dim, spec.queries_per_group, spec.padded_vocab_size) == (128, 7, 152064)
    assert spec.qkv_bias is True


def test_qwen_7b_ffn_is_one_half_of_the_fused_size() -> None:
    """qwen-7b: config intermediate_size 22016 holds w1 and w2, so one half is 11008."""
    spec = preset("qwen-7b")
    assert (spec.ffn_hidden_size, spec.head_dim, spec.is_gqa) == (11008, 128, False)


def test_moe_presets() -> None:
    """MoE sizes: Qwen1.5-MoE 60x1408 + shared 5632, Qwen2-57B 64x2560 + 20480, Mixtral
    8x14336, Qwen3-30B-A3B 128x768, Qwen3-235B-A22B 128x1536 (no shared expert), gpt-oss
    32x2880 (20b) and 128x2880 (120b), DeepSeek-V3 256x2048 + 1 shared, Kimi-K2 384x2048 + 1,
    Moonlight 64x1408 + 2, GLM-4.5 160x1536 + 1, GLM-4.5-Air 128x1408 + 1."""
    got = {
        name: (s.num_experts, s.moe_ffn_hidden_size, s.shared_expert_ffn_hidden_size)
        for name, s in PRESETS.items()
        if s.is_moe
    }
    assert got == {
        "qwen1.5-moe-a2.7b": (60, 1408, 5632),
        "qwen2-57b-a14b": (64, 2560, 20480),
        "mixtral-8x7b": (8, 14336, 0),
        "qwen3-30b-a3b": (128, 768, 0),
        "qwen3-235b-a22b": (128, 1536, 0),
        "gpt-oss-20b": (32, 2880, 0),
        "gpt-oss-120b": (128, 2880, 0),
        "deepseek-v3": (256, 2048, 2048),
        "kimi-k2": (384, 2048, 2048),
        "moonlight-16b-a3b": (64, 1408, 2816),
        "glm-4.5": (160, 1536, 1536),
        "glm-4.5-air": (128, 1408, 1408),
    }


def test_bias_gate_and_tied_embeddings_flags() -> None:
    """Only Qwen before Qwen3, GLM-4.5 and gpt-oss have a QKV bias, only qwen2-moe a
    shared-expert gate, only Qwen3-0.6B and Gemma-3 tie embeddings, only Qwen3, GLM-4.5
    (not Air) and Gemma-3 have q/k norms, only Gemma-3 has output norms."""
    for name, spec in PRESETS.items():
        qwen3, glm = name.startswith("qwen3"), name.startswith("glm")
        gpt_oss, gemma3 = name.startswith("gpt-oss"), name.startswith("gemma3")
        assert spec.qkv_bias == ((name.startswith("qwen") and not qwen3) or glm or gpt_oss), name
        assert spec.shared_expert_gate == (spec.family == "qwen2-moe"), name
        assert spec.tie_word_embeddings is (name == "qwen3-0.6b" or gemma3), name
        assert spec.qk_norm is (qwen3 or name == "glm-4.5" or gemma3), name
        assert spec.output_norms is gemma3, name


def test_qwen3_head_dim_is_explicit() -> None:
    """Qwen3 head_dim 128 while hidden/heads is 5120/64 = 80 (32B) and 2048/32 = 64 (30B-A3B)."""
    for name, derived in (("qwen3-32b", 80), ("qwen3-30b-a3b", 64), ("qwen3-8b", 128)):
        spec = preset(name)
        assert spec.hidden_size // spec.num_attention_heads == derived
        assert spec.head_dim == 128


def test_unknown_preset_lists_the_known_ones() -> None:
    """An unknown preset name is a SyncvizError naming it and listing the presets."""
    with pytest.raises(SyncvizError) as info:
        preset("llama4")
    assert "'llama4'" in str(info.value)
    assert "llama3-8b, llama3-70b" in str(info.value)


def test_shipped_configs() -> None:
    """The two shipped configs read as written: Mixtral 2x256, 8/2 heads, 4 experts; GQA 12/4."""
    assert shipped_configs() == ("gqa-custom", "mixtral-tiny")
    mixtral = shipped_config("mixtral-tiny")
    assert (mixtral.family, mixtral.num_layers, mixtral.hidden_size) == ("mixtral", 2, 256)
    assert (mixtral.num_attention_heads, mixtral.num_query_groups, mixtral.head_dim) == (8, 2, 32)
    assert (mixtral.num_experts, mixtral.moe_ffn_hidden_size) == (4, 512)
    assert (mixtral.vocab_size, mixtral.padded_vocab_size) == (1000, 1024)
    gqa = shipped_config("gqa-custom")
    assert (gqa.family, gqa.num_layers, gqa.hidden_size, gqa.head_dim) == ("llama-mcore", 4, 96, 8)
    assert (gqa.num_attention_heads, gqa.num_query_groups, gqa.ffn_hidden_size) == (12, 4, 384)
    assert (gqa.vocab_size, gqa.padded_vocab_size, gqa.is_moe) == (760, 768, False)


def test_unknown_shipped_config() -> None:
    """An unknown shipped config name lists the shipped ones."""
    with pytest.raises(SyncvizError, match="use one of gqa-custom, mixtral-tiny"):
        shipped_config("nope")
