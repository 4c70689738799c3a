"""What a family file declares: :class:`FamilyInfo` (with its :class:`Preset` records).

A family file (``syncviz/families/<family>.py``) holds one ``FamilyInfo``: the names it
goes by outside syncviz, how its config.json reads, its parameter names on the trainer,
on vLLM and in a Hugging Face checkpoint, its trainer conventions, its presets and a
tiny spec for generated checkpoints. Everything else derives from these records.

>>> from syncviz.families import FAMILY
>>> info = FAMILY["qwen3"]
>>> info.src_template("q_norm")
'module.module.decoder.layers.{i}.self_attention.q_layernorm.weight'
>>> info.dst_names["q_norm"]
'model.model.layers.{i}.self_attn.q_norm.weight'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

ExpertLayout = Literal["none", "hep", "sequential"]
Trainer = Literal["legacy", "mcore"]
QkvLayout = Literal["grouped", "separate"]
ExpertFc1 = Literal["halves", "interleaved"]

TRAINER_PREFIX: Mapping[str, str] = MappingProxyType(
    {"legacy": "module.module.language_model.", "mcore": "module.module."}
)
"""Where each trainer's parameter names start (ChatLearn wraps the model twice)."""

LAYOUT_KEYS: Mapping[str, str] = MappingProxyType(
    {
        "head_dim": "the attention head size",
        "kv_channels": "the attention head size",
        "attention_bias": "q/k/v biases",
        "qkv_bias": "q/k/v biases",
        "mlp_bias": "MLP biases",
        "num_experts": "routed experts",
        "num_local_experts": "routed experts",
        "n_routed_experts": "routed experts",
        "moe_intermediate_size": "each routed expert's FFN size",
        "shared_expert_intermediate_size": "a shared expert",
        "n_shared_experts": "shared experts",
        "decoder_sparse_step": "which layers are MoE",
        "mlp_only_layers": "which layers are dense",
        "first_k_dense_replace": "dense first layers",
        "moe_layer_freq": "which layers are MoE",
        "interleave_moe_layer_step": "which layers are MoE",
        "q_lora_rank": "MLA's low-rank query projection",
        "kv_lora_rank": "MLA's low-rank key/value projection",
        "qk_rope_head_dim": "MLA's rotary head part",
        "qk_nope_head_dim": "MLA's non-rotary head part",
        "v_head_dim": "MLA's value head size",
        "use_qk_norm": "q/k norms",
        "num_nextn_predict_layers": "a multi-token-prediction layer",
    }
)
"""config.json keys that change the parameter layout, and what each adds: the one list.

A key a config sets (to a value other than its inactive one) and the chosen family does
not read is refused at config loading (``syncviz.spec``), so a model is never laid out
without the parameters that key brings.
"""

MLA_KEYS: tuple[str, ...] = (
    "q_lora_rank",
    "kv_lora_rank",
    "qk_rope_head_dim",
    "qk_nope_head_dim",
    "v_head_dim",
)
"""The config.json keys of multi-head latent attention (a family with ``mla`` reads all)."""

ROUTER_BIAS_WHEN: tuple[str, str] = ("topk_method", "noaux_tc")
"""(key, value): a router bias exists when the key has this value or is absent (DeepSeek-V3's
default); vLLM's ``e_score_correction_bias`` exists only then."""


@dataclass(frozen=True)
class MtpLayout:
    """The multi-token-prediction (MTP) layers a family's config may add after its last layer.

    An MTP layer ``k`` sits at index ``num_hidden_layers + k`` of the checkpoint (and of
    vLLM's draft model): one whole decoder layer (the family's own kinds, named as a
    layer's with ``block_src`` / ``block_dst`` rewriting the layer prefix) and the kinds
    ``src_names`` / ``dst_names`` / ``hf_names`` list (its two input norms, the projection
    of [embedding; hidden] and its head's norm and head). On the trainer ``{i}`` is ``k``;
    on vLLM and in the checkpoint it is the global index. The embedding is the model's own.

    >>> from syncviz.families import FAMILY
    >>> FAMILY["deepseek-v3"].mtp.dst_names["mtp_eh_proj"]
    'model.model.layers.{i}.eh_proj.weight'
    """

    block_src: tuple[str, str]
    block_dst: tuple[str, str]
    src_names: Mapping[str, str] = field(default_factory=dict, repr=False)
    dst_names: Mapping[str, str] = field(default_factory=dict, repr=False)
    hf_names: Mapping[str, tuple[str, ...]] = field(default_factory=dict, repr=False)
    notes: str = field(default="", compare=False)


@dataclass(frozen=True)
class Preset:
    """A model preset: its name, its sizes (``ModelSpec`` fields) and the config it cites;
    ``mtp_layers`` the config's multi-token-prediction layers (laid out only when asked)."""

    name: str
    sizes: Mapping[str, Any]
    source: str
    mtp_layers: int = 0


