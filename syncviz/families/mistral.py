"""Mistral (v0.1-v0.3): Llama's layout and names; vLLM's Mistral class is its Llama class.

>>> FAMILY.architecture, FAMILY.chatlearn
('MistralForCausalLM', '')
"""

from syncviz.families.names import HF_DENSE, MCORE_DENSE, VLLM_DENSE
from syncviz.families.record import FamilyInfo, Preset, sizes

# The original has no Mistral synchronizer (it switches on the architecture).
FAMILY = FamilyInfo(
    "mistral", "MistralForCausalLM", "mistral", "", "CorrectedMegatronVllmMCoreSync",
    qkv_bias="attention_bias",
    src_names=MCORE_DENSE, dst_names=VLLM_DENSE, hf_names=HF_DENSE,
    notes=(
        "Llama's layout and names (vLLM's MistralForCausalLM is its Llama class); "
        "Megatron-Core trainer as llama-mcore."
    ),
    presets=(
        # mistralai/Mistral-7B-v0.3 (MistralForCausalLM): layers 32, hidden 4096, heads 32,
        # kv heads 8, no head_dim (4096/32 = 128), intermediate 14336, vocab 32768,
        # tie_word_embeddings false, no attention_bias, sliding_window null.
        Preset("mistral-7b-v0.3", sizes(32, 4096, 32, 8, 14336, 32768),
               "mistralai/Mistral-7B-v0.3 config.json"),
    ),
)  # fmt: skip
