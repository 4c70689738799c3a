"""Model specs: the sizes and the family that fix every parameter's layout.

>>> from syncviz.spec import ModelSpec
>>> spec = ModelSpec(name="tiny", family="llama-mcore", num_layers=2, hidden_size=64,
...                  num_attention_heads=8, num_query_groups=2, ffn_hidden_size=128,
...                  vocab_size=1000)
>>> spec.head_dim, spec.queries_per_group, spec.is_moe
(8, 4, False)
>>> small = spec.scaled()
>>> small.name, small.head_dim, small.num_query_groups
('tiny (scaled)', 4, 2)
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syncviz.constants import MEGATRON_VOCAB_DIVISOR, VLLM_VOCAB_PADDING
from syncviz.errors import SyncvizError, shown
from syncviz.families import (
    ARCHITECTURE_FAMILY,
    FAMILY,
    FAMILY_NAMES,
    INACTIVE_VALUES,
    KEY_OWNERS,
    LAYOUT_KEYS,
    MODEL_TYPE_ARCHITECTURE,
    UNSUPPORTED_MODEL_TYPES,
    FamilyInfo,
    readers_of,
)
from syncviz.families.record import ROUTER_BIAS_WHEN

if TYPE_CHECKING:  # parallel.py sits on the floor above this one
    from syncviz.parallel import Parallel

Family = str
"""A family name: one of :data:`FAMILIES`, the names of the registry in ``syncviz.families``."""
FAMILIES: tuple[str, ...] = FAMILY_NAMES

# Hugging Face `architectures` entry -> trainer family, and config.json `model_type` ->
# architecture (used only when a config.json has no `architectures` list): both live
# views of the one family registry (a family registered later is read too).
HF_ARCHITECTURES: Mapping[str, str] = ARCHITECTURE_FAMILY
_HF_MODEL_TYPES: Mapping[str, str] = MODEL_TYPE_ARCHITECTURE


@dataclass(frozen=True)
class ModelSpec:
    """Sizes of a decoder-only transformer and the family that names its parameters.

    The family fixes the trainer's parameter names and its source conventions
    (see ``syncviz.oracle``); the sizes fix every shape. ``head_dim`` defaults to
    ``hidden_size // num_attention_heads`` (Megatron's ``kv_channels``).
    MoE models set ``num_experts`` > 0 and ``moe_ffn_hidden_size``; Qwen2-MoE
    also has a shared expert (``shared_expert_ffn_hidden_size`` > 0) and its gate.
    ``ffn_hidden_size`` is the size of ONE half (gate or up) of the gated MLP.
    ``qk_norm`` adds per-head q/k norms of ``head_dim`` elements (Qwen3). ``notes``
    are things said about the source config that do not change the layout.

    Mixed stacks: in an MoE model the first ``first_k_dense_replace`` layers have a
    dense MLP of ``ffn_hidden_size`` (:meth:`is_moe_layer`). ``router_bias`` adds the
    router's score-correction bias (``[num_experts]``). Multi-head latent attention
    (MLA, :attr:`is_mla`) is on when ``kv_lora_rank`` > 0: per head ``qk_nope_head_dim``
    + ``qk_rope_head_dim`` query/key rows and ``v_head_dim`` value rows (``head_dim``
    is then ``v_head_dim``: the width of one head's ``o_proj`` columns); ``q_lora_rank``
    > 0 adds the low-rank query projection. ``mtp_layers`` > 0 lays out that many
    multi-token-prediction layers after the last layer (global indices ``num_layers`` on,
    :attr:`all_layers`; only a family with an MTP layout has them, see :meth:`with_mtp`).

    >>> ModelSpec("m", "qwen2", 2, 64, 4, 2, 96, 100).padded_vocab_size
    128
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
    first_k_dense_replace: int = 0
    router_bias: bool = False
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    use_qk_norm: bool = True
    mtp_layers: int = 0
    source: str = field(default="", compare=False)
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise SyncvizError(
                f"family {self.family!r} is not known",
                fix="use one of " + ", ".join(FAMILIES),
            )
        for name in (
            "num_layers",
            "hidden_size",
            "num_attention_heads",
            "num_query_groups",
            "vocab_size",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise SyncvizError(
                    f"{name} ({value!r}) must be a positive integer",
                    fix=f"set {name} from the model's config.json",
                )
        self._check_mla()
        if FAMILY[self.family].mla != self.is_mla:
            needs = "needs" if FAMILY[self.family].mla else "does not have"
            raise SyncvizError(
                f"kv_lora_rank ({self.kv_lora_rank}) does not fit family {self.family!r}, which"
                f" {needs} multi-head latent attention",
                fix="set kv_lora_rank and the MLA head sizes from config.json"
                if FAMILY[self.family].mla
                else "use an MLA family ("
                + ", ".join(f for f in FAMILY if FAMILY[f].mla)
                + ") or kv_lora_rank=0",
            )
        if self.is_mla and self.qkv_bias:
            raise SyncvizError(
                "qkv_bias (True) has no tensor under multi-head latent attention",
                fix="use qkv_bias=False",
            )
        if self.head_dim == 0 and self.is_mla:
            object.__setattr__(self, "head_dim", self.v_head_dim)
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
        moe_family = FAMILY[self.family].is_moe
        if bool(self.num_experts) != moe_family:
            raise SyncvizError(
                f"num_experts ({self.num_experts}) does not fit family {self.family!r}, which"
                f" is {'an MoE' if moe_family else 'a dense'} family",
                fix=(
                    "set num_experts from config.json"
                    if moe_family
                    else "use an MoE family ("
                    + ", ".join(f for f in FAMILY if FAMILY[f].is_moe)
                    + ") or num_experts=0"
                ),
            )
        if self.num_experts and self.moe_ffn_hidden_size <= 0:
            raise SyncvizError(
                f"moe_ffn_hidden_size ({self.moe_ffn_hidden_size}) must be positive for an MoE"
                f" model with {self.num_experts} experts",
                fix="set moe_intermediate_size from config.json",
            )

    def _check_mla(self) -> None:
        for name in ("first_k_dense_replace", "q_lora_rank", "kv_lora_rank", "mtp_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SyncvizError(
                    f"{name} ({value!r}) must be a whole number >= 0",
                    fix=f"set {name} from the model's config.json (0: none)",
                )
        if self.first_k_dense_replace and self.ffn_hidden_size <= 0:
            raise SyncvizError(
                f"ffn_hidden_size ({self.ffn_hidden_size}) must be positive when the first"
                f" {self.first_k_dense_replace} layers are dense",
                fix="set intermediate_size from config.json",
            )
        if self.mtp_layers and FAMILY[self.family].mtp is None:
            raise SyncvizError(
                f"mtp_layers ({self.mtp_layers}) needs a family with multi-token-prediction"
                f" layers; {self.family} has none",
                fix="use mtp_layers=0, or one of " + ", ".join(_mtp_families()),
            )
        if not self.is_mla:
            if self.q_lora_rank:
                raise SyncvizError(
                    f"q_lora_rank ({self.q_lora_rank}) needs multi-head latent attention",
                    fix="set kv_lora_rank from config.json, or q_lora_rank=0",
                )
            return
        for name in ("qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise SyncvizError(
                    f"{name} ({value!r}) must be a positive integer with kv_lora_rank"
                    f" {self.kv_lora_rank} (multi-head latent attention)",
                    fix=f"set {name} from the model's config.json",
                )
        if self.head_dim not in (0, self.v_head_dim):
            raise SyncvizError(
                f"head_dim ({self.head_dim}) must equal v_head_dim ({self.v_head_dim}) under"
                " multi-head latent attention (it is one head's o_proj width)",
                fix="leave head_dim at 0",
            )
        if self.num_query_groups != self.num_attention_heads:
            raise SyncvizError(
                f"num_query_groups ({self.num_query_groups}) must equal num_attention_heads"
                f" ({self.num_attention_heads}) under multi-head latent attention",
                fix="set num_query_groups to the head count",
            )

    @property
    def all_layers(self) -> int:
        """The decoder layers and the multi-token-prediction layers after them."""
        return self.num_layers + self.mtp_layers

    def is_mtp_layer(self, layer: int) -> bool:
        """Whether global layer ``layer`` is a multi-token-prediction layer.

        >>> from syncviz.presets import preset
        >>> spec = preset("deepseek-v3", mtp=True)
        >>> spec.mtp_layers, spec.is_mtp_layer(60), spec.is_mtp_layer(61)
        (1, False, True)
        """
        return layer >= self.num_layers

    def with_mtp(self, count: int, where: str = "") -> ModelSpec:
        """This spec with ``count`` multi-token-prediction layers laid out (``where`` says
        where the count came from, for the refusals).

        >>> from syncviz.presets import preset
        >>> preset("llama3-8b").with_mtp(1)
        Traceback (most recent call last):
        ...
        syncviz.errors.SyncvizError: llama3-8b (family llama-mcore) has no multi-token-prediction \
layer: leave out mtp, or use a model of deepseek-v3 or glm4-moe
        """
        info = FAMILY[self.family]
        if info.mtp is None:
            raise SyncvizError(
                f"{self.name} (family {self.family}) has no multi-token-prediction layer",
                fix="leave out mtp, or use a model of " + " or ".join(_mtp_families()),
            )
        if count == 0:
            raise SyncvizError(
                f"{where or self.name} has {info.mtp_key} 0: no multi-token-prediction layer"
                " to lay out",
                fix="leave out mtp, or use a config whose " + info.mtp_key + " is 1 or more",
            )
        return replace(self, mtp_layers=count)

    @property
    def is_mla(self) -> bool:
        """Multi-head latent attention (``kv_lora_rank`` > 0) instead of fused QKV."""
        return self.kv_lora_rank > 0

    @property
    def qk_head_dim(self) -> int:
        """One MLA query/key head: its nope rows, then its rope rows."""
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    def is_moe_layer(self, layer: int) -> bool:
        """Whether layer ``layer`` has routed experts (dense below ``first_k_dense_replace``;
        a multi-token-prediction layer is as the last layer is).

        >>> spec = ModelSpec("m", "mixtral", 4, 16, 4, 2, 8, 64, num_experts=4,
        ...                  moe_ffn_hidden_size=8, first_k_dense_replace=1)
        >>> [spec.is_moe_layer(i) for i in range(3)]
        [False, True, True]
        """
        return self.is_moe and layer >= self.first_k_dense_replace

    @property
    def has_dense_layers(self) -> bool:
        """Whether any layer has a dense MLP of ``ffn_hidden_size``."""
        return not self.is_moe or self.first_k_dense_replace > 0

    @property
    def queries_per_group(self) -> int:
        """Query heads that share one K/V head (nq in LAYOUTS.md)."""
        return self.num_attention_heads // self.num_query_groups

    @property
    def qk_norm(self) -> bool:
        """Per-head q/k norms (``head_dim`` elements each): a fact of the family, which
        ``use_qk_norm=False`` turns off where the family's config makes them optional."""
        return FAMILY[self.family].qk_norm and self.use_qk_norm

    @property
    def output_norms(self) -> bool:
        """Norms on the attention and MLP outputs (Gemma-3's): a fact of the family."""
        return FAMILY[self.family].output_norms

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def bias_kinds(self) -> tuple[str, ...]:
        """Attention-sink models' extra kinds (o_proj/router/expert biases, sinks): family facts."""
        return FAMILY[self.family].bias_kinds

    @property
    def interleaved_experts(self) -> bool:
        """vLLM holds each expert's gate/up rows interleaved (g0, u0, g1, ...): a family fact."""
        return FAMILY[self.family].dst_expert_fc1 == "interleaved"

    @property
    def dst_kv_replicated(self) -> bool:
        """vLLM replicates K/V heads when its tp exceeds them (else tp must divide them)."""
        return FAMILY[self.family].dst_kv_replicated

    @property
    def is_gqa(self) -> bool:
        return self.num_query_groups != self.num_attention_heads

    @property
    def padded_vocab_size(self) -> int:
        """vLLM pads the vocab to a multiple of 64 before slicing it over ranks."""
        return -(-self.vocab_size // VLLM_VOCAB_PADDING) * VLLM_VOCAB_PADDING

    @classmethod
    def from_hf_config(
        cls,
        path_or_dict: str | os.PathLike[str] | Mapping[str, Any],
        name: str | None = None,
        *,
        mtp: bool = False,
    ) -> ModelSpec:
        """Read a Hugging Face ``config.json`` (a path, its folder, or the parsed dict).

        Plain JSON, no ``transformers``. Supported ``architectures``: see
        ``HF_ARCHITECTURES``; the family follows from it. ``mtp`` lays out the
        multi-token-prediction layers the config counts (refused where it counts none).

        >>> spec = ModelSpec.from_hf_config({
        ...     "architectures": ["LlamaForCausalLM"], "num_hidden_layers": 2,
        ...     "hidden_size": 64, "num_attention_heads": 8, "num_key_value_heads": 2,
        ...     "intermediate_size": 96, "vocab_size": 500}, name="toy")
        >>> spec.family, spec.num_query_groups, spec.head_dim
        ('llama-mcore', 2, 8)
        """
        config, where, default_name = _load_hf_config(path_or_dict)
        return _spec_from_hf(config, where, name or default_name, mtp)

    def scaled(
        self,
        src: Parallel | None = None,
        dst: Parallel | None = None,
        *,
        target_head_dim: int = 4,
        num_layers: int | None = None,
        min_rows_per_rank: int = 2,
    ) -> ModelSpec:
        """A small copy with the same layout: what each rank owns stays the same blocks.

        Kept as they are (they fix the layout): the family, ``num_layers`` (unless
        ``num_layers=`` is given), attention heads, K/V groups, experts, biases and
        tied embeddings. Shrunk: ``head_dim`` to ``target_head_dim`` and with it the
        hidden size; the dense, per-expert and shared-expert FFN sizes; the vocab.
        Each shrunk size is the smallest one (at least ``min_rows_per_rank`` rows per
        rank at the largest tp it allows) that is divisible by exactly the same
        candidate tp sizes as the original, so the scaled spec is valid for exactly
        the parallel sizes the original is valid for (with ``num_layers=``, pp must
        divide the new count; it is checked against ``src``/``dst`` when given), and
        breaks the same rule for the others. Candidates: every divisor of
        ``num_attention_heads`` (no other tp passes the heads rule) plus the tp of
        ``src``/``dst`` when given. The padded vocab keeps its divisibility by these
        and by Megatron's ``128 * tp``; the vocab keeps its distance to the next
        multiple of 64, so vLLM pads it by the same number of rows.

        >>> from syncviz.presets import preset
        >>> small = preset("llama3-70b").scaled()
        >>> small.name, small.hidden_size, small.ffn_hidden_size, small.vocab_size
        ('llama3-70b (scaled)', 256, 128, 256)
        """
        _require_positive(target_head_dim, "target_head_dim", fix="use target_head_dim=4")
        _require_positive(min_rows_per_rank, "min_rows_per_rank", fix="use min_rows_per_rank=2")
        layers = self.num_layers if num_layers is None else _checked_layers(num_layers, src, dst)
        tps = _candidate_tps(self.num_attention_heads, src, dst)

        def shrink(size: int) -> int:
            return _shrink(size, tps, min_rows_per_rank) if size > 0 else 0

        if self.hidden_size == self.num_attention_heads * self.head_dim:
            hidden = self.num_attention_heads * target_head_dim
        else:  # an explicit head_dim: hidden is never split, keep its divisibility anyway
            hidden = shrink(self.hidden_size)
        padding = self.padded_vocab_size - self.vocab_size
        # Megatron pads the vocab to a multiple of 128 * tp. A vocab that vLLM need not pad
        # may or may not need Megatron's padding at a given tp: keep which. Any other vocab
        # is padded by Megatron at every tp, scaled or not.
        megatron = [MEGATRON_VOCAB_DIVISOR * tp for tp in tps] if padding == 0 else []
        vocab_divisors = [*tps, *megatron]
        padded = _same_divisibility(
            self.padded_vocab_size,
            vocab_divisors,
            unit=VLLM_VOCAB_PADDING,
            floor=min_rows_per_rank * _largest_divisor(self.padded_vocab_size, tps),
        )
        name = self.name if self.name.endswith(" (scaled)") else f"{self.name} (scaled)"
        return replace(
            self,
            name=name,
            num_layers=layers,
            hidden_size=hidden,
            head_dim=target_head_dim,
            ffn_hidden_size=shrink(self.ffn_hidden_size),
            vocab_size=padded - padding,
            moe_ffn_hidden_size=shrink(self.moe_ffn_hidden_size),
            shared_expert_ffn_hidden_size=shrink(self.shared_expert_ffn_hidden_size),
            first_k_dense_replace=min(self.first_k_dense_replace, layers),
            **_scaled_mla(self, target_head_dim),
            source=f"scaled from {self.name}",
        )


# ---------------------------------------------------------------- downscale helpers


def _scaled_mla(spec: ModelSpec, head: int) -> dict[str, int]:
    """MLA's sizes at head size ``head``: no rank splits them (heads are kept), so any
    small distinct sizes keep the layout; each stays at least 1."""
    if not spec.is_mla:
        return {}
    return {
        "qk_nope_head_dim": head,
        "qk_rope_head_dim": max(1, head // 2),
        "v_head_dim": head,
        "kv_lora_rank": 2 * head,
        "q_lora_rank": 3 * head if spec.q_lora_rank else 0,
    }


def _candidate_tps(heads: int, src: Parallel | None, dst: Parallel | None) -> list[int]:
    tps = _divisors(heads)
    tps.update(side.tp for side in (src, dst) if side is not None)
    return sorted(tps)


def _divisors(n: int) -> set[int]:
    """Every divisor of ``n``, found in sqrt(n) steps (heads may be large).

    >>> sorted(_divisors(12))
    [1, 2, 3, 4, 6, 12]
    """
    found: set[int] = set()
    for d in range(1, math.isqrt(n) + 1):
        if n % d == 0:
            found.update((d, n // d))
    return found


def _largest_divisor(size: int, candidates: Iterable[int]) -> int:
    return max(c for c in candidates if size % c == 0)


def _shrink(size: int, tps: list[int], min_rows_per_rank: int) -> int:
    floor = min_rows_per_rank * _largest_divisor(size, tps)
    return _same_divisibility(size, tps, unit=1, floor=floor)


def _same_divisibility(original: int, divisors: Iterable[int], *, unit: int, floor: int) -> int:
    """Smallest multiple of ``unit``, at least ``floor``, divisible by exactly the
    ``divisors`` that divide ``original`` (``original`` must be a multiple of ``unit``).

    It exists: ``step`` divides ``original``, so no excluded divisor divides ``step``.
    """
    divisors = set(divisors)
    needed = [d for d in divisors if original % d == 0]
    excluded = [d for d in divisors if original % d]
    step = math.lcm(unit, *needed)
    size = max(step, -(-floor // step) * step)
    while any(size % d == 0 for d in excluded):
        size += step
    return size


def _require_positive(value: object, name: str, *, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SyncvizError(f"{name} ({value!r}) must be a positive integer", fix=fix)


def _checked_layers(num_layers: int, src: Parallel | None, dst: Parallel | None) -> int:
    _require_positive(
        num_layers, "num_layers", fix="use num_layers=None to keep the model's layers"
    )
    for side, sizes in (("src", src), ("dst", dst)):
        if sizes is not None and num_layers % sizes.pp:
            raise SyncvizError(
                f"num_layers ({num_layers}) must be divisible by {side} pp ({sizes.pp})",
                fix=f"use a multiple of {sizes.pp}, e.g. {sizes.pp}",
            )
    return num_layers


# ---------------------------------------------------------------- Hugging Face config.json


# Sane upper bounds for config.json sizes: far above any released model, low enough
# that the oracle and the plan answer in seconds. A value above its bound is refused.
CONFIG_BOUNDS: dict[str, int] = {
    "num_hidden_layers": 1024,
    "hidden_size": 1 << 18,
    "num_attention_heads": 4096,
    "num_key_value_heads": 4096,
    "head_dim": 4096,
    "kv_channels": 4096,
    "intermediate_size": 1 << 20,
    "moe_intermediate_size": 1 << 20,
    "shared_expert_intermediate_size": 1 << 20,
    "vocab_size": 1 << 24,
    "num_experts": 1024,
    "num_local_experts": 1024,
    "n_routed_experts": 1024,
    "n_shared_experts": 1024,
    "first_k_dense_replace": 1024,
    "num_nextn_predict_layers": 64,
    "q_lora_rank": 1 << 18,
    "kv_lora_rank": 1 << 18,
    "qk_nope_head_dim": 4096,
    "qk_rope_head_dim": 4096,
    "v_head_dim": 4096,
}
MAX_CONFIG_BYTES = 16 << 20  # a config.json is a few KiB
_CONFIG_FIX = "pass the path of a Hugging Face config.json or of the folder that holds it"


def _load_hf_config(
    path_or_dict: str | os.PathLike[str] | Mapping[str, Any],
) -> tuple[Mapping[str, Any], str, str]:
    """(config, where it came from for messages, a default name).

    Files are read bounded (size, nesting depth and integer length; see
    :mod:`syncviz.trace.json_io`), so any bad file is a SyncvizError.
    """
    from syncviz.trace.json_io import json_object, parse_json, read_text_file

    if isinstance(path_or_dict, Mapping):
        config = path_or_dict
        return config, "the config dict", str(config.get("_name_or_path") or "custom")
    if not isinstance(path_or_dict, (str, os.PathLike)):
        raise SyncvizError(
            f"config ({type(path_or_dict).__name__}) must be a path or a dict",
            fix="pass the path of a Hugging Face config.json, its folder, or the parsed dict",
        )
    path = Path(path_or_dict)
    if path.is_dir():
        path = path / "config.json"
    if not path.exists():
        raise SyncvizError(f"config file {str(path)!r} does not exist", fix=_CONFIG_FIX)
    text = read_text_file(path, "config file", MAX_CONFIG_BYTES, fix=_CONFIG_FIX)
    named = f"config file {str(path)!r}"
    parsed = parse_json(text, named, fix="fix the JSON syntax; the file must hold one JSON object")
    config = json_object(
        parsed, named, fix='the file must hold one JSON object like {"architectures": [...], ...}'
    )
    default_name = config.get("_name_or_path") or (
        path.parent.name if path.name == "config.json" and path.parent.name else path.stem
    )
    return config, repr(str(path)), str(default_name)


def _architecture(config: Mapping[str, Any], where: str) -> str:
    supported = ", ".join(HF_ARCHITECTURES)
    names = config.get("architectures")
    if isinstance(names, str):
        names = [names]
    if names is not None and not (
        isinstance(names, list) and all(isinstance(n, str) for n in names)
    ):
        raise SyncvizError(
            f"architectures ({shown(names)}) in {where} must be a list of class names",
            fix='use e.g. "architectures": ["LlamaForCausalLM"]',
        )
    if names:
        for arch in names:
            if arch in HF_ARCHITECTURES:
                return arch
        raise SyncvizError(
            f"architecture {shown(', '.join(names))[1:-1]} in {where} is not supported",
            fix=f"use a config of one of {supported}, or declare the model's family in one"
            " file (--family PATH; see the README, 'Your own model')",
        )
    model_type = config.get("model_type")
    if model_type is not None and not isinstance(model_type, str):
        raise SyncvizError(
            f"model_type ({shown(model_type)}) in {where} must be a string",
            fix='use e.g. "model_type": "llama", or add an "architectures" list',
        )
    if model_type in _HF_MODEL_TYPES:
        return _HF_MODEL_TYPES[model_type]
    raise SyncvizError(
        f"{where} has no 'architectures' list (and model_type {model_type!r} is not known)",
        fix=f'add "architectures": ["<one of {supported}>"]',
    )


def _positive_int(
    config: Mapping[str, Any], key: str, where: str, default: int | None = None
) -> int:
    value = config.get(key)
    if value is None:
        if default is not None:
            return default
        raise SyncvizError(
            f"{where} has no {key!r}",
            fix=f'add "{key}": <positive integer> from the model\'s config.json',
        )
    return _count(value, key, where, least=1)


def _count(value: Any, key: str, where: str, *, least: int) -> int:
    """``value`` (``config[key]``) as a JSON integer of at least ``least`` (1 or 0), within
    :data:`CONFIG_BOUNDS`.

    >>> _count(3, "num_experts", "config", least=0)
    3
    >>> _count(True, "num_experts", "config", least=1)
    Traceback (most recent call last):
    ...
    syncviz.errors.SyncvizError: num_experts (True) in config must be a positive integer: \
set num_experts to the value in the model's config.json
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        what = "a positive integer" if least == 1 else f"a whole number >= {least}"
        raise SyncvizError(
            f"{key} ({shown(value)}) in {where} must be {what}",
            fix=f"set {key} to the value in the model's config.json",
        )
    bound = CONFIG_BOUNDS.get(key)
    if bound is not None and value > bound:
        raise SyncvizError(
            f"{key} ({value}) in {where} is above the bound of {bound} syncviz accepts",
            fix=f"check the value; real models stay below {bound}",
        )
    return value


def _flag(config: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    """A JSON boolean (``"false"`` as a string would read as true, so it is refused)."""
    value = config.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise SyncvizError(
            f"{key} ({shown(value)}) in {where} must be a JSON boolean",
            fix=f'write "{key}": true or "{key}": false, without quotes',
        )
    return value


def _spec_from_hf(config: Mapping[str, Any], where: str, name: str, mtp: bool = False) -> ModelSpec:
    """The spec, read as the family's record (``syncviz.families``) says: no per-family code."""
    arch = _architecture(config, where)
    info = FAMILY[HF_ARCHITECTURES[arch]]
    if arch == info.wrapper_architecture:
        config, where = _text_config(config, where, info), f"text_config of {where}"
    _check_model_type(config, where, info.architecture, info)
    config = {**info.config_defaults, **config}

    def need(key: str, default: int | None = None) -> int:
        return _positive_int(config, key, where, default)

    heads = need("num_attention_heads")
    hidden = need("hidden_size")
    _refuse_unread_keys(config, where, info, hidden // heads)
    sizes: dict[str, Any] = {
        "num_layers": need("num_hidden_layers"),
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "num_query_groups": heads if info.mha_only else need("num_key_value_heads", heads),
        "ffn_hidden_size": need("intermediate_size"),
        "vocab_size": need("vocab_size"),
        "head_dim": (
            need(info.head_dim_key)
            if config.get(info.head_dim_key) is not None and not info.mla
            else 0
        ),
        "tie_word_embeddings": _flag(config, "tie_word_embeddings", where, False),
        "qkv_bias": (
            _flag(config, info.qkv_bias, where, info.qkv_bias_default)
            if isinstance(info.qkv_bias, str)
            else info.qkv_bias
        ),
    }
    if info.fused_ffn:
        # intermediate_size holds both halves (QWen v1's w1 + w2).
        fused = sizes["ffn_hidden_size"]
        if fused % 2:
            raise SyncvizError(
                f"intermediate_size ({fused}) in {where} must be even for {info.name}",
                fix=f"{info.name} stores gate and up together: use twice the MLP size",
            )
        sizes["ffn_hidden_size"] = fused // 2
    if info.is_moe:
        if info.sparse_step:
            _require_all_layers_moe(config, where)
        present = [k for k in info.experts_keys if k in config]
        sizes.update(
            num_experts=need(present[0] if present else info.experts_keys[0]),
            moe_ffn_hidden_size=need(info.moe_ffn_key),
        )
        if info.shared_expert:
            has_shared = config.get("shared_expert_intermediate_size") not in (None, 0)
            shared = need("shared_expert_intermediate_size") if has_shared else 0
            sizes.update(shared_expert_ffn_hidden_size=shared, shared_expert_gate=shared > 0)
    sizes.update(_stack_and_mla_sizes(config, where, info, sizes))
    notes: tuple[str, ...] = ()
    if config.get("quantization_config") is not None:
        notes = (
            f"{where} has a quantization_config: quantization scales are not part of the"
            " layout, so the check covers the unquantized weights",
        )
    count = _whole(config, info.mtp_key, where) if info.mtp_key else 0
    if count and not mtp:
        notes += (
            f"{where} has {info.mtp_key} {count}: the multi-token-prediction layer(s)"
            " after the last layer are left out of the layout (mtp=True, --mtp, lays them out)",
        )
    spec = ModelSpec(
        name=name, family=info.name, source=f"hf config {where} ({arch})", notes=notes, **sizes
    )
    return spec.with_mtp(count, where) if mtp else spec


def _mtp_families() -> list[str]:
    """The families with multi-token-prediction layers."""
    return [f for f, info in FAMILY.items() if info.mtp is not None]


def _text_config(config: Mapping[str, Any], where: str, info: FamilyInfo) -> Mapping[str, Any]:
    """A multimodal wrapper's text model: its ``text_config`` (the vision tower is not read).

    >>> _text_config({"text_config": {"hidden_size": 8}}, "c", FAMILY["qwen3"])
    {'hidden_size': 8}
    """
    text = config.get("text_config")
    if not isinstance(text, Mapping):
        raise SyncvizError(
            f"{where} is a {info.wrapper_architecture} config without a text_config object"
            f" ({shown(text)})",
            fix="use the model's published config.json, whose text_config holds the text model",
        )
    return text


def _whole(config: Mapping[str, Any], key: str, where: str) -> int:
    """A count that may be 0 or absent (null reads as 0)."""
    value = config.get(key)
    return 0 if value is None else _count(value, key, where, least=0)


def _stack_and_mla_sizes(
    config: Mapping[str, Any], where: str, info: FamilyInfo, sizes: Mapping[str, Any]
) -> dict[str, Any]:
    """Dense first layers, a counted shared expert, the router bias, optional q/k norms
    and MLA's sizes."""
    out: dict[str, Any] = {}
    if info.dense_first_key:
        out["first_k_dense_replace"] = min(
            _whole(config, info.dense_first_key, where), sizes["num_layers"]
        )
    if info.shared_experts_key:
        count = _whole(config, info.shared_experts_key, where)
        out["shared_expert_ffn_hidden_size"] = count * sizes["moe_ffn_hidden_size"]
    if info.router_bias:
        key, value = ROUTER_BIAS_WHEN
        out["router_bias"] = config.get(key, value) == value
    if info.qk_norm_key:
        out["use_qk_norm"] = _flag(config, info.qk_norm_key, where, False)
    if info.mla:
        out["q_lora_rank"] = _whole(config, "q_lora_rank", where)
        for key in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
            out[key] = _positive_int(config, key, where)
    return out


def _is_set(key: str, value: object) -> bool:
    """Whether a layout key's value adds something (null, false, 0, [] and the key's own
    inactive value do not)."""
    if value is None or value is False or value == 0 or value == [] or value == {}:
        return False
    return key not in INACTIVE_VALUES or value != INACTIVE_VALUES[key]


def _refuse_unread_keys(
    config: Mapping[str, Any], where: str, info: FamilyInfo, derived_head_dim: int
) -> None:
    """A layout key the family does not read would be silently dropped: refuse it.

    >>> try:
    ...     _refuse_unread_keys({"q_lora_rank": 1536}, "c", FAMILY["llama-mcore"], 128)
    ... except SyncvizError as err:
    ...     print(err.message[:53])
    q_lora_rank (1536) in c changes the layout (MLA's low
    """
    for key, what in LAYOUT_KEYS.items():
        if key in info.reads or key not in config:
            continue
        value = config[key]
        if key in ("head_dim", "kv_channels"):
            if value is None or value == derived_head_dim:
                continue  # the size hidden/heads gives anyway
        elif not _is_set(key, value):
            continue
        readers = [f for f in readers_of(key) if f != info.name]
        if readers:
            who = "family " + " / ".join(readers) + " reads it"
            fix = (
                f"read the config as {readers[0]} (architectures"
                f' ["{FAMILY[readers[0]].architecture}"]), or remove {key} if it does not apply'
            )
        else:
            owner = KEY_OWNERS.get(key, "another model family")
            who = f"it is read by {owner}, which syncviz does not model yet"
            fix = f"use that model's own config; syncviz cannot lay it out as {info.name}"
        raise SyncvizError(
            f"{key} ({shown(value)}) in {where} changes the layout ({what}) but family"
            f" {info.name} does not read it; {who}",
            fix=fix,
        )


def _check_model_type(config: Mapping[str, Any], where: str, arch: str, info: FamilyInfo) -> None:
    """A ``model_type`` naming another layout than ``architectures`` (a relabelled config)."""
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type == info.model_type:
        return
    if model_type in UNSUPPORTED_MODEL_TYPES:
        raise SyncvizError(
            f"model_type {model_type!r} in {where} is {UNSUPPORTED_MODEL_TYPES[model_type]},"
            f" whose layout syncviz does not model yet, but architectures says {arch}",
            fix=f"do not relabel the config: {arch}'s layout lacks that model's parameters",
        )
    other_arch = _HF_MODEL_TYPES.get(model_type)
    if other_arch is None:
        return
    other = FAMILY[HF_ARCHITECTURES[other_arch]]
    if other.layout_signature != info.layout_signature:
        raise SyncvizError(
            f"model_type {model_type!r} in {where} is family {other.name} ({other_arch}), whose"
            f" layout differs from {arch}'s (family {info.name})",
            fix=f'use "architectures": ["{other_arch}"]; a relabelled config drops parameters',
        )


def _require_all_layers_moe(config: Mapping[str, Any], where: str) -> None:
    """A ModelSpec has one MLP kind for all layers; mixed dense/MoE stacks do not fit."""
    step = config.get("decoder_sparse_step", 1)
    dense_layers = config.get("mlp_only_layers") or []
    if isinstance(step, bool) or not isinstance(step, int):
        raise SyncvizError(
            f"decoder_sparse_step ({shown(step)}) in {where} must be an integer",
            fix='use "decoder_sparse_step": 1',
        )
    if step != 1 or dense_layers:
        field = "decoder_sparse_step" if step != 1 else "mlp_only_layers"
        raise SyncvizError(
            f"{where} mixes dense and MoE layers (decoder_sparse_step={step!r},"
            f" mlp_only_layers={dense_layers!r}), which syncviz does not model ({field})",
            fix="use decoder_sparse_step 1 and an empty mlp_only_layers",
        )
