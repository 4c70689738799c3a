"""Model specs: the sizes and the family that fix every parameter's layout.

>>> from syncviz.spec import ModelSpec
>>> spec = ModelSpec(name="tiny", family="llama-mcore", num_layers=2, hidden_size=64,
...                  num_attention_heads=8, num_query_groups=2, ffn_hidden_size=128,
...                  vocab_size=1000)
>>> spec.head_dim, spec.queries_per_group, spec.is_moe
(8, 4, False)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from syncviz.errors import SyncvizError

Family = Literal["llama-legacy", "llama-mcore", "qwen-v1", "qwen2", "qwen2-moe", "mixtral"]
FAMILIES: tuple[str, ...] = get_args(Family)


@dataclass(frozen=True)
class ModelSpec:
    """Sizes of a decoder-only transformer and the family that names its parameters.

    The family fixes the trainer's parameter names and its source conventions
    (see ``syncviz.oracle``); the sizes fix every shape. ``head_dim`` defaults to
    ``hidden_size // num_attention_heads`` (Megatron's ``kv_channels``).
    MoE models set ``num_experts`` > 0 and ``moe_ffn_hidden_size``; Qwen2-MoE
    also has a shared expert (``shared_expert_ffn_hidden_size`` > 0) and its gate.
    """

    name: str
    family: Family
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_query_groups: int
    ffn_hidden_size: int
    vocab_size: int
    head_dim: int = 0
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    num_experts: int = 0
    moe_ffn_hidden_size: int = 0
    shared_expert_ffn_hidden_size: int = 0
    shared_expert_gate: bool = False
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise SyncvizError(
                f"family {self.family!r} is not known",
                fix="use one of " + ", ".join(FAMILIES),
            )
        for name in ("num_layers", "hidden_size", "num_attention_heads", "num_query_groups",
                     "vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise SyncvizError(f"{name} ({value!r}) must be a positive integer",
                                   fix=f"set {name} from the model's config.json")
        if self.head_dim == 0:
            if self.hidden_size % self.num_attention_heads:
                raise SyncvizError(
                    f"hidden_size ({self.hidden_size}) is not divisible by num_attention_heads"
                    f" ({self.num_attention_heads})",
                    fix="set head_dim explicitly",
                )
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)
        if self.num_attention_heads % self.num_query_groups:
            raise SyncvizError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of"
                f" num_query_groups ({self.num_query_groups})",
                fix="check num_key_value_heads in config.json",
            )
        if self.num_experts and self.moe_ffn_hidden_size <= 0:
            raise SyncvizError(
                f"moe_ffn_hidden_size ({self.moe_ffn_hidden_size}) must be positive for an MoE"
                f" model with {self.num_experts} experts",
                fix="set moe_intermediate_size from config.json",
            )

    @property
    def queries_per_group(self) -> int:
        """Query heads that share one K/V head (nq in LAYOUTS.md)."""
        return self.num_attention_heads // self.num_query_groups

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def is_gqa(self) -> bool:
        return self.num_query_groups != self.num_attention_heads

    @property
    def padded_vocab_size(self) -> int:
        """vLLM pads the vocab to a multiple of 64 before slicing it over ranks."""
        return -(-self.vocab_size // 64) * 64
