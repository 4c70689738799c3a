"""Llama trained with Megatron-Core (``decoder.layers``, fused norms): the Llama default.

>>> [p.name for p in FAMILY.presets]
['llama3-8b', 'llama3-70b', 'llama3.1-405b']
"""

from syncviz.families.names import HF_DENSE, MCORE_DENSE, VLLM_DENSE
from syncviz.families.record import FamilyInfo, Preset, sizes

FAMILY = FamilyInfo(
    "llama-mcore", "LlamaForCausalLM", "llama", "MegatronVllmLlamaSync",
    "CorrectedMegatronVllmLlamaSync", qkv_bias="attention_bias",
    src_names=MCORE_DENSE, dst_names=VLLM_DENSE, hf_names=HF_DENSE,
    notes=(
        "Names: golden records of MCore2LlamaSyncMap. QKV: Megatron-Core linear_qkv "
        "rows are grouped [q.., k_g, v_g] per query group. fc1: [gate_r; up_r]."
    ),
    presets=(
        # meta-llama/Meta-Llama-3-8B: layers 32, hidden 4096, heads 32, kv heads 8,
        # intermediate 14336, vocab 128256, tie_word_embeddings false.
        Preset("llama3-8b", sizes(32, 4096, 32, 8, 14336, 128256),
               "meta-llama/Meta-Llama-3-8B config.json"),
        # meta-llama/Meta-Llama-3-70B: layers 80, hidden 8192, heads 64, kv heads 8,
        # intermediate 28672, vocab 128256, tie_word_embeddings false.
        Preset("llama3-70b", sizes(80, 8192, 64, 8, 28672, 128256),
               "meta-llama/Meta-Llama-3-70B config.json"),
        # meta-llama/Llama-3.1-405B: layers 126, hidden 16384, heads 128, kv heads 8,
        # intermediate 53248, vocab 128256, tie_word_embeddings false.
        Preset("llama3.1-405b", sizes(126, 16384, 128, 8, 53248, 128256),
               "meta-llama/Llama-3.1-405B config.json"),
    ),
    # d > kv heads at tp 4 (2 K/V heads); vocab 100 pads to 128: padding rows on the last rank.
    tiny=sizes(2, 16, 8, 2, 24, 100, name="llama-tiny", head_dim=2),
)  # fmt: skip
