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

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

from syncviz.constants import MEGATRON_VOCAB_DIVISOR, VLLM_VOCAB_PADDING
from syncviz.errors import SyncvizError
from syncviz.families import ARCHITECTURE_FAMILY, MODEL_TYPE_ARCHITECTURE

if TYPE_CHECKING:  # parallel.py sits on the floor above this one
    from syncviz.parallel import Parallel

Family = Literal["llama-legacy", "llama-mcore", "qwen-v1", "qwen2", "qwen2-moe", "mixtral"]
FAMILIES: tuple[str, ...] = get_args(Family)

# Hugging Face `architectures` entry -> trainer family, and config.json `model_type` ->
# architecture (used only when a config.json has no `architectures` list): both read
# from the one family registry.
HF_ARCHITECTURES: dict[str, str] = dict(ARCHITECTURE_FAMILY)
_HF_MODEL_TYPES: dict[str, str] = dict(MODEL_TYPE_ARCHITECTURE)


@dataclass(frozen=True)
class ModelSpec:
    """Sizes of a decoder-only transformer and the family that names its parameters.

    The family fixes the trainer's parameter names and its source conventions
    (see ``syncviz.oracle``); the sizes fix every shape. ``head_dim`` defaults to
    ``hidden_size // num_attention_heads`` (Megatron's ``kv_channels``).
    MoE models set ``num_experts`` > 0 and ``moe_ffn_hidden_size``; Qwen2-MoE
    also has a shared expert (``shared_expert_ffn_hidden_size`` > 0) and its gate.
    ``ffn_hidden_size`` is the size of ONE half (gate or up) of the gated MLP.

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
    source: str = field(default="", compare=False)

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
        return -(-self.vocab_size // VLLM_VOCAB_PADDING) * VLLM_VOCAB_PADDING

    @classmethod
    def from_hf_config(
        cls, path_or_dict: str | os.PathLike[str] | Mapping[str, Any], name: str | None = None
    ) -> ModelSpec:
        """Read a Hugging Face ``config.json`` (a path, its folder, or the parsed dict).

        Plain JSON, no ``transformers``. Supported ``architectures``: see
        ``HF_ARCHITECTURES``; the family follows from it.

        >>> spec = ModelSpec.from_hf_config({
        ...     "architectures": ["LlamaForCausalLM"], "num_hidden_layers": 2,
        ...     "hidden_size": 64, "num_attention_heads": 8, "num_key_value_heads": 2,
        ...     "intermediate_size": 96, "vocab_size": 500}, name="toy")
        >>> spec.family, spec.num_query_groups, spec.head_dim
        ('llama-mcore', 2, 8)
        """
        config, where, default_name = _load_hf_config(path_or_dict)
        return _spec_from_hf(config, where, name or default_name)

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
            source=f"scaled from {self.name}",
        )


# ---------------------------------------------------------------- downscale helpers


def _candidate_tps(heads: int, src: Parallel | None, dst: Parallel | None) -> list[int]:
    tps = {d for d in range(1, heads + 1) if heads % d == 0}
    tps.update(side.tp for side in (src, dst) if side is not None)
    return sorted(tps)


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


def _load_hf_config(
    path_or_dict: str | os.PathLike[str] | Mapping[str, Any],
) -> tuple[Mapping[str, Any], str, str]:
    """(config, where it came from for messages, a default name)."""
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
    if not path.is_file():
        raise SyncvizError(
            f"config file {str(path)!r} does not exist",
            fix="pass the path of a Hugging Face config.json or of the folder that holds it",
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise SyncvizError(
            f"config file {str(path)!r} is not valid JSON ({err.msg} at line {err.lineno},"
            f" column {err.colno})",
            fix="fix the JSON syntax; the file must hold one JSON object",
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise SyncvizError(
            f"config file {str(path)!r} cannot be read ({err})",
            fix="check the file's permissions and that it is UTF-8 text",
        ) from None
    if not isinstance(config, dict):
        raise SyncvizError(
            f"config file {str(path)!r} holds a JSON {type(config).__name__}, not an object",
            fix='the file must hold one JSON object like {"architectures": [...], ...}',
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
    if names:
        for arch in names:
            if arch in HF_ARCHITECTURES:
                return arch
        raise SyncvizError(
            f"architecture {', '.join(map(str, names))} in {where} is not supported",
            fix=f"use a config of one of {supported}, or build a ModelSpec by hand",
        )
    model_type = config.get("model_type")
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
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SyncvizError(
            f"{key} ({value!r}) in {where} must be a positive integer",
            fix=f"set {key} to the value in the model's config.json",
        )
    return value


def _spec_from_hf(config: Mapping[str, Any], where: str, name: str) -> ModelSpec:
    arch = _architecture(config, where)
    family = HF_ARCHITECTURES[arch]

    def need(key: str, default: int | None = None) -> int:
        return _positive_int(config, key, where, default)

    heads = need("num_attention_heads")
    sizes: dict[str, Any] = {
        "num_layers": need("num_hidden_layers"),
        "hidden_size": need("hidden_size"),
        "num_attention_heads": heads,
        "num_query_groups": need("num_key_value_heads", heads),
        "ffn_hidden_size": need("intermediate_size"),
        "vocab_size": need("vocab_size"),
        "head_dim": need("head_dim") if config.get("head_dim") is not None else 0,
        "tie_word_embeddings": bool(config.get("tie_word_embeddings", False)),
    }
    if family == "qwen-v1":
        # QWen v1 stores w1 and w2 as halves of one "intermediate_size", and has
        # no GQA; kv_channels is its head_dim.
        fused = sizes["ffn_hidden_size"]
        if fused % 2:
            raise SyncvizError(
                f"intermediate_size ({fused}) in {where} must be even for QWen v1",
                fix="QWen v1 stores w1+w2 together: use twice the MLP size",
            )
        sizes.update(ffn_hidden_size=fused // 2, num_query_groups=heads, qkv_bias=True)
        if config.get("kv_channels") is not None:
            sizes["head_dim"] = need("kv_channels")
    elif family == "llama-mcore":
        sizes["qkv_bias"] = bool(config.get("attention_bias", False))
    elif family == "qwen2":
        sizes["qkv_bias"] = True  # Qwen2 always has q/k/v biases
    elif family == "qwen2-moe":
        _require_all_layers_moe(config, where)
        has_shared = bool(config.get("shared_expert_intermediate_size"))
        shared = need("shared_expert_intermediate_size") if has_shared else 0
        sizes.update(
            qkv_bias=bool(config.get("qkv_bias", True)),
            num_experts=need("num_experts"),
            moe_ffn_hidden_size=need("moe_intermediate_size"),
            shared_expert_ffn_hidden_size=shared,
            shared_expert_gate=shared > 0,
        )
    elif family == "mixtral":
        experts_key = (
            "num_experts"
            if "num_local_experts" not in config and "num_experts" in config
            else "num_local_experts"
        )
        # Mixtral has no dense MLP: intermediate_size is each expert's size.
        sizes.update(num_experts=need(experts_key), moe_ffn_hidden_size=sizes["ffn_hidden_size"])
    return ModelSpec(
        name=name, family=cast(Family, family), source=f"hf config {where} ({arch})", **sizes
    )


def _require_all_layers_moe(config: Mapping[str, Any], where: str) -> None:
    """A ModelSpec has one MLP kind for all layers; mixed dense/MoE stacks do not fit."""
    step = config.get("decoder_sparse_step", 1)
    dense_layers = config.get("mlp_only_layers") or []
    if step != 1 or dense_layers:
        raise SyncvizError(
            f"{where} mixes dense and MoE layers (decoder_sparse_step={step!r},"
            f" mlp_only_layers={dense_layers!r}), which syncviz does not model",
            fix="use decoder_sparse_step 1 and an empty mlp_only_layers",
        )
