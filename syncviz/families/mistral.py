"""Mistral (v0.1-v0.3): Llama's layout and names; vLLM's Mistral class is its Llama class.

>>> FAMILY.architecture, FAMILY.chatlearn
('MistralForCausalLM', '')
"""

from dataclasses import replace

from syncviz.families import llama_mcore
from syncviz.families.record import Preset, sizes

# The original has no Mistral synchronizer (it switches on the architecture).
FAMILY = replace(
    llama_mcore.FAMILY,
    name="mistral", architecture="MistralForCausalLM", model_type="mistral", chatlearn="",
    corrected="CorrectedMegatronVllmMCoreSync", tiny=None,
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
