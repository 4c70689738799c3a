"""``get_synchronizer``: pick the synchronizer class for a source and destination model.

Port of ChatLearn's ``chatlearn/synchronizer/__init__.py`` (commit 85f23a9b). A model
is either a ChatLearn-style ``DistModel`` (anything with ``replicas[0].model``) or
the model itself; its ``backend`` (``"megatron"`` or ``"vllm"``) replaces the
original's ``isinstance`` checks, and the destination's ``config.architectures[0]``
replaces reading the Hugging Face config from the tokenizer directory.

>>> from syncviz.parallel import Parallel
>>> from syncviz.spec import ModelSpec
>>> from syncviz.sync.adapter import models_for
>>> spec = ModelSpec(name="t", family="qwen2-moe", num_layers=1, hidden_size=16,
...                  num_attention_heads=4, num_query_groups=4, ffn_hidden_size=32,
...                  vocab_size=64, num_experts=4, moe_ffn_hidden_size=8)
>>> type(get_synchronizer(*models_for(spec, Parallel(tp=1), Parallel(tp=2)))).__name__
'MegatronVllmQWen2Sync'
"""

from __future__ import annotations

from typing import Any

from syncviz.errors import SyncvizError
from syncviz.parallel import Parallel
from syncviz.spec import ModelSpec
from syncviz.sync.adapter import MEGATRON, VLLM, StageActor, models_for
from syncviz.sync.base import BaseSync
from syncviz.sync.megatron_megatron import MegatronMegatronSync
from syncviz.sync.megatron_vllm import (
    MegatronVllmLlamaSync,
    MegatronVllmQWen2Sync,
    MegatronVllmQWenSync,
    MegatronVllmSync,
)

# Destination architecture -> synchronizer class, as ChatLearn chose them.
VLLM_SYNCHRONIZERS: dict[str, type[MegatronVllmSync]] = {
    "QWenLMHeadModel": MegatronVllmQWenSync,
    "Qwen2ForCausalLM": MegatronVllmQWen2Sync,
    "Qwen2MoeForCausalLM": MegatronVllmQWen2Sync,
    "LlamaForCausalLM": MegatronVllmLlamaSync,
}


def _first_replica_model(model: Any) -> Any:
    replicas = getattr(model, "replicas", None)
    return replicas[0].model if replicas is not None else model


def get_synchronizer(src_model: Any, dst_model: Any) -> BaseSync:
    """The synchronizer for these two models (unsupported vLLM architectures raise).

    >>> from types import SimpleNamespace as NS
    >>> src, dst = NS(backend="megatron"), NS(backend="vllm", config=NS(architectures=["Gpt"]))
    >>> try:
    ...     get_synchronizer(src, dst)
    ... except RuntimeError as err:
    ...     print(str(err)[:29])
    Unsupported model Gpt, Expect
    """
    src_model = _first_replica_model(src_model)
    dst_model = _first_replica_model(dst_model)
    src_backend = getattr(src_model, "backend", None)
    dst_backend = getattr(dst_model, "backend", None)
    if src_backend == MEGATRON and dst_backend == MEGATRON:
        return MegatronMegatronSync(src_model, dst_model)
    if src_backend == MEGATRON and dst_backend == VLLM:
        model_class_name = dst_model.config.architectures[0]
        if model_class_name not in VLLM_SYNCHRONIZERS:
            raise RuntimeError(
                f"Unsupported model {model_class_name}, Expect QWenLMHeadModel, Qwen2ForCausalLM,"
                " Qwen2MoeForCausalLM or LlamaForCausalLM."
            )
        return VLLM_SYNCHRONIZERS[model_class_name](src_model, dst_model)
    return BaseSync(src_model, dst_model)


def synchronizer_for(
    spec: ModelSpec,
    src: Parallel,
    dst: Parallel,
    src_names: list[str] | None = None,
    layer_offsets: tuple[int, int] = (0, 0),
) -> MegatronVllmSync:
    """The Megatron -> vLLM synchronizer for ``spec``, with its sync map built.

    Runs ``map_name_from_src_to_dst`` for ``src_names`` (none by default) with the
    source and destination stages starting at ``layer_offsets``, as ChatLearn does
    before any transform or regroup.

    >>> sync = synchronizer_for(ModelSpec("t", "qwen2", 1, 4, 2, 2, 4, 8), Parallel(1), Parallel(2))
    >>> type(sync).__name__, sync.concat_params_dict["modules"]
    ('MegatronVllmQWen2Sync', ['mlp.w1', 'mlp.w2'])
    """
    sync = get_synchronizer(*models_for(spec, src, dst))
    if not isinstance(sync, MegatronVllmSync):
        raise SyncvizError(
            f"family {spec.family!r} does not sync Megatron -> vLLM",
            fix="use get_synchronizer for other pairs",
        )
    src_offset, dst_offset = layer_offsets
    sync.map_name_from_src_to_dst(
        StageActor(src_offset), StageActor(dst_offset), list(src_names or []), []
    )
    return sync
