"""gpt-oss: biases on q/k/v, o_proj, the router and every expert; attention sinks per head;
each expert's gate/up interleaved on vLLM; vLLM's ``attn.`` and ``embedding`` names.

>>> FAMILY.dst_names["sinks"], FAMILY.dst_expert_fc1
('model.model.layers.{i}.attn.sinks', 'interleaved')
>>> FAMILY.src_names["experts_w2_bias"]
'decoder.layers.{i}.mlp.experts.linear_fc2.bias{j}'
"""

from syncviz.families.names import (
    HF_DENSE,
    HF_LAYER,
    MCORE_GROUPED_MOE,
    MCORE_LAYER,
    VLLM_DENSE,
    VLLM_LAYER,
    VLLM_ROUTED,
    without,
)
from syncviz.families.record import FamilyInfo, Preset, sizes

_SRC = {
    **MCORE_GROUPED_MOE,
    "o_proj_bias": MCORE_LAYER + "self_attention.linear_proj.bias",
    # Megatron-Core's learnable softmax offset is the attention sink, one per head.
    "sinks": MCORE_LAYER + "self_attention.core_attention.softmax_offset",
    "router_bias": MCORE_LAYER + "mlp.router.bias",
    # TEGroupedMLP with biases: one bias per local expert beside its weight.
    "experts_w13_bias": MCORE_LAYER + "mlp.experts.linear_fc1.bias{j}",
    "experts_w2_bias": MCORE_LAYER + "mlp.experts.linear_fc2.bias{j}",
}

# GptOssForCausalLM's own names where they differ from vLLM's usual ones (it renames HF's
# self_attn. to attn., embed_tokens to embedding); experts in the ChatLearn-era spelling, as
# for every family (diagnose also reads current vLLM's mlp.experts.routed_experts.).
_DST = {
    **without(VLLM_DENSE, "gate_up", "down"),
    **VLLM_ROUTED,
    "embed": "model.model.embedding.weight",
    "qkv": VLLM_LAYER + "attn.qkv_proj.weight",
    "qkv_bias": VLLM_LAYER + "attn.qkv_proj.bias",
    "o_proj": VLLM_LAYER + "attn.o_proj.weight",
    "o_proj_bias": VLLM_LAYER + "attn.o_proj.bias",
    "sinks": VLLM_LAYER + "attn.sinks",
    "router": VLLM_LAYER + "mlp.router.weight",
    "router_bias": VLLM_LAYER + "mlp.router.bias",
    "experts_w13_bias": VLLM_LAYER + "mlp.experts.w13_bias",
    "experts_w2_bias": VLLM_LAYER + "mlp.experts.w2_bias",
}

# The checkpoint keeps each layer's experts as fused 3-D tensors (gate_up_proj [E, H, 2I]
# with gate/up interleaved columns, down_proj [E, I, H]); see FamilyInfo.hf_fused_experts.
_HF = {
    **without(HF_DENSE, "gate_up", "down"),
    "o_proj_bias": (HF_LAYER + "self_attn.o_proj.bias",),
    "sinks": (HF_LAYER + "self_attn.sinks",),
    "router": (HF_LAYER + "mlp.router.weight",),
    "router_bias": (HF_LAYER + "mlp.router.bias",),
    "experts_w13": (HF_LAYER + "mlp.experts.gate_up_proj",),
    "experts_w13_bias": (HF_LAYER + "mlp.experts.gate_up_proj_bias",),
    "experts_w2": (HF_LAYER + "mlp.experts.down_proj",),
    "experts_w2_bias": (HF_LAYER + "mlp.experts.down_proj_bias",),
}

# The original has no gpt-oss synchronizer. intermediate_size is each expert's size.
FAMILY = FamilyInfo(
    "gpt-oss", "GptOssForCausalLM", "gpt_oss", "", "CorrectedMegatronVllmMCoreSync",
    experts="sequential", qkv_bias="attention_bias", qkv_bias_default=True,
    experts_keys=("num_local_experts",),
    moe_ffn_key="intermediate_size",
    o_proj_bias=True, sinks=True, router_bias=True, expert_bias=True,
    dst_expert_fc1="interleaved", dst_kv_replicated=False, hf_fused_experts=True,
    src_names=_SRC, dst_names=_DST, hf_names=_HF,
    notes=(
        "Megatron-Core (Megatron-Bridge models/gpt_oss, mbridge gpt_oss): linear_qkv with "
        "bias (per query group like its rows), linear_proj.bias and mlp.router.bias whole "
        "on every rank, self_attention.core_attention.softmax_offset = the sinks, split by "
        "heads like Q; TEGroupedMLP experts with biases (linear_fc1.weight{j}/bias{j} "
        "[gate_r; up_r] de-interleaved, linear_fc2.weight{j} [H, I/tp] = HF down_proj[e] "
        "transposed, linear_fc2.bias{j} [H] whole on every rank); rank ep holds experts "
        "ep*E/EP + j. vLLM 0.32 GptOssForCausalLM: attn.sinks heads r*h/d..; "
        "attn.o_proj.bias and mlp.router.* replicated; w13 [E, 2I/d, H] = HF "
        "gate_up_proj[:, :, 2rI/d..2(r+1)I/d] transposed, gate/up interleaved (g0, u0, "
        "g1, ...), w13_bias likewise; w2 [E, H, I/d]; w2_bias whole on tp 0 and zeros on "
        "tp >= 1 (added once after the all-reduce); d must divide the K/V heads (no "
        "replication). Sliding-window / full attention layers alternate without changing "
        "the layout; a quantization_config (MXFP4 experts in the published checkpoints) is "
        "noted, not laid out."
    ),
    presets=(
        # openai/gpt-oss-20b: num_hidden_layers 24, hidden_size 2880, num_attention_heads
        # 64, num_key_value_heads 8, head_dim 64 (64 * 64 = 4096, not 2880),
        # intermediate_size 2880 (each expert), num_local_experts 32, vocab_size 201088,
        # tie_word_embeddings false, quantization_config mxfp4.
        Preset("gpt-oss-20b",
               sizes(24, 2880, 64, 8, 2880, 201088, head_dim=64, qkv_bias=True,
                     router_bias=True, num_experts=32, moe_ffn_hidden_size=2880),
               "openai/gpt-oss-20b config.json"),
        # openai/gpt-oss-120b: num_hidden_layers 36, hidden_size 2880, num_attention_heads
        # 64, num_key_value_heads 8, head_dim 64, intermediate_size 2880,
        # num_local_experts 128, vocab_size 201088, tie_word_embeddings false.
        Preset("gpt-oss-120b",
               sizes(36, 2880, 64, 8, 2880, 201088, head_dim=64, qkv_bias=True,
                     router_bias=True, num_experts=128, moe_ffn_hidden_size=2880),
               "openai/gpt-oss-120b config.json"),
    ),
    # 4 K/V heads (d in 1, 2, 4 divides them), head_dim 32 with hidden 64 (not 64 / 8);
    # per-rank expert size 128 / d divisible by 32 and hidden 64 (vLLM's CPU MoE); vocab
    # 200 pads to 256.
    tiny=sizes(2, 64, 8, 4, 128, 200, name="gpt-oss-tiny", head_dim=32, qkv_bias=True,
               router_bias=True, num_experts=4, moe_ffn_hidden_size=128),
)  # fmt: skip
