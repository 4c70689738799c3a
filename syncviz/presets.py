"""Model presets, from each model's published config.json, and the small shipped configs.

>>> from syncviz.presets import preset, shipped_config
>>> preset("qwen2-57b-a14b").num_experts
64
>>> shipped_config("mixtral-tiny").num_experts
4
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from syncviz.errors import SyncvizError
from syncviz.spec import ModelSpec

# Each preset cites its Hugging Face repo and the config.json fields it takes:
# num_hidden_layers, hidden_size, num_attention_heads, num_key_value_heads (absent
# means = heads), head_dim (where given), intermediate_size, vocab_size,
# tie_word_embeddings, and for MoE num_experts / num_local_experts,
# moe_intermediate_size, shared_expert_intermediate_size.
PRESETS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        # meta-llama/Llama-2-7b-hf: layers 32, hidden 4096, heads 32, no num_key_value_heads
        # (MHA), intermediate 11008, vocab 32000, tie_word_embeddings false.
        ModelSpec("llama2-7b", "llama-legacy", 32, 4096, 32, 32, 11008, 32000,
                  source="meta-llama/Llama-2-7b-hf config.json"),
        # meta-llama/Meta-Llama-3-8B: layers 32, hidden 4096, heads 32, kv heads 8,
        # intermediate 14336, vocab 128256, tie_word_embeddings false.
        ModelSpec("llama3-8b", "llama-mcore", 32, 4096, 32, 8, 14336, 128256,
                  source="meta-llama/Meta-Llama-3-8B config.json"),
        # meta-llama/Meta-Llama-3-70B: layers 80, hidden 8192, heads 64, kv heads 8,
        # intermediate 28672, vocab 128256, tie_word_embeddings false.
        ModelSpec("llama3-70b", "llama-mcore", 80, 8192, 64, 8, 28672, 128256,
                  source="meta-llama/Meta-Llama-3-70B config.json"),
        # meta-llama/Llama-3.1-405B: layers 126, hidden 16384, heads 128, kv heads 8,
        # intermediate 53248, vocab 128256, tie_word_embeddings false.
        ModelSpec("llama3.1-405b", "llama-mcore", 126, 16384, 128, 8, 53248, 128256,
                  source="meta-llama/Llama-3.1-405B config.json"),
        # Qwen/Qwen-7B (QWenLMHeadModel): layers 32, hidden 4096, heads 32, kv_channels 128,
        # intermediate_size 22016 = w1 + w2 fused, so 11008 per half; vocab 151936,
        # tie_word_embeddings false; attn.c_attn carries the QKV bias.
        ModelSpec("qwen-7b", "qwen-v1", 32, 4096, 32, 32, 11008, 151936, qkv_bias=True,
                  source="Qwen/Qwen-7B config.json"),
        # Qwen/Qwen2-7B: layers 28, hidden 3584, heads 28, kv heads 4, intermediate 18944,
        # vocab 152064, tie_word_embeddings false; Qwen2 has q/k/v biases.
        ModelSpec("qwen2-7b", "qwen2", 28, 3584, 28, 4, 18944, 152064, qkv_bias=True,
                  source="Qwen/Qwen2-7B config.json"),
        # Qwen/Qwen2-72B: layers 80, hidden 8192, heads 64, kv heads 8, intermediate 29568,
        # vocab 152064, tie_word_embeddings false.
        ModelSpec("qwen2-72b", "qwen2", 80, 8192, 64, 8, 29568, 152064, qkv_bias=True,
                  source="Qwen/Qwen2-72B config.json"),
        # Qwen/Qwen1.5-MoE-A2.7B: layers 24, hidden 2048, heads 16, kv heads 16,
        # intermediate 5632, num_experts 60, moe_intermediate_size 1408,
        # shared_expert_intermediate_size 5632 (with shared_expert_gate), vocab 151936.
        ModelSpec("qwen1.5-moe-a2.7b", "qwen2-moe", 24, 2048, 16, 16, 5632, 151936,
                  qkv_bias=True, num_experts=60, moe_ffn_hidden_size=1408,
                  shared_expert_ffn_hidden_size=5632, shared_expert_gate=True,
                  source="Qwen/Qwen1.5-MoE-A2.7B config.json"),
        # Qwen/Qwen2-57B-A14B: layers 28, hidden 3584, heads 28, kv heads 4,
        # intermediate 18944, num_experts 64, moe_intermediate_size 2560,
        # shared_expert_intermediate_size 20480, vocab 151936, tie_word_embeddings false.
        ModelSpec("qwen2-57b-a14b", "qwen2-moe", 28, 3584, 28, 4, 18944, 151936,
                  qkv_bias=True, num_experts=64, moe_ffn_hidden_size=2560,
                  shared_expert_ffn_hidden_size=20480, shared_expert_gate=True,
                  source="Qwen/Qwen2-57B-A14B config.json"),
        # mistralai/Mixtral-8x7B-v0.1: layers 32, hidden 4096, heads 32, kv heads 8,
        # intermediate 14336 (each expert's size; no dense MLP), num_local_experts 8,
        # vocab 32000, tie_word_embeddings false.
        ModelSpec("mixtral-8x7b", "mixtral", 32, 4096, 32, 8, 14336, 32000,
                  num_experts=8, moe_ffn_hidden_size=14336,
                  source="mistralai/Mixtral-8x7B-v0.1 config.json"),
        # mistralai/Mistral-7B-v0.3 (MistralForCausalLM, Llama's layout): layers 32, hidden
        # 4096, heads 32, kv heads 8, no head_dim (4096/32 = 128), intermediate 14336, vocab
        # 32768, tie_word_embeddings false, no attention_bias, sliding_window null.
        ModelSpec("mistral-7b-v0.3", "mistral", 32, 4096, 32, 8, 14336, 32768,
                  source="mistralai/Mistral-7B-v0.3 config.json"),
        # Qwen/Qwen3-0.6B: layers 28, hidden 1024, heads 16, kv heads 8, head_dim 128
        # (16 * 128 = 2048, not 1024), intermediate 3072, vocab 151936,
        # tie_word_embeddings true, attention_bias false; q_norm/k_norm per head.
        ModelSpec("qwen3-0.6b", "qwen3", 28, 1024, 16, 8, 3072, 151936, head_dim=128,
                  tie_word_embeddings=True, source="Qwen/Qwen3-0.6B config.json"),
        # Qwen/Qwen3-8B: layers 36, hidden 4096, heads 32, kv heads 8, head_dim 128,
        # intermediate 12288, vocab 151936, tie_word_embeddings false, attention_bias false.
        ModelSpec("qwen3-8b", "qwen3", 36, 4096, 32, 8, 12288, 151936, head_dim=128,
                  source="Qwen/Qwen3-8B config.json"),
        # Qwen/Qwen3-32B: layers 64, hidden 5120, heads 64, kv heads 8, head_dim 128
        # (64 * 128 = 8192, not 5120), intermediate 25600, vocab 151936,
        # tie_word_embeddings false, attention_bias false.
        ModelSpec("qwen3-32b", "qwen3", 64, 5120, 64, 8, 25600, 151936, head_dim=128,
                  source="Qwen/Qwen3-32B config.json"),
        # Qwen/Qwen3-30B-A3B (Qwen3MoeForCausalLM): layers 48, hidden 2048, heads 32, kv heads
        # 4, head_dim 128, intermediate 6144 (unused: every layer is MoE), num_experts 128,
        # moe_intermediate_size 768, decoder_sparse_step 1, mlp_only_layers [], no shared
        # expert, vocab 151936, tie_word_embeddings false, attention_bias false.
        ModelSpec("qwen3-30b-a3b", "qwen3-moe", 48, 2048, 32, 4, 6144, 151936, head_dim=128,
                  num_experts=128, moe_ffn_hidden_size=768,
                  source="Qwen/Qwen3-30B-A3B config.json"),
        # Qwen/Qwen3-235B-A22B: layers 94, hidden 4096, heads 64, kv heads 4, head_dim 128,
        # intermediate 12288 (unused), num_experts 128, moe_intermediate_size 1536,
        # decoder_sparse_step 1, mlp_only_layers [], vocab 151936, tie_word_embeddings false.
        ModelSpec("qwen3-235b-a22b", "qwen3-moe", 94, 4096, 64, 4, 12288, 151936,
                  head_dim=128, num_experts=128, moe_ffn_hidden_size=1536,
                  source="Qwen/Qwen3-235B-A22B config.json"),
    )
}  # fmt: skip

CONFIGS_DIR = Path(__file__).parent / "configs"


def preset(name: str) -> ModelSpec:
    """The preset called ``name``; an unknown name lists the known ones.

    >>> preset("llama3-8b").num_query_groups
    8
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise SyncvizError(
            f"unknown preset {name!r}", fix="use one of " + ", ".join(PRESETS)
        ) from None


def shipped_configs() -> tuple[str, ...]:
    """Names of the small config.json files shipped in ``syncviz/configs``.

    >>> shipped_configs()
    ('gqa-custom', 'mixtral-tiny')
    """
    return tuple(sorted(path.stem for path in CONFIGS_DIR.glob("*.json")))


def shipped_config(name: str) -> ModelSpec:
    """The shipped config ``syncviz/configs/<name>.json`` read as a ModelSpec.

    >>> shipped_config("gqa-custom").family
    'llama-mcore'
    """
    if name not in shipped_configs():
        raise SyncvizError(
            f"no shipped config {name!r}", fix="use one of " + ", ".join(shipped_configs())
        )
    spec = ModelSpec.from_hf_config(CONFIGS_DIR / f"{name}.json", name=name)
    return replace(spec, source=f"syncviz/configs/{name}.json")
