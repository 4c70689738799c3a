"""QWen v1 (``QWenLMHeadModel``), legacy Megatron trainer: mlp.w1 / mlp.w2, MHA only.

>>> FAMILY.fc1_halves, FAMILY.head_dim_key
((('up',), ('gate',)), 'kv_channels')
"""

from syncviz.families.names import LEGACY_DENSE, LEGACY_LAYER, vllm_names
from syncviz.families.record import FamilyInfo, Preset, sizes

_HF = {
    "embed": ("transformer.wte.weight",),
    "final_norm": ("transformer.ln_f.weight",),
    "lm_head": ("lm_head.weight",),
    "input_norm": ("transformer.h.{i}.ln_1.weight",),
    "qkv": ("transformer.h.{i}.attn.c_attn.weight",),  # already [Q; K; V]
    "qkv_bias": ("transformer.h.{i}.attn.c_attn.bias",),
    "o_proj": ("transformer.h.{i}.attn.c_proj.weight",),
    "post_attention_norm": ("transformer.h.{i}.ln_2.weight",),
    # QWen v1: w2 is the SiLU-gated half, w1 the up half; vLLM fuses [w2; w1].
    "gate_up": ("transformer.h.{i}.mlp.w2.weight", "transformer.h.{i}.mlp.w1.weight"),
    "down": ("transformer.h.{i}.mlp.c_proj.weight",),
}
_DST = vllm_names(_HF, gate_up="model.transformer.h.{i}.mlp.gate_up_proj.weight")
_SRC = {
    **LEGACY_DENSE,
    # QWen v1 keeps two tensors: mlp.w1 the up half, mlp.w2 the SiLU-gated half
    # (listed in the trainer's own order, w1 first, as its named_parameters give them).
    "gate_up": (LEGACY_LAYER + "mlp.w1.weight", LEGACY_LAYER + "mlp.w2.weight"),
}

# intermediate_size holds w1 + w2, kv_channels is the head size, no GQA.
FAMILY = FamilyInfo(
    "qwen-v1", "QWenLMHeadModel", "qwen", "MegatronVllmQWenSync",
    "CorrectedMegatronVllmQWenSync", trainer="legacy", qkv_bias=True, fused_ffn=True,
    head_dim_key="kv_channels", mha_only=True,
    src_names=_SRC, dst_names=_DST, hf_names=_HF, fc1_halves=(("up",), ("gate",)),
    notes=(
        "Names: golden records of Megatron2QWenSyncMap (qwen_version 1.0), which "
        "concatenates [mlp.w2; mlp.w1] into gate_up_proj: w2 is the gate (HF QWen: "
        "a1 * silu(a2), a2 = w2(x)), w1 the up half. QKV: MHA, per-head [q, k, v] "
        "as in legacy Megatron."
    ),
    presets=(
        # Qwen/Qwen-7B (QWenLMHeadModel): layers 32, hidden 4096, heads 32, kv_channels 128,
        # intermediate_size 22016 = w1 + w2 fused, so 11008 per half; vocab 151936,
        # tie_word_embeddings false; attn.c_attn carries the QKV bias.
        Preset("qwen-7b", sizes(32, 4096, 32, 32, 11008, 151936, qkv_bias=True),
               "Qwen/Qwen-7B config.json"),
    ),
)  # fmt: skip
