"""Sizes the two frameworks fix, written once.

>>> from syncviz.constants import VLLM_VOCAB_PADDING, MEGATRON_VOCAB_DIVISOR
>>> VLLM_VOCAB_PADDING, MEGATRON_VOCAB_DIVISOR
(64, 128)
"""

# vLLM pads the vocabulary to this multiple; Megatron pads to MEGATRON_VOCAB_DIVISOR * tp.
VLLM_VOCAB_PADDING = 64
MEGATRON_VOCAB_DIVISOR = 128
