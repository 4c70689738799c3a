"""SGLang: vLLM's names and splits for the dense families; its own spellings elsewhere.

Read from SGLang 0.5.23's source (``python/sglang/srt/models/{llama,qwen2_moe,qwen3,
qwen3_moe,deepseek_v2}.py``, ``layers/vocab_parallel_embedding.py``,
``layers/moe/fused_moe_triton/layer.py``); SGLang is not installed here, so these rules
are not run against SGLang itself.

>>> ENGINE.dst_name("model.model.layers.{i}.mlp.experts.w13_weight")
'model.model.layers.{i}.mlp.experts.w13_weight'
>>> ENGINE.dp_attention, ENGINE.dp_attention_embed
(True, 'replicated')
>>> ENGINE.dst_name("model.model.layers.61.mtp_block.mlp.gate.weight")
'model.model.decoder.mlp.gate.weight'
>>> ENGINE.dst_name("model.model.layers.{i}.eh_proj.weight")
'model.model.eh_proj.weight'

"""

from syncviz.engines.record import EngineInfo

ENGINE = EngineInfo(
    "sglang",
    "SGLang",
    # DeepSeek's fused MLA down-projection keeps its "with_mqa" suffix in SGLang (vLLM
    # drops it); SGLang's derived w_kc / w_vc are not loaded tensors and never synced.
    renames=((".self_attn.fused_qkv_a_proj.", ".self_attn.fused_qkv_a_proj_with_mqa."),),
    # FusedMoE keeps the experts directly under mlp.experts (no routed_experts. level).
    expert_spellings=(".experts.",),
    # DEFAULT_VOCAB_PADDING_SIZE in vocab_parallel_embedding.py.
    vocab_padding=64,
    # attn_tp = tp // dp_attention (attention DP); the MoE models' embedding is built with
    # enable_tp=not enable_dp_attention, i.e. whole on every rank; lm_head stays over tp.
    dp_attention=True,
    dp_attention_embed="replicated",
    dump="save_sglang_rank",
    parallel_state="sglang.srt.distributed.parallel_state",
    # FusedMoE (layers/moe/fused_moe_triton/layer.py) counts a rank's experts here.
    expert_count="num_local_experts",
    # deepseek_nextn.py (DeepseekV3ForCausalLMNextN): one MTP layer, its decoder layer
    # under model.decoder., enorm / hnorm / eh_proj (a plain nn.Linear) / shared_head.norm
    # under model.; the head and the embedding are the target model's (not loaded).
    mtp_renames=(
        (r"model\.model\.layers\.(\d+|\{i\})\.mtp_block\.", "model.model.decoder."),
        (
            r"model\.model\.layers\.(\d+|\{i\})\.(enorm|hnorm|eh_proj|shared_head)\.",
            r"model.model.\2.",
        ),
    ),
    mtp_own_head=False,
    mtp_max_layers=1,
    source="SGLang 0.5.23 source (read, not run: SGLang is not installable here)",
)
