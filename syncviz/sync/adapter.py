"""Duck-typed stand-ins for ChatLearn's models and actors, built from a ``ModelSpec``.

The ChatLearn synchronizers read ``model.module_args.args_dict`` (Megatron-style
argument names) and, to pick a class, the destination's Hugging Face
``config.architectures[0]``. :func:`models_for` builds objects that answer exactly
those questions, so ``MegatronVllmQWen2Sync(*models_for(spec, src, dst))`` works
without Megatron, vLLM or Ray.

>>> from syncviz.parallel import Parallel
>>> from syncviz.spec import ModelSpec
>>> spec = ModelSpec(name="tiny", family="qwen2", num_layers=2, hidden_size=64,
...                  num_attention_heads=8, num_query_groups=2, ffn_hidden_size=128,
...                  vocab_size=1000)
>>> src, dst = models_for(spec, Parallel(tp=2), Parallel(tp=4))
>>> src.module_args.args_dict["tensor_model_parallel_size"], dst.config.architectures
(2, ['Qwen2ForCausalLM'])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from syncviz.errors import SyncvizError
from syncviz.families import FAMILY
from syncviz.families.registry import derived
from syncviz.parallel import Parallel
from syncviz.spec import ModelSpec

# Hugging Face architecture name of each family (what get_synchronizer switches on).
ARCHITECTURES: Mapping[str, str] = derived(
    lambda infos: {info.name: info.architecture for info in infos}
)

MEGATRON = "megatron"
VLLM = "vllm"


@dataclass
class ModuleArgs:
    """A model's arguments: ``args_dict`` plus ``get`` / ``[]`` as ChatLearn's module args.

    >>> ModuleArgs({"hidden_size": 8}).get("hidden_size")
    8
    """

    args_dict: dict[str, Any]

    def get(self, key: str, default: Any = None) -> Any:
        return self.args_dict.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self.args_dict[key]


@dataclass
class HFConfig:
    """The slice of a Hugging Face config the synchronizer reads.

    >>> HFConfig(["LlamaForCausalLM"]).architectures[0]
    'LlamaForCausalLM'
    """

    architectures: list[str]


@dataclass
class SyncModel:
    """One side of a sync: ``backend`` is ``"megatron"`` (source) or ``"vllm"`` (destination).

    >>> SyncModel("policy", MEGATRON, ModuleArgs({})).backend
    'megatron'
    """

    name: str
    backend: str
    module_args: ModuleArgs
    config: HFConfig = field(default_factory=lambda: HFConfig([]))


@dataclass(eq=False)  # hashable by identity, like an actor handle (synchronizers cache by actor)
class StageActor:
    """An actor that only knows its pipeline stage's first layer (for name mapping).

    >>> StageActor(layer_offset=4).get_pipeline_stage_layer_offset()
    4
    """

    layer_offset: int = 0
    parameter_names: list[str] = field(default_factory=list)

    def get_pipeline_stage_layer_offset(self) -> int:
        return self.layer_offset

    def get_parameter_names(self, requires_grad: bool = True) -> list[str]:
        return list(self.parameter_names)


def _model_args(spec: ModelSpec, parallel: Parallel) -> dict[str, Any]:
    """Megatron-style arguments of ``spec`` under ``parallel`` (names as ChatLearn reads them)."""
    return {
        "num_layers": spec.num_layers,
        "hidden_size": spec.hidden_size,
        "num_attention_heads": spec.num_attention_heads,
        "num_query_groups": spec.num_query_groups,
        "group_query_attention": spec.is_gqa,
        "kv_channels": spec.head_dim,
        "ffn_hidden_size": spec.ffn_hidden_size,
        "padded_vocab_size": spec.padded_vocab_size,
        "vocab_size": spec.vocab_size,
        "add_qkv_bias": spec.qkv_bias,
        "untie_embeddings_and_output_weights": not spec.tie_word_embeddings,
        "moe_num_experts": spec.num_experts or None,
        "moe_ffn_hidden_size": spec.moe_ffn_hidden_size or None,
        "shared_moe_ffn_hidden_size": spec.shared_expert_ffn_hidden_size or None,
        "tensor_model_parallel_size": parallel.tp,
        "pipeline_model_parallel_size": parallel.pp,
        "moe_expert_model_parallel_size": parallel.ep,
        "expert_model_parallel_size": parallel.ep,
        "expert_placement": parallel.expert_placement,  # the destination's (vLLM's names)
        "dp_attention": parallel.dp_attention,  # the destination's (SGLang's DP attention)
        "use_legacy_models": FAMILY[spec.family].trainer == "legacy",
    }


def models_for(spec: ModelSpec, src: Parallel, dst: Parallel) -> tuple[SyncModel, SyncModel]:
    """``(src_model, dst_model)`` for a Megatron trainer under ``src`` and vLLM under ``dst``.

    >>> from syncviz.parallel import Parallel
    >>> from syncviz.presets import preset
    >>> src, dst = models_for(preset("llama3-8b"), Parallel(tp=1), Parallel(tp=2))
    >>> src.module_args["use_legacy_models"], dst.module_args["tensor_model_parallel_size"]
    (False, 2)
    """
    if spec.family not in ARCHITECTURES:
        raise SyncvizError(
            f"family {spec.family!r} has no architecture name",
            fix="use one of " + ", ".join(ARCHITECTURES),
        )
    config = HFConfig([ARCHITECTURES[spec.family]])
    src_model = SyncModel(
        f"{spec.name}-trainer", MEGATRON, ModuleArgs(_model_args(spec, src)), config
    )
    dst_model = SyncModel(
        f"{spec.name}-inference", VLLM, ModuleArgs(_model_args(spec, dst)), config
    )
    return src_model, dst_model
