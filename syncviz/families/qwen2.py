"""Qwen2 (dense), ChatLearn's legacy-Megatron Qwen2 trainer: q/k/v biases, fc1 [up; gate].

>>> FAMILY.fc1_halves, FAMILY.qkv_bias
((('up', 'gate'),), True)
"""

from syncviz.families.names import HF_DENSE, LEGACY_DENSE, VLLM_DENSE
from syncviz.families.record import FamilyInfo, Preset, sizes

FAMILY = FamilyInfo(
    "qwen2", "Qwen2ForCausalLM", "qwen2", "MegatronVllmQWen2Sync",
    "CorrectedMegatronVllmQWen2Sync", trainer="legacy", qkv_bias=True,
    src_names=LEGACY_DENSE,
    dst_names=VLLM_DENSE, hf_names=HF_DENSE, fc1_halves=(("up", "gate"),),
    notes=(
        "Names: golden records of Megatron2QWenSyncMap (qwen_version 2.0). QKV: "
        "per-group rows (ChatLearn's split_attn_state reads them as [ng, q..+k+v, H]). "
        "fc1: the trainer holds [up_r; gate_r] (ChatLearn's fix_act_ordering swaps the "
        "two halves of mlp.dense_h_to_4h before regrouping)."
    ),
    presets=(
        # Qwen/Qwen2-7B: layers 28, hidden 3584, heads 28, kv heads 4, intermediate 18944,
        # vocab 152064, tie_word_embeddings false; Qwen2 has q/k/v biases.
        Preset("qwen2-7b", sizes(28, 3584, 28, 4, 18944, 152064, qkv_bias=True),
               "Qwen/Qwen2-7B config.json"),
        # Qwen/Qwen2-72B: layers 80, hidden 8192, heads 64, kv heads 8, intermediate 29568,
        # vocab 152064, tie_word_embeddings false.
        Preset("qwen2-72b", sizes(80, 8192, 64, 8, 29568, 152064, qkv_bias=True),
               "Qwen/Qwen2-72B config.json"),
    ),
    tiny=sizes(2, 16, 4, 2, 16, 90, name="qwen2-tiny", head_dim=4, qkv_bias=True),
)  # fmt: skip
