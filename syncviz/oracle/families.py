"""Source (trainer) and destination (vLLM) conventions of each model family, as data.

The oracle logic never names a family: everything that differs between
families (parameter names, the fused QKV row order, the order of the gate/up
halves, how routed experts are stored) is read from a :class:`Conventions`
record, built from the family's file in ``syncviz/families/``. Facts behind each
choice are in the record's ``notes``.

Name templates: ``{i}`` is the layer index (stage-local for the trainer, as
Megatron numbers layers inside a pipeline stage; global for vLLM), ``{j}`` a
local expert index (Megatron-Core SequentialMLP or TEGroupedMLP).

>>> conv = conventions("qwen2")
>>> conv.fc1_halves
(('up', 'gate'),)
>>> conv.dst_names["qkv"]
'model.model.layers.{i}.self_attn.qkv_proj.weight'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from syncviz.errors import SyncvizError
from syncviz.families import FAMILY_NAMES, ExpertLayout, FamilyInfo
from syncviz.families.record import TRAINER_PREFIX, ExpertFc1, QkvLayout
from syncviz.families.registry import derived


@dataclass(frozen=True)
class Conventions:
    """How one family's trainer holds its parameters and how vLLM names them.

    - ``src_names[kind]``: trainer name templates, one per tensor the trainer
      keeps for that kind on a rank (QWen v1 keeps two for gate/up).
    - ``dst_names[kind]``: the vLLM parameter name template.
    - ``qkv_layout``: ``"grouped"`` is Megatron's per-group row order
      ``[q heads of group g, k_g, v_g]`` for g in groups (for plain multi-head
      attention this is the per-head ``[q_h, k_h, v_h]`` interleave);
      ``"separate"`` is ``[Q; K; V]`` of the rank's own heads.
    - ``fc1_halves``: for each trainer tensor of a fused gate/up (dense and
      shared expert), which TP-sharded halves it holds, in order.
    - ``expert_layout``: ``"hep"`` whole experts spread over ep*tp ranks
      (fc1 ``[E_local*2I, H]``, fc2 ``[E_local*I, H]`` = w2 transposed),
      ``"sequential"`` Megatron-Core per-expert tensors, experts split by ep and
      each expert TP-sharded like a dense MLP; ``expert_fc1_halves`` is the
      order of the two halves inside one expert's fc1.
    - ``expert_bias``: each local expert has fc1 and fc2 biases; ``dst_expert_fc1``:
      ``"halves"`` (vLLM w13 ``[gate; up]``) or ``"interleaved"`` (``g0, u0, g1, ...``).
    - ``dense_src_names``: trainer names in the dense layers of a mixed stack, where they
      differ; ``dtypes``: kinds kept in another dtype than the weights (the router bias).
    - ``mtp_src_names`` / ``mtp_dst_names``: the same tables for a multi-token-prediction
      layer (the family's layer kinds under the MTP block's prefix, and the MTP layer's own
      kinds); empty for a family without one.
    - ``src_vocab_divisible_by``: Megatron pads the vocab to a multiple of this
      times the source TP size (``--make-vocab-size-divisible-by``). ``None``
      (the default) means the trainer pads like vLLM, to a multiple of 64 (i.e.
      ``64 / s``): the only setting under which embedding rows line up across
      s and d, so a sync of the embedding can work at all. Set it to 128
      (Megatron's own default) to see what an unaligned trainer does.
    """

    family: str
    src_names: Mapping[str, tuple[str, ...]]
    dst_names: Mapping[str, str]
    qkv_layout: QkvLayout = "grouped"
    fc1_halves: tuple[tuple[str, ...], ...] = (("gate", "up"),)
    expert_layout: ExpertLayout = "none"
    expert_fc1_halves: tuple[str, ...] = ("gate", "up")
    src_vocab_divisible_by: int | None = None
    expert_bias: bool = False
    dst_expert_fc1: ExpertFc1 = "halves"
    notes: str = field(default="", compare=False)
    dense_src_names: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    dtypes: Mapping[str, str] = field(default_factory=dict)
    mtp_src_names: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    mtp_dst_names: Mapping[str, str] = field(default_factory=dict)

    def src_name(
        self, kind: str, tensor: int = 0, dense: bool = False, mtp: bool = False, **fields: int
    ) -> str:
        """The trainer name of tensor ``tensor`` of ``kind`` (``dense``: in a dense layer of
        a mixed stack, where ``dense_src_names`` may name it otherwise; ``mtp``: in a
        multi-token-prediction layer, ``{i}`` its number among them)."""
        try:
            if mtp:
                return self.mtp_src_names[kind][tensor].format(**fields)
            if dense and kind in self.dense_src_names:
                return self.dense_src_names[kind][tensor].format(**fields)
            return self.src_names[kind][tensor].format(**fields)
        except KeyError:
            raise SyncvizError(
                f"family {self.family!r} has no trainer name for {kind!r}",
                fix="add it to the family's file in syncviz/families/",
            ) from None

    def dst_name(self, kind: str, mtp: bool = False, **fields: int) -> str:
        """The vLLM name of ``kind`` (``mtp``: in a multi-token-prediction layer)."""
        try:
            return (self.mtp_dst_names if mtp else self.dst_names)[kind].format(**fields)
        except KeyError:
            raise SyncvizError(
                f"family {self.family!r} has no vLLM name for {kind!r}",
                fix="add it to the family's file in syncviz/families/",
            ) from None


def _conventions_of(info: FamilyInfo) -> Conventions:
    """The layout conventions a family file declares."""
    src_names = {
        kind: tuple(info.src_template(kind, t) for t in range(_count(value)))
        for kind, value in info.src_names.items()
    }
    return Conventions(
        family=info.name,
        src_names=MappingProxyType(src_names),
        dst_names=MappingProxyType(dict(info.dst_names)),
        qkv_layout=info.qkv_layout,
        fc1_halves=info.fc1_halves,
        expert_layout=info.experts,
        expert_fc1_halves=info.expert_fc1_halves,
        expert_bias=info.expert_bias,
        dst_expert_fc1=info.dst_expert_fc1,
        notes=info.notes,
        dense_src_names=MappingProxyType(
            {
                kind: (TRAINER_PREFIX[info.trainer] + name,)
                for kind, name in info.dense_src_names.items()
            }
        ),
        dtypes=MappingProxyType(dict(info.dtypes)),
        **_mtp_names(info, src_names),
    )


def _mtp_names(info: FamilyInfo, src_names: Mapping[str, tuple[str, ...]]) -> dict:
    """The name tables of a multi-token-prediction layer, from the family's own layer names
    (their layer prefix swapped for the MTP block's) and the MTP layer's own kinds.

    >>> conv = conventions("deepseek-v3")
    >>> conv.mtp_src_names["q_b_proj"][0]
    'module.module.mtp.layers.{i}.transformer_layer.self_attention.linear_q_up_proj.weight'
    >>> conv.mtp_dst_names["router"], conv.mtp_src_names["mtp_head"]
    ('model.model.layers.{i}.mtp_block.mlp.gate.weight', ('module.module.output_layer.weight',))
    """
    mtp = info.mtp
    if mtp is None:
        return {}
    prefix = TRAINER_PREFIX[info.trainer]
    src_old, src_new = (prefix + p for p in mtp.block_src)
    dst_old, dst_new = mtp.block_dst
    src = {
        kind: tuple(t.replace(src_old, src_new) for t in templates)
        for kind, templates in src_names.items()
        if templates[0].startswith(src_old)
    }
    dst = {
        kind: t.replace(dst_old, dst_new)
        for kind, t in info.dst_names.items()
        if t.startswith(dst_old)
    }
    src.update({kind: (prefix + t,) for kind, t in mtp.src_names.items()})
    dst.update(mtp.dst_names)
    return {
        "mtp_src_names": MappingProxyType(src),
        "mtp_dst_names": MappingProxyType(dst),
    }


def _count(value: str | tuple[str, ...]) -> int:
    return 1 if isinstance(value, str) else len(value)


FAMILY_CONVENTIONS: Mapping[str, Conventions] = derived(
    lambda infos: {info.name: _conventions_of(info) for info in infos}
)
"""Family name -> its conventions, read from the family records (``syncviz.families``)."""


def conventions(family: str) -> Conventions:
    """The conventions of ``family``."""
    try:
        return FAMILY_CONVENTIONS[family]
    except KeyError:
        raise SyncvizError(
            f"family {family!r} has no layout conventions",
            fix="use one of " + ", ".join(FAMILY_NAMES),
        ) from None
