"""The oracle: every parameter's source shards and destination tensors, from the spec alone.

>>> from syncviz import Parallel, preset
>>> layout = model_layout(preset("llama3-8b"), Parallel(tp=2), Parallel(tp=4), layers=[0])
>>> qkv = layout.param("model.model.layers.0.self_attn.qkv_proj.weight")
>>> qkv.global_shape, [t.shape for t in qkv.dst]
((6144, 4096), [(1536, 4096), (1536, 4096), (1536, 4096), (1536, 4096)])
>>> qkv.src[1].name
'module.module.decoder.layers.0.self_attention.linear_qkv.weight'
>>> qkv.describe(qkv.dst[0].index)
'rows 0-1023: Q heads 0-7; rows 1024-1279: K heads 0-1; rows 1280-1535: V heads 0-1'
>>> qkv.describe_dst(3)[:65]
'dst pp0 tp3 model.model.layers.0.self_attn.qkv_proj.weight [1536,'
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from syncviz.engines import engine
from syncviz.errors import SyncvizError
from syncviz.geometry import unravel
from syncviz.oracle.blocks import GLOBAL_KINDS, Block, blocks, decode, find_block, global_shape
from syncviz.oracle.describe import describe
from syncviz.oracle.dest import dest_maps
from syncviz.oracle.families import Conventions, conventions
from syncviz.oracle.sizes import check_sizes
from syncviz.oracle.source import RankTensor, source_tensors
from syncviz.parallel import Parallel
from syncviz.provenance import RegionMap
from syncviz.spec import ModelSpec


@dataclass(frozen=True, slots=True)
class SourceShard:
    """One tensor a trainer rank holds.

    ``name`` is the trainer's name, with the layer index local to pipeline
    stage ``pp`` (global layer = local + ``layer_offset``; in a multi-token-prediction
    layer ``k``, global ``num_layers + k``, and ``layer_offset`` is still the stage's).
    ``ep`` is None when every expert-parallel rank holds the same tensor (all dense parameters);
    replication over TP (norms, router) is listed rank by rank.
    """

    pp: int
    tp: int
    ep: int | None
    name: str
    shape: tuple[int, ...]
    index: RegionMap
    layer_offset: int = 0
    local_expert: int | None = None

    @property
    def rank_label(self) -> str:
        """``pp0 tp1`` or ``pp0 tp1 ep2``."""
        ep = "" if self.ep is None else f" ep{self.ep}"
        return f"pp{self.pp} tp{self.tp}{ep}"


@dataclass(frozen=True, slots=True)
class DestTensor:
    """The tensor a destination rank must hold; ``name`` uses the global layer index."""

    pp: int
    tp: int
    name: str
    shape: tuple[int, ...]
    index: RegionMap
    layer_offset: int = 0

    @property
    def rank_label(self) -> str:
        return f"pp{self.pp} tp{self.tp}"


@dataclass(frozen=True)
class ParamLayout:
    """One vLLM parameter: its global tensor, blocks, source shards and destination tensors.

    ``key`` is the vLLM name; ``layer`` the global layer index (None outside the layers).
    """

    key: str
    layer: int | None
    kind: str
    global_shape: tuple[int, ...]
    blocks: tuple[Block, ...]
    src: tuple[SourceShard, ...]
    dst: tuple[DestTensor, ...]

    def decode(self, element_id: int) -> str:
        """One global id in words (block, row, col)."""
        return decode(self.blocks, element_id)

    def block_of(self, element_id: int) -> Block | None:
        """The block holding a global id (None for padding, id -1)."""
        if element_id == -1:
            return None
        return find_block(self.blocks, unravel(element_id, self.global_shape, check=True))

    def describe(self, ids: RegionMap | torch.Tensor) -> str:
        """A map, or any tensor, of this parameter's ids in words."""
        return describe(self, ids)

    def describe_src(self, i: int) -> str:
        """Source shard ``i`` in words: rank, trainer name, shape, and what it holds."""
        shard = self.src[i]
        return (
            f"src {shard.rank_label} {shard.name} {list(shard.shape)}: {self.describe(shard.index)}"
        )

    def describe_dst(self, i: int) -> str:
        """Destination tensor ``i`` in words."""
        t = self.dst[i]
        return f"dst {t.rank_label} {t.name} {list(t.shape)}: {self.describe(t.index)}"

    def src_for(self, tp: int, ep: int | None = None) -> list[SourceShard]:
        """The shards trainer rank (tp, ep) holds (ep=None shards are held by every ep rank)."""
        return [s for s in self.src if s.tp == tp and (s.ep is None or ep is None or s.ep == ep)]


class ModelLayout:
    """Every parameter's layout for one model and one pair of parallel sizes.

    ``params`` is in model order (embedding, layers, final norm, lm_head);
    :meth:`param` looks one up by its vLLM name.
    """

    def __init__(
        self,
        spec: ModelSpec,
        src: Parallel,
        dst: Parallel,
        conv: Conventions,
        params: Iterable[ParamLayout],
        layers: tuple[int, ...],
    ) -> None:
        self.spec = spec
        self.src = src
        self.dst = dst
        self.conventions = conv
        self.layers = layers
        self.params: tuple[ParamLayout, ...] = tuple(params)
        self._by_key = {p.key: p for p in self.params}

    def param(self, key: str) -> ParamLayout:
        """The parameter called ``key`` (a vLLM name)."""
        try:
            return self._by_key[key]
        except KeyError:
            raise SyncvizError(
                f"no parameter {key!r} in this layout",
                fix="use one of the names in ModelLayout.keys()",
            ) from None

    def keys(self) -> list[str]:
        return list(self._by_key)

    def layer_params(self, layer: int) -> list[ParamLayout]:
        """The parameters of global layer ``layer``."""
        return [p for p in self.params if p.layer == layer]

    def src_stage(self, layer: int) -> int:
        """Trainer pipeline stage holding ``layer`` (an MTP layer: the last)."""
        return min(layer // (self.spec.num_layers // self.src.pp), self.src.pp - 1)

    def dst_stage(self, layer: int) -> int:
        """vLLM pipeline stage holding ``layer`` (an MTP layer: the last)."""
        return min(layer // (self.spec.num_layers // self.dst.pp), self.dst.pp - 1)

    def __iter__(self) -> Iterator[ParamLayout]:
        return iter(self.params)

    def __len__(self) -> int:
        return len(self.params)

    def __repr__(self) -> str:
        return (
            f"ModelLayout({self.spec.name}, src={self.src}, dst={self.dst},"
            f" {len(self.params)} params)"
        )


def layer_kinds(spec: ModelSpec, layer: int | None = None) -> list[str]:
    """The parameter kinds of layer ``layer`` of ``spec``, in order (``None``: a layer past
    any dense first layers).

    >>> spec = ModelSpec("m", "mixtral", 2, 16, 4, 2, 8, 64, num_experts=4,
    ...                  moe_ffn_hidden_size=8, first_k_dense_replace=1)
    >>> layer_kinds(spec, 0)[-2:], layer_kinds(spec, 1)[-2:]
    (['gate_up', 'down'], ['experts_w13', 'experts_w2'])
    """
    kinds = ["input_norm", *_attention_kinds(spec)]
    if spec.qkv_bias:
        kinds.append("qkv_bias")
    if spec.qk_norm:
        kinds += ["q_norm", "k_norm"]
    kinds += ["o_proj", *(["attn_out_norm"] if spec.output_norms else []), "post_attention_norm"]
    if spec.is_moe and (layer is None or spec.is_moe_layer(layer)):
        kinds += ["router", *(["router_bias"] if spec.router_bias else []), "experts_w13"]
        kinds += ["experts_w2"]
        if spec.shared_expert_ffn_hidden_size:
            kinds += ["shared_gate_up", "shared_down"]
        if spec.shared_expert_gate:
            kinds.append("shared_expert_gate")
    else:
        kinds += ["gate_up", "down"]
    if spec.output_norms:
        kinds.append("ffn_out_norm")
    if layer is not None and spec.is_mtp_layer(layer):  # [embedding; hidden] in, a head out
        kinds = ["mtp_enorm", "mtp_hnorm", "mtp_eh_proj", *kinds, "mtp_norm", "mtp_head"]
    return _with_bias_kinds(kinds, spec.bias_kinds)


def _with_bias_kinds(kinds: list[str], extra: tuple[str, ...]) -> list[str]:
    """``kinds`` with the attention-sink models' kinds (``spec.bias_kinds``) each after the
    kind it belongs to (o_proj bias and sinks after o_proj, each expert bias after its
    weight).

    >>> _with_bias_kinds(["o_proj", "router", "experts_w13"], ("experts_w13_bias", "sinks"))
    ['o_proj', 'sinks', 'router', 'experts_w13', 'experts_w13_bias']
    """
    after = {"o_proj": ("o_proj_bias", "sinks"), "experts_w13": ("experts_w13_bias",),
             "experts_w2": ("experts_w2_bias",)}  # fmt: skip
    out: list[str] = []
    for kind in kinds:
        out.append(kind)
        out += [k for k in after.get(kind, ()) if k in extra]
    return out


def _attention_kinds(spec: ModelSpec) -> list[str]:
    """Fused QKV, or MLA's projections (with or without the low-rank query)."""
    if not spec.is_mla:
        return ["qkv"]
    query = ["fused_qkv_a", "q_a_norm", "q_b_proj"] if spec.q_lora_rank else ["q_proj", "kv_a"]
    return [*query, "kv_a_norm", "kv_b_proj"]


def _layer_number(layer: object) -> int:
    """``layer`` as a layer number; True, 1.0 or "1" in ``layers`` is refused, naming it."""
    try:
        if isinstance(layer, bool):
            raise TypeError
        return operator.index(layer)  # type: ignore[arg-type]
    except TypeError:
        raise SyncvizError(
            f"layers holds {layer!r}, which is not a layer number",
            fix="pass whole layer numbers, e.g. layers=[0, 1]",
        ) from None


def model_layout(
    spec: ModelSpec,
    src: Parallel,
    dst: Parallel,
    layers: Iterable[int] | None = None,
    *,
    conv: Conventions | None = None,
    include_globals: bool | None = None,
) -> ModelLayout:
    """Build the oracle's layout (metadata only; ids are materialized on request).

    ``layers`` limits the per-layer parameters to those global layers; the
    embedding, final norm and lm_head are included when ``include_globals``
    is true (default: only when ``layers`` is None). ``conv`` overrides the
    family's conventions (see families.py). A spec with ``mtp_layers`` has them after its
    last layer (global ``num_layers`` on, on the last pipeline stage of each side).
    """
    conv = conv or conventions(spec.family)
    check_sizes(spec, src, dst, conv)
    count = spec.all_layers
    if layers is None:
        wanted = tuple(range(count))
        with_globals = True if include_globals is None else include_globals
    else:
        wanted = tuple(_layer_number(layer) for layer in layers)
        with_globals = bool(include_globals)
        for layer in wanted:
            if not 0 <= layer < count:
                raise SyncvizError(
                    f"layer ({layer}) is outside the model's {count} layers",
                    fix=f"use a layer from 0 to {count - 1}",
                )
    info = engine(dst.engine)
    if info.mtp_max_layers and spec.mtp_layers > info.mtp_max_layers:
        raise SyncvizError(
            f"mtp_layers ({spec.mtp_layers}) is more than {info.display} loads"
            f" ({info.mtp_max_layers})",
            fix="use vllm as the engine, or a model with one multi-token-prediction layer",
        )
    # An engine whose MTP draft uses the target's lm_head holds no head of its own.
    skipped = () if info.mtp_own_head else ("mtp_head",)
    builder = _Builder(spec, src, dst, conv)
    params: list[ParamLayout] = []
    if with_globals:
        params.append(builder.param("embed", None))
    for layer in wanted:
        kinds = [k for k in layer_kinds(spec, layer) if k not in skipped]
        params.extend(builder.param(kind, layer) for kind in kinds)
    if with_globals:
        params.append(builder.param("final_norm", None))
        if not spec.tie_word_embeddings:
            params.append(builder.param("lm_head", None))
    return ModelLayout(spec, src, dst, conv, params, wanted)


class _Builder:
    """Builds params, computing each kind's index maps once and stamping names per layer."""

    def __init__(self, spec: ModelSpec, src: Parallel, dst: Parallel, conv: Conventions) -> None:
        self.spec, self.src_par, self.dst_par, self.conv = spec, src, dst, conv
        self._src: dict[str, list[RankTensor]] = {}
        self._dst: dict[str, list[RegionMap]] = {}
        self._blocks: dict[str, tuple[Block, ...]] = {}
        self.src_per_stage = spec.num_layers // src.pp
        self.dst_per_stage = spec.num_layers // dst.pp

    def param(self, kind: str, layer: int | None) -> ParamLayout:
        if kind not in self._src:
            self._src[kind] = source_tensors(kind, self.spec, self.conv, self.src_par)
            self._dst[kind] = dest_maps(kind, self.spec, self.dst_par.tp, self.dst_par)
            self._blocks[kind] = blocks(kind, self.spec)
        src_stage, dst_stage = self._stages(kind, layer)
        src_offset, dst_offset = src_stage * self.src_per_stage, dst_stage * self.dst_per_stage
        mtp = layer is not None and self.spec.is_mtp_layer(layer)
        # The trainer numbers its MTP layers from 0 (mtp.layers.k); the stage's offset stays.
        first = self.spec.num_layers if mtp else src_offset
        src_fields = {} if layer is None else {"i": layer - first}
        dst_fields = {} if layer is None else {"i": layer}
        # The family writes vLLM's names; the engine record respells them (syncviz.engines).
        key = engine(self.dst_par.engine).dst_name(self.conv.dst_name(kind, mtp=mtp, **dst_fields))
        shards = tuple(
            SourceShard(
                pp=src_stage,
                tp=t.tp,
                ep=t.ep,
                name=self.conv.src_name(
                    kind,
                    t.tensor,
                    dense=layer is not None and not self.spec.is_moe_layer(layer),
                    mtp=mtp,
                    **src_fields,
                    **({} if t.local_expert is None else {"j": t.local_expert}),
                ),
                shape=t.index.shape,
                index=t.index,
                layer_offset=src_offset if layer is not None else 0,
                local_expert=t.local_expert,
            )
            for t in self._src[kind]
        )
        dests = tuple(
            DestTensor(dst_stage, r, key, m.shape, m, dst_offset if layer is not None else 0)
            for r, m in enumerate(self._dst[kind])
        )
        return ParamLayout(
            key, layer, kind, global_shape(kind, self.spec), self._blocks[kind], shards, dests
        )

    def _stages(self, kind: str, layer: int | None) -> tuple[int, int]:
        if layer is not None and self.spec.is_mtp_layer(layer):
            return self.src_par.pp - 1, self.dst_par.pp - 1
        if layer is not None:
            return layer // self.src_per_stage, layer // self.dst_per_stage
        if kind == "embed":
            return 0, 0
        assert kind in GLOBAL_KINDS
        return self.src_par.pp - 1, self.dst_par.pp - 1