@dataclass(frozen=True)
class FamilyInfo:
    """One family: what it is called outside syncviz, how its config.json reads, its names.

    ``chatlearn`` / ``corrected`` name classes in ``syncviz.sync.megatron_vllm`` and
    ``syncviz.sync.corrected`` ("" where the original has none). ``hf_default`` marks
    the family a plain checkpoint of that architecture is read as. ``trainer`` is the
    Megatron the trainer names come from (legacy ``language_model.encoder`` or
    Megatron-Core ``decoder``).

    Reading config.json: ``qkv_bias`` is a constant or the key of a JSON flag
    (``qkv_bias_default`` when absent); ``qk_norm`` says the attention has per-head q/k
    norms (only when the JSON flag ``qk_norm_key`` is true, where one is named);
    ``experts_keys`` are the keys that may give the routed-expert count (first
    present wins; none: a dense family); ``moe_ffn_key`` the key of each expert's FFN
    size; ``shared_expert`` whether ``shared_expert_intermediate_size`` is read (with
    its gate); ``sparse_step`` whether ``decoder_sparse_step`` / ``mlp_only_layers`` are
    read; ``fused_ffn`` that ``intermediate_size`` holds both gate and up halves;
    ``head_dim_key`` the key of an explicit head size; ``mha_only`` that K/V heads
    always equal the query heads. ``mla`` that attention is multi-head latent
    attention (:data:`MLA_KEYS`; ``head_dim`` is then ``v_head_dim``);
    ``dense_first_key`` the key of the count of dense first layers of an MoE stack;
    ``shared_experts_key`` the key of a shared-expert count whose FFN is that many
    routed experts wide (no gate); ``router_bias`` that the router has a
    score-correction bias when :data:`ROUTER_BIAS_WHEN` holds; ``mtp_key`` the key of
    multi-token-prediction layers, noted and left out unless asked for (``mtp``: how
    they are laid out, :class:`MtpLayout`); ``also_model_types`` more
    ``model_type`` values read as this family. ``config_defaults`` are the values
    Hugging Face's config class gives keys a config.json leaves out, where they differ
    from the reader's own (the head size, tied embeddings). ``wrapper_architecture`` /
    ``wrapper_model_type`` name a multimodal wrapper whose config.json holds this
    family's text model under ``text_config`` (the text model alone is read).
    ``output_norms`` adds a norm on the attention output and one on the MLP output
    (kinds ``attn_out_norm`` and ``ffn_out_norm``, both ``[hidden]``, whole on every
    rank). :attr:`reads` follows from these.

    Names, per parameter kind (``{i}`` the layer, ``{j}`` a local expert, ``{e}`` an
    expert): ``src_names`` the trainer's (after :data:`TRAINER_PREFIX`; a tuple where
    the trainer keeps several tensors), ``dst_names`` vLLM's, ``hf_names`` the
    checkpoint tensors that make the global tensor (joined on dim 0, experts stacked).
    ``dense_src_names`` are the trainer names that differ in the dense layers of a
    mixed stack (Megatron-Core fuses the norm into a dense fc1, not into the experts);
    ``dtypes`` the kinds kept in another dtype than the weights (torch names);
    ``hf_extra`` keys a generated config.json adds that are not layout keys but that
    the engine needs to build the model.
    Trainer conventions (see ``syncviz.oracle.families.Conventions``): ``qkv_layout``,
    ``fc1_halves``, ``expert_fc1_halves``, ``experts``; ``notes`` give their sources.
    ``presets`` are the published models of the family; ``tiny`` the ``ModelSpec``
    fields of a small spec with every feature of the real ones.

    Attention-sink models (gpt-oss): ``o_proj_bias``, ``sinks`` (one per head) and
    ``expert_bias`` (each expert's fc1 and fc2 bias) add those kinds (its router bias is
    ``router_bias``, as for DeepSeek's score correction); ``dst_expert_fc1`` is how vLLM
    lays out each expert's gate/up rows (``"interleaved"``: g0, u0, g1, u1, ...);
    ``dst_kv_replicated`` False means vLLM refuses a tp that does not divide the K/V
    heads; ``hf_fused_experts`` that the checkpoint keeps a layer's experts as fused 3-D
    tensors (``gate_up_proj`` [E, H, 2I] with interleaved columns, ``down_proj``
    [E, I, H]).
    """

    name: str
    architecture: str
    model_type: str
    chatlearn: str
    corrected: str
    experts: ExpertLayout = "none"
    hf_default: bool = True
    trainer: Trainer = "mcore"
    qkv_bias: bool | str = False
    qkv_bias_default: bool = False
    qk_norm: bool = False
    qk_norm_key: str = ""
    experts_keys: tuple[str, ...] = ()
    moe_ffn_key: str = "moe_intermediate_size"
    shared_expert: bool = False
    sparse_step: bool = False
    fused_ffn: bool = False
    head_dim_key: str = "head_dim"
    mha_only: bool = False
    mla: bool = False
    dense_first_key: str = ""
    shared_experts_key: str = ""
    router_bias: bool = False
    mtp_key: str = ""
    mtp: MtpLayout | None = field(default=None, repr=False)
    also_model_types: tuple[str, ...] = ()
    config_defaults: Mapping[str, Any] = field(default_factory=dict, repr=False)
    wrapper_architecture: str = ""
    wrapper_model_type: str = ""
    output_norms: bool = False
    src_names: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict, repr=False)
    dst_names: Mapping[str, str] = field(default_factory=dict, repr=False)
    hf_names: Mapping[str, tuple[str, ...]] = field(default_factory=dict, repr=False)
    dense_src_names: Mapping[str, str] = field(default_factory=dict, repr=False)
    dtypes: Mapping[str, str] = field(default_factory=dict, repr=False)
    hf_extra: Mapping[str, Any] = field(default_factory=dict, repr=False)
    qkv_layout: QkvLayout = "grouped"
    fc1_halves: tuple[tuple[str, ...], ...] = (("gate", "up"),)
    expert_fc1_halves: tuple[str, ...] = ("gate", "up")
    o_proj_bias: bool = False
    sinks: bool = False
    expert_bias: bool = False
    dst_expert_fc1: ExpertFc1 = "halves"
    dst_kv_replicated: bool = True
    hf_fused_experts: bool = False
    notes: str = field(default="", compare=False)
    presets: tuple[Preset, ...] = field(default=(), repr=False)
    tiny: Mapping[str, Any] | None = field(default=None, repr=False)

    @property
    def is_moe(self) -> bool:
        return bool(self.experts_keys)

    @property
    def reads(self) -> frozenset[str]:
        """The layout keys (:data:`LAYOUT_KEYS`) this family's config reader reads."""
        keys = {self.head_dim_key}
        if isinstance(self.qkv_bias, str):
            keys.add(self.qkv_bias)
        keys.update(self.experts_keys)
        if self.is_moe and self.moe_ffn_key in LAYOUT_KEYS:
            keys.add(self.moe_ffn_key)
        if self.shared_expert:
            keys.add("shared_expert_intermediate_size")
        if self.sparse_step:
            keys.update(("decoder_sparse_step", "mlp_only_layers"))
        if self.mla:
            keys.update(MLA_KEYS)
        if self.qk_norm_key:
            keys.add(self.qk_norm_key)
        keys.update(k for k in (self.dense_first_key, self.shared_experts_key, self.mtp_key) if k)
        return frozenset(keys)

    @property
    def layout_signature(self) -> tuple[object, ...]:
        """What fixes the parameter set: two families with the same signature lay out alike."""
        return (
            self.qk_norm,
            self.is_moe,
            self.shared_expert,
            self.fused_ffn,
            self.mha_only,
            self.bias_kinds,
            self.dst_expert_fc1,
            self.mla,
            bool(self.shared_experts_key),
            self.qk_norm_key,
            self.output_norms,
        )

    @property
    def bias_kinds(self) -> tuple[str, ...]:
        """The attention-sink models' extra kinds this family has (``syncviz.oracle.biased``).

        >>> FamilyInfo("x", "X", "x", "", "", sinks=True, expert_bias=True).bias_kinds
        ('sinks', 'experts_w13_bias', 'experts_w2_bias')
        """
        flags = {
            "o_proj_bias": self.o_proj_bias,
            "sinks": self.sinks,
            "experts_w13_bias": self.expert_bias,
            "experts_w2_bias": self.expert_bias,
        }
        return tuple(kind for kind, on in flags.items() if on)

    def src_template(self, kind: str, tensor: int = 0) -> str:
        """The trainer's full name template of ``kind`` (tensor ``tensor`` of it)."""
        value = self.src_names[kind]
        return TRAINER_PREFIX[self.trainer] + (value if isinstance(value, str) else value[tensor])


def sizes(
    layers: int, hidden: int, heads: int, groups: int, ffn: int, vocab: int, **more: Any
) -> dict[str, Any]:
    """``ModelSpec`` fields in the order a config.json is read (the rest by keyword).

    >>> sizes(2, 16, 4, 2, 8, 64, head_dim=4)["num_query_groups"]
    2
    """
    return {
        "num_layers": layers,
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "num_query_groups": groups,
        "ffn_hidden_size": ffn,
        "vocab_size": vocab,
        **more,
    }
