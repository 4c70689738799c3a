"""Name maps: Megatron parameter names to vLLM parameter names, as ChatLearn's sync maps did it.

The three maps keep the original's constructor arguments, attributes, output order and
error texts (assertion texts include the repr of the tables, so table order matters).

>>> m = MCore2LlamaSyncMap(["module.module.decoder.layers.0.mlp.linear_fc2.weight"], 2)
>>> m.dst_names
['model.model.layers.2.mlp.down_proj.weight']
>>> q = Megatron2QWenSyncMap(["x.mlp.w1.weight", "x.mlp.w2.weight"], 0, 1.0)
>>> q.src_names  # the constructor puts w2 (gate) before w1 (up)
['x.mlp.w2.weight', 'x.mlp.w1.weight']
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, TypeVar, overload


class QwenVersion(float, Enum):
    """The QWen generations the QWen map knows; compares equal to 1.0 and 2.0.

    >>> QwenVersion.v_2 == 2.0
    True
    """

    v_1 = 1.0
    v_2 = 2.0


# ---- tables (data) ---------------------------------------------------------------------------

LEGACY_SRC_PREFIX = "module.module.language_model"
MCORE_SRC_PREFIX = "module.module"
LM_HEAD = "model.lm_head.weight"

# Group 1: layer index, group 2: op name, group 3: the trailing word ("weight", "bias", ...).
# The regexes are matched with re.match (a prefix match), exactly as the original did.
LEGACY_LAYER_PATTERN = r"{prefix}.encoder.layers\.(\d+)\.([a-z0-9_.]+)\.([a-z]+)"
MCORE_LAYER_PATTERN = r"{prefix}.decoder.layers\.(\d+)\.([a-z0-9_.]+)[\._]([a-z]+)"

QKV_OPS = ("attention.query_key_value", "self_attention.query_key_value")

LLAMA_LAYER_TABLE = {
    "self_attention.dense": ".self_attn.o_proj.",
    "mlp.dense_h_to_4h": ".mlp.gate_up_proj.",
    "mlp.dense_4h_to_h": ".mlp.down_proj.",
    "self_attention.rotary_emb": ".self_attn.rotary_emb.inv_freq",
}

MCORE_LAYER_TABLE = {
    "self_attention.linear_proj": ".self_attn.o_proj.",
    "mlp.linear_fc1": ".mlp.gate_up_proj.",
    "mlp.linear_fc2": ".mlp.down_proj.",
}

# MCore fuses the norms into the next linear; which fused norm is which vLLM norm.
MCORE_FUSED_NORMS = {
    "self_attention.linear_qkv.layer_norm": "input_layernorm",
    "mlp.linear_fc1.layer_norm": "post_attention_layernorm",
}

ROUTED_EXPERT_OPS = ("mlp.experts.dense_h_to_4h", "mlp.experts.dense_4h_to_h")

# A per-op naming rule: (layer name, op name, trailing word) -> appends destination names.
LayerRule = Callable[[str, str, str], None]


@dataclass(frozen=True)
class QwenNaming:
    """Destination names that differ between QWen generations.

    >>> [naming.layer_prefix for naming in QWEN_NAMINGS]
    ['h', 'layers']
    """

    version: float
    dst_prefix: str
    embed: str
    layer_prefix: str
    attn_dense: str
    mlp_dense: str
    final_norm: str
    input_norm: str
    post_norm: str
    qkv: str


# The destination names of each QWen generation: field, then its name in 1.0 and in 2.0.
_QWEN_NAMES = (
    ("dst_prefix", "model.transformer", "model.model"),
    ("embed", "wte", "embed_tokens"),
    ("layer_prefix", "h", "layers"),
    ("attn_dense", ".attn.c_proj.", ".self_attn.o_proj."),
    ("mlp_dense", ".mlp.c_proj.", ".mlp.down_proj."),
    ("final_norm", "ln_f", "norm"),
    ("input_norm", "ln_1", "input_layernorm"),
    ("post_norm", "ln_2", "post_attention_layernorm"),
    ("qkv", ".attn.c_attn.", ".self_attn.qkv_proj."),
)
QWEN_NAMINGS = tuple(
    QwenNaming(version=float(v), **{field: names[i] for field, *names in _QWEN_NAMES})
    for i, v in enumerate(QwenVersion)
)


def qwen_layer_table(naming: QwenNaming) -> dict[str, str]:
    """The QWen op-name table for one generation (order kept: error texts print it).

    >>> qwen_layer_table(QWEN_NAMINGS[1])["mlp.dense_4h_to_h"]
    '.mlp.down_proj.'
    """
    return {
        "attention.attention_layernorm": ".attn.attention_layernorm.",
        "attention.dense": ".attn.c_proj.",
        "self_attention.dense": naming.attn_dense,
        "mlp.dense_h_to_4h": ".mlp.gate_up_proj.",
        "mlp.w1": ".mlp.gate_up_proj.",
        "mlp.w2": ".mlp.gate_up_proj.",
        "mlp.dense_4h_to_h": naming.mlp_dense,
        # No dots around this one: the original glues it to the layer name as is.
        "mlp.dense_layernorm": "mlp.dense_layernorm",
        "mlp.router.layer": ".mlp.gate.",
        "mlp.experts.dense_h_to_4h": ".mlp.experts.w13_weight",
        "mlp.experts.dense_4h_to_h": ".mlp.experts.w2_weight",
        "mlp.shared_experts.dense_h_to_4h": ".mlp.shared_expert.gate_up_proj.",
        "mlp.shared_experts.dense_4h_to_h": ".mlp.shared_expert.down_proj.",
        "mlp.gate": ".mlp.shared_expert_gate.",
    }


def _modules(names: Sequence[str], **extra: Any) -> dict[str, Any]:
    """A fresh ``{"modules": [...], ...}`` configuration dictionary."""
    return {"modules": list(names), **extra}


T = TypeVar("T")


class _Table(Generic[T]):
    """A read-only attribute that returns the table a map keeps in ``_<name>`` (the
    original's properties: each map fills its tables before the base constructor runs).

    >>> class Holder:
    ...     names = _Table[list]("The names.")
    ...     def __init__(self):
    ...         self._names = ["a"]
    >>> Holder().names, Holder.names.__doc__
    (['a'], 'The names.')
    """

    def __init__(self, doc: str) -> None:
        self.__doc__ = doc
        self._attr = ""

    def __set_name__(self, owner: type, name: str) -> None:
        if not self._attr:  # an alias reads the first name's table
            self._attr = "_" + name

    @overload
    def __get__(self, obj: None, owner: type) -> _Table[T]: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> T: ...
    def __get__(self, obj: object, owner: type | None = None) -> T | _Table[T]:
        return self if obj is None else getattr(obj, self._attr)

    def __set__(self, obj: object, value: T) -> None:
        raise AttributeError(f"{self._attr[1:]} is read-only: set {self._attr} instead")


_NameTable = _Table[dict[str, str]]
_RuleTable = _Table[dict[str, Any] | None]


# ---- maps -----------------------------------------------------------------------------------


class ParameterSyncMap:
    """Base of the sync maps: holds the source names and maps them to destination names lazily.

    Subclasses fill the tables (``_embedding_sync_map``, ``_layer_sync_map``, ...) before
    calling this constructor, and implement :meth:`map_src_to_dst`.

    >>> ParameterSyncMap(["a"], 0).get_dst_name({"a": "b"}, "a")
    'b'
    """

    def __init__(self, src_names: list[str], layer_offset: int) -> None:
        self.weight_or_bias = ["weight", "bias"]
        self.src_names = src_names
        self.layer_offset = layer_offset
        self._dst_names: list[str] = []

    embedding_sync_map = _NameTable("Whole-tensor names before the layers (embeddings).")
    layer_sync_map = _NameTable("Op name inside a layer -> the middle of the destination name.")
    final_layer_sync_map = _NameTable("Whole-tensor names after the layers (final norm, output).")
    concat_params_dict = _RuleTable("Parameters concatenated into one before sending, or None.")
    to_fix_shared_expert_ordering = _RuleTable("Shared-expert fc1 whose halves swap, or None.")
    to_allgather_routed_experts_dict = _RuleTable("Routed experts regrouped by all-gather or None.")
    to_alltoall_routed_experts_dict = _RuleTable("Routed experts regrouped by all-to-all or None.")
    # The original spelled these two property names this way; kept for drop-in code.
    to_allgather_roututed_experts_dict = to_allgather_routed_experts_dict
    to_alltoall_roututed_experts_dict = to_alltoall_routed_experts_dict
    to_fix_act_ordering_dict = _RuleTable("Fused gated-MLP weights whose halves swap, or None.")
    to_fix_qkv_ordering_dict = _RuleTable("Fused QKV parameters reordered before sending, or None.")

    @property
    def dst_names(self) -> list[str]:
        """Destination names, computed on first use (again while the list is empty)."""
        if not self._dst_names:
            self.map_src_to_dst()
        return self._dst_names

    def map_src_to_dst(self) -> None:
        """Fill the destination names; each subclass knows its own naming."""
        raise RuntimeError("Must be implemented by subclass.")

    def get_dst_name(self, sync_map: dict[str, str], src_name: str) -> str:
        """``sync_map[src_name]``; a missing key fails with the table in the message."""
        if src_name not in sync_map:
            raise AssertionError(f"expect {src_name} in {sync_map}")
        return sync_map[src_name]


class _LayerwiseSyncMap(ParameterSyncMap):
    """The shared walk: whole tensors by table, layer tensors by regex, then per-op rules."""

    _not_a_layer = "expect src_name to be a layer, while {name}"
    layer_re: re.Pattern[str]
    dst_prefix: str

    def map_src_to_dst(self) -> None:
        """Append one destination name per source name (some ops add none)."""
        for src_name in self.src_names:
            whole = self._whole_tensor_table(src_name)
            if whole is not None:
                self._dst_names.append(self.get_dst_name(whole, src_name))
                continue
            match = self.layer_re.match(src_name)
            if match is None:
                raise RuntimeError(self._not_a_layer.format(name=src_name))
            layer_name = self._layer_name(int(match.group(1)) + self.layer_offset)
            self._map_layer_param(layer_name, match.group(2), match.group(3))

    def _whole_tensor_table(self, src_name: str) -> dict[str, str] | None:
        for table in (self.embedding_sync_map, self.final_layer_sync_map):
            if src_name in table:
                return table
        return None

    def _layer_name(self, layer_idx: int) -> str:
        return f"{self.dst_prefix}.layers.{layer_idx}"

    def _map_layer_param(self, layer_name: str, op_name: str, weight_or_bias: str) -> None:
        raise NotImplementedError


def _set_plain_configs(sync_map: ParameterSyncMap, qkv_ops: Sequence[str]) -> None:
    """The Llama maps only reorder QKV; every other configuration is off."""
    sync_map._concat_params_dict = None
    sync_map._to_fix_shared_expert_ordering = None
    sync_map._to_allgather_routed_experts_dict = None
    sync_map._to_alltoall_routed_experts_dict = None
    sync_map._to_fix_act_ordering_dict = None
    sync_map._to_fix_qkv_ordering_dict = _modules(qkv_ops, layer_re=sync_map.layer_re)


class _LlamaSyncMap(_LayerwiseSyncMap):
    """What the two Llama maps share: their tables, built from the source prefix, and the
    walk of one layer tensor. Each subclass states its prefix, layer regex, layer table,
    final norm, QKV ops, the trailing words it skips and how it names a norm."""

    _src_prefix: str
    _layer_pattern: str
    _layer_table: dict[str, str]
    _final_norm: str
    _qkv_ops: tuple[str, ...]
    _skipped: tuple[str, ...]

    def __init__(self, src_names: list[str], layer_offset: int) -> None:
        src_prefix, dst_prefix = self._src_prefix, "model.model"
        self.layer_re = re.compile(self._layer_pattern.format(prefix=src_prefix))
        self.src_prefix = src_prefix
        self.dst_prefix = dst_prefix
        # vLLM rebuilds the rotary embedding itself, so it is not in the tables.
        self._embedding_sync_map = {
            f"{src_prefix}.embedding.word_embeddings.weight": f"{dst_prefix}.embed_tokens.weight"
        }
        self._layer_sync_map = dict(self._layer_table)
        self._final_layer_sync_map = {
            f"{src_prefix}.{self._final_norm}": f"{dst_prefix}.norm.weight",
            f"{src_prefix}.output_layer.weight": LM_HEAD,
        }
        _set_plain_configs(self, self._qkv_ops)
        super().__init__(src_names, layer_offset)

    def _norm(self, op_name: str) -> str | None:
        """vLLM's norm for the weight of ``op_name``; None when it is no norm."""
        raise NotImplementedError

    def _map_layer_param(self, layer_name: str, op_name: str, weight_or_bias: str) -> None:
        names = self._dst_names
        norm = self._norm(op_name) if weight_or_bias == "weight" else None
        if norm is not None:
            names.append(f"{layer_name}.{norm}.{weight_or_bias}")
        elif op_name in self._qkv_ops and weight_or_bias == "weight":
            names.append(layer_name + ".self_attn.qkv_proj.weight")
        elif weight_or_bias == "weight":
            names.append(layer_name + self.get_dst_name(self.layer_sync_map, op_name) + "weight")
        elif weight_or_bias in self._skipped:
            pass  # Llama has no biases on the vLLM side (nor Transformer Engine extra states).
        else:
            # e.g. "rotary_emb.inv_freq": the regex stops at "inv", the table gives the rest.
            names.append(layer_name + self.get_dst_name(self.layer_sync_map, op_name))


class Megatron2LlamaSyncMap(_LlamaSyncMap):
    """Legacy Megatron (``language_model.encoder``) Llama names -> vLLM Llama names.

    >>> names = ["module.module.language_model.encoder.layers.1.post_attention_norm.weight"]
    >>> Megatron2LlamaSyncMap(names, 0).dst_names
    ['model.model.layers.1.post_attention_layernorm.weight']
    """

    _src_prefix = LEGACY_SRC_PREFIX
    _layer_pattern = LEGACY_LAYER_PATTERN
    _layer_table = LLAMA_LAYER_TABLE
    _final_norm = "encoder.final_norm.weight"
    _qkv_ops = QKV_OPS
    _skipped = ("bias",)

    def _norm(self, op_name: str) -> str | None:
        if not op_name.endswith("_norm"):
            return None
        return "input_layernorm" if op_name.startswith("input") else "post_attention_layernorm"


class MCore2LlamaSyncMap(_LlamaSyncMap):
    """Megatron-Core (``decoder.layers``) Llama names -> vLLM Llama names.

    >>> names = ["module.module.decoder.layers.0.self_attention.linear_qkv.layer_norm_weight"]
    >>> MCore2LlamaSyncMap(names, 3).dst_names
    ['model.model.layers.3.input_layernorm.weight']
    """

    _not_a_layer = "expect src_name ({name}) to be a layer"
    _src_prefix = MCORE_SRC_PREFIX
    _layer_pattern = MCORE_LAYER_PATTERN
    _layer_table = MCORE_LAYER_TABLE
    _final_norm = "decoder.final_layernorm.weight"
    _qkv_ops = ("self_attention.linear_qkv",)
    _skipped = ("bias", "_extra_state")

    def _norm(self, op_name: str) -> str | None:
        if not op_name.endswith("layer_norm"):
            return None
        if op_name not in MCORE_FUSED_NORMS:
            raise AssertionError(f"expect op_name ({op_name}) to be layer norm")
        return MCORE_FUSED_NORMS[op_name]


def _find_qwen_naming(qwen_version: Any) -> QwenNaming:
    for naming in QWEN_NAMINGS:
        if qwen_version == naming.version:
            return naming
    raise RuntimeError(f"Unsupported qwen version {qwen_version}, only 1.0 or 2.0 for now.")


def _gate_before_up(src_names: Sequence[str]) -> list[str]:
    """Put each ``mlp.w2`` (gate) right before its ``mlp.w1`` (up), which must precede it.

    The name after a ``mlp.w1`` is taken as its partner whatever it is (a ``w1`` in last
    place fails with IndexError, as in the original).
    """
    ordered: list[str] = []
    for idx, name in enumerate(src_names):
        if "mlp.w1" in name:
            ordered.extend((src_names[idx + 1], name))
        elif "mlp.w2" not in name:
            ordered.append(name)
    return ordered


class Megatron2QWenSyncMap(_LayerwiseSyncMap):
    """Legacy Megatron QWen / QWen2 (and QWen-MoE) names -> vLLM QWen or QWen2 names.

    >>> names = ["module.module.language_model.encoder.layers.0.mlp.router.layer.weight"]
    >>> Megatron2QWenSyncMap(names, 0, 2.0).dst_names
    ['model.model.layers.0.mlp.gate.weight']
    """

    def __init__(
        self, src_names: list[str], layer_offset: int, qwen_version: float = QwenVersion.v_1
    ) -> None:
        self.qwen_version = qwen_version
        naming = _find_qwen_naming(qwen_version)
        self._naming = naming
        src_prefix, dst_prefix = LEGACY_SRC_PREFIX, naming.dst_prefix
        self.layer_prefix = naming.layer_prefix
        self.layer_re = re.compile(LEGACY_LAYER_PATTERN.format(prefix=src_prefix))
        self.src_prefix = src_prefix
        self.dst_prefix = dst_prefix
        embed = f"{dst_prefix}.{naming.embed}.weight"
        self._embedding_sync_map = {
            f"{src_prefix}.embedding.word_embeddings.weight": embed,
            "module.module.word_embeddings.weight": embed,
        }
        self._layer_sync_map = qwen_layer_table(naming)
        final_norm = f"{dst_prefix}.{naming.final_norm}"
        self._final_layer_sync_map = {
            f"{src_prefix}.encoder.final_layernorm.bias": f"{final_norm}.bias",
            f"{src_prefix}.encoder.final_layernorm.weight": f"{final_norm}.weight",
            f"{src_prefix}.output_layer.weight": LM_HEAD,
        }
        self._concat_params_dict = _modules(["mlp.w1", "mlp.w2"], dim=0)
        self._to_fix_shared_expert_ordering = _modules(["mlp.shared_experts.dense_h_to_4h"], dim=0)
        self._to_fix_act_ordering_dict = _modules(["mlp.dense_h_to_4h"], dim=0)
        self._to_fix_qkv_ordering_dict = _modules(QKV_OPS, layer_re=self.layer_re)
        self._to_allgather_routed_experts_dict = _modules(ROUTED_EXPERT_OPS, layer_re=self.layer_re)
        self._to_alltoall_routed_experts_dict = _modules(ROUTED_EXPERT_OPS, layer_re=self.layer_re)
        super().__init__(_gate_before_up(src_names), layer_offset)

    def _layer_name(self, layer_idx: int) -> str:
        return f"{self.dst_prefix}.{self.layer_prefix}.{layer_idx}"

    def _map_layer_param(self, layer_name: str, op_name: str, weight_or_bias: str) -> None:
        if op_name.endswith("layernorm"):
            self._map_norm(layer_name, op_name, weight_or_bias)
            return
        rule = self._rule_for(op_name, weight_or_bias)
        if rule is not None:
            rule(layer_name, op_name, weight_or_bias)

    def _rule_for(self, op_name: str, weight_or_bias: str) -> LayerRule | None:
        """The first matching rule, in the original's order; None drops the name."""
        if op_name == "self_attention.rotary_emb":
            return self._rotary
        if op_name in QKV_OPS:
            return self._qkv
        if op_name in ("mlp.w1", "mlp.w2"):
            return self._gate_up_once
        if op_name == "mlp.shared_experts.dense_h_to_4h":
            return self._with_weight_suffix
        if "mlp.experts" in op_name:
            return self._no_suffix
        if weight_or_bias in self.weight_or_bias:
            return self._with_own_suffix
        return None

    def _map_norm(self, layer_name: str, op_name: str, weight_or_bias: str) -> None:
        is_v1 = self.qwen_version == QwenVersion.v_1
        if is_v1 and "attention." in op_name:
            # The original looks up a destination name as a key here, so this always fails.
            table_key = ".attn.attention_layernorm."
            self._dst_names.append(
                layer_name + self.get_dst_name(self.layer_sync_map, table_key) + weight_or_bias
            )
        if is_v1 and "mlp." in op_name:
            self._dst_names.append(
                layer_name + self.get_dst_name(self.layer_sync_map, op_name) + weight_or_bias
            )
        if op_name.startswith("input"):
            self._dst_names.append(f"{layer_name}.{self._naming.input_norm}.{weight_or_bias}")
        elif op_name.startswith("post"):
            self._dst_names.append(f"{layer_name}.{self._naming.post_norm}.{weight_or_bias}")
        elif self.qwen_version == QwenVersion.v_2:
            raise RuntimeError(f"unsupport layernorm {op_name}.")

    def _rotary(self, layer_name: str, op_name: str, weight_or_bias: str) -> None:
        # The original misspells ``append`` on this path, so a rotary name always fails so.
        raise AttributeError("'list' object has no attribute 'apepnd'")

    def _qkv(self, layer_name: str, op_name: str, weight_or_bias: str) -> None:
        self._dst_names.append(layer_name + self._naming.qkv + weight_or_bias)

    def _gate_up_once(self, layer_name: str, op_name: str, weight_or_bias: str) -> None:
        # w1 and w2 are concatenated into one gate_up_proj: name it once.
        name = layer_name + self.layer_sync_map[op_name] + "weight"
        if name not in self._dst_names:
            self._dst_names.append(name)

    def _with_weight_suffix(self, layer_name: str, op_name: str, weight_or_bias: str) -> None:
        self._dst_names.append(layer_name + self.layer_sync_map[op_name] + "weight")

    def _no_suffix(self, layer_name: str, op_name: str, weight_or_bias: str) -> None:
        # Routed experts: vLLM names end in "w13_weight" / "w2_weight" already.
        self._dst_names.append(layer_name + self.layer_sync_map[op_name])

    def _with_own_suffix(self, layer_name: str, op_name: str, weight_or_bias: str) -> None:
        self._dst_names.append(layer_name + self.layer_sync_map[op_name] + weight_or_bias)
