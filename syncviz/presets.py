"""Model presets, from each model's published config.json.

>>> from syncviz.presets import preset
>>> preset("qwen2-57b-a14b").num_experts
64
"""

from __future__ import annotations

from syncviz.errors import SyncvizError
from syncviz.spec import ModelSpec

PRESETS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("llama2-7b", "llama-legacy", 32, 4096, 32, 32, 11008, 32000),
        ModelSpec("llama3-8b", "llama-mcore", 32, 4096, 32, 8, 14336, 128256),
        ModelSpec("llama3-70b", "llama-mcore", 80, 8192, 64, 8, 28672, 128256),
        ModelSpec("qwen-7b", "qwen-v1", 32, 4096, 32, 32, 11008, 151936, qkv_bias=True),
        ModelSpec("qwen2-7b", "qwen2", 28, 3584, 28, 4, 18944, 152064, qkv_bias=True),
        ModelSpec("qwen2-72b", "qwen2", 80, 8192, 64, 8, 29568, 152064, qkv_bias=True),
        ModelSpec("qwen1.5-moe-a2.7b", "qwen2-moe", 24, 2048, 16, 16, 5632, 151936,
                  qkv_bias=True, num_experts=60, moe_ffn_hidden_size=1408,
                  shared_expert_ffn_hidden_size=5632, shared_expert_gate=True),
        ModelSpec("qwen2-57b-a14b", "qwen2-moe", 28, 3584, 28, 4, 18944, 151936,
                  qkv_bias=True, num_experts=64, moe_ffn_hidden_size=2560,
                  shared_expert_ffn_hidden_size=20480, shared_expert_gate=True),
        ModelSpec("mixtral-8x7b", "mixtral", 32, 4096, 32, 8, 14336, 32000,
                  num_experts=8, moe_ffn_hidden_size=14336),
    )
}


def preset(name: str) -> ModelSpec:
    """The preset called ``name``; an unknown name lists the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise SyncvizError(f"unknown preset {name!r}", fix="use one of " + ", ".join(PRESETS)) from None
