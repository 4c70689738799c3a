"""A made-up dense model declared in one file: Megatron-Core trainer, its own vLLM and
checkpoint names (``attn.wqkv``, ``ffn.w13``, ``tok_embeddings``...), per-head q/k norms.

syncviz check --family tests/data/families/toy_dense.py --preset toy-dense-1b \
    --synchronizer corrected --src-tp 2 --dst-tp 4
"""

from syncviz.families import FamilyInfo, Preset
from syncviz.families.names import MCORE_DENSE, MCORE_QK_NORM
from syncviz.families.record import sizes

LAYER = "model.model.blocks.{i}."  # vLLM: the wrapper's model., then the model's own names
HF = "transformer.blocks.{i}."  # the checkpoint

FAMILY = FamilyInfo(
    "toy-dense", "ToyDenseForCausalLM", "toy_dense", "", "CorrectedMegatronVllmMCoreSync",
    qk_norm=True,
    src_names={**MCORE_DENSE, **MCORE_QK_NORM},
    dst_names={
        "embed": "model.model.tok_embeddings.weight",
        "final_norm": "model.model.final_norm.weight",
        "lm_head": "model.output.weight",
        "input_norm": LAYER + "attention_norm.weight",
        "qkv": LAYER + "attn.wqkv.weight",
        "q_norm": LAYER + "attn.q_norm.weight",
        "k_norm": LAYER + "attn.k_norm.weight",
        "o_proj": LAYER + "attn.wo.weight",
        "post_attention_norm": LAYER + "ffn_norm.weight",
        "gate_up": LAYER + "ffn.w13.weight",
        "down": LAYER + "ffn.w2.weight",
    },
    hf_names={
        "embed": ("model.tok_embeddings.weight",),
        "final_norm": ("model.final_norm.weight",),
        "lm_head": ("output.weight",),
        "input_norm": (HF + "attention_norm.weight",),
        "qkv": (HF + "attn.wq.weight", HF + "attn.wk.weight", HF + "attn.wv.weight"),
        "q_norm": (HF + "attn.q_norm.weight",),
        "k_norm": (HF + "attn.k_norm.weight",),
        "o_proj": (HF + "attn.wo.weight",),
        "post_attention_norm": (HF + "ffn_norm.weight",),
        "gate_up": (HF + "ffn.w1.weight", HF + "ffn.w3.weight"),
        "down": (HF + "ffn.w2.weight",),
    },
    notes="Made up for tests: Megatron-Core trainer names, its own vLLM and checkpoint names.",
    presets=(
        # Made up: 8 layers, hidden 2048, 16 heads, 4 K/V heads of 128, ffn 5632, vocab 32000.
        Preset("toy-dense-1b", sizes(8, 2048, 16, 4, 5632, 32000, head_dim=128), "made up"),
    ),
    tiny=sizes(2, 16, 4, 2, 16, 90, name="toy-dense-tiny", head_dim=8),
)  # fmt: skip
