"""The sync plan: who holds what, who sends to whom, decided before anything moves.

A :class:`SyncPlan` is plain data built on the driver from the oracle and the
rank mapping; the per-rank flow (:mod:`syncviz.run.flow`) only executes it, on
simulated ranks or on Ray actors alike.

>>> from syncviz import Parallel, preset
>>> plan = build_plan(preset("llama3-8b").scaled(), Parallel(tp=2), Parallel(tp=4), layers=[0])
>>> plan.stage1, plan.stage2
(((0, 2), (1, 4)), ((2, 3), (4, 5)))
>>> plan.roles[4]
RankRole(world=4, side='dst', pp=0, tp=2, ep=0)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Literal

from syncviz.errors import SyncvizError
from syncviz.oracle import ModelLayout, conventions, model_layout
from syncviz.parallel import Parallel, validate
from syncviz.spec import ModelSpec
from syncviz.sync.rank_plan import RankLayout, plan_rank_mapping

Side = Literal["src", "dst"]


@dataclass(frozen=True)
class RankRole:
    """One rank of the parameter-sync world: trainer (``src``) or inference (``dst``)."""

    world: int
    side: Side
    pp: int
    tp: int
    ep: int = 0


@dataclass(frozen=True)
class SyncPlan:
    """Everything the flow needs, decided up front.

    ``src_params[world]``: trainer names the rank holds, in model order.
    ``dst_shapes[world]``: vLLM name -> shape of every tensor the rank must hold.
    ``stage1`` / ``stage2``: the rank mapping's pairs, in the order they run.
    ``expert_groups``: trainer ranks that exchange routed experts together.
    ``id_base[key]``: the first model-wide id of parameter ``key`` (ids mode).
    """

    spec: ModelSpec
    src: Parallel
    dst: Parallel
    layout: ModelLayout = field(repr=False)
    roles: tuple[RankRole, ...]
    src_params: dict[int, tuple[str, ...]]
    src_layer_offset: dict[int, int]
    dst_shapes: dict[int, dict[str, tuple[int, ...]]]
    stage1: tuple[tuple[int, int], ...]
    stage2: tuple[tuple[int, int], ...]
    expert_groups: tuple[tuple[int, ...], ...]
    expert_comm: Literal["allgather", "alltoall"] = "allgather"
    bucket_size_mb: float = 64.0
    values: Literal["ids", "random"] = "ids"
    seed: int = 0
    comm: Literal["broadcast", "p2p"] = "broadcast"
    id_base: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def world_size(self) -> int:
        return len(self.roles)

    @property
    def tp_num_mapping(self) -> int:
        """Destination ranks per source rank (``dst tp // src tp``)."""
        return self.dst.tp // self.src.tp

    @property
    def senders(self) -> tuple[int, ...]:
        return tuple(sorted({s for s, _ in self.stage1}))

    def dst_slot(self, world: int) -> int:
        """Which chunk of a regrouped buffer destination rank ``world`` keeps."""
        return self.roles[world].tp % self.tp_num_mapping

    def groups(self) -> dict[str, tuple[int, ...]]:
        """Every communication group the flow uses, by name."""
        named = {pair_group("stage1", s, d): (s, d) for s, d in self.stage1}
        named.update({pair_group("stage2", a, b): (a, b) for a, b in self.stage2})
        named.update({expert_group(ranks): ranks for ranks in self.expert_groups})
        return named


def _one_of(field: str, value: object, options: tuple[str, ...]) -> None:
    if value not in options:
        raise SyncvizError(
            f"{field} ({value!r}) is not one of the choices",
            fix="use " + " or ".join(repr(o) for o in options),
        )


def holds(role: RankRole, shard) -> bool:
    """Whether trainer rank ``role`` holds oracle source ``shard`` (ep None: every ep rank)."""
    return (role.pp, role.tp) == (shard.pp, shard.tp) and shard.ep in (None, role.ep)


def pair_group(stage: str, a: int, b: int) -> str:
    """Name of the two-member broadcast group of one rank pair."""
    return f"{stage}:{a}>{b}"


def expert_group(ranks: Iterable[int]) -> str:
    """Name of the routed-expert exchange group of these trainer ranks."""
    return "experts:" + ",".join(str(r) for r in ranks)


def build_plan(
    spec: ModelSpec,
    src: Parallel,
    dst: Parallel,
    *,
    layers: Iterable[int] | None = None,
    expert_comm: Literal["allgather", "alltoall"] = "allgather",
    bucket_size_mb: float = 64.0,
    values: Literal["ids", "random"] = "ids",
    seed: int = 0,
    src_vocab_divisible_by: int | None = None,
    comm: Literal["broadcast", "p2p"] = "broadcast",
) -> SyncPlan:
    """Plan a sync of ``spec`` from a Megatron trainer under ``src`` to vLLM under ``dst``.

    One inference replica; the trainer's data-parallel size is raised to its
    expert-parallel size, as Megatron requires. ``values`` says what the trainer
    shards hold: ``"ids"`` (float64 provenance ids, the default) or ``"random"``
    (float32 weights drawn from ``seed``, compared bit for bit).
    ``comm`` moves each pair's buckets by ``"broadcast"`` (the original's default)
    or ``"p2p"`` send/recv; ``bucket_size_mb`` caps a bucket, as the original's
    ``coalesced_buffer_mb`` does.
    ``src_vocab_divisible_by`` is the trainer's ``--make-vocab-size-divisible-by``
    (default: it pads like vLLM, see :class:`~syncviz.oracle.Conventions`).

    >>> from syncviz import Parallel, preset
    >>> build_plan(preset("qwen2-7b"), Parallel(tp=4), Parallel(tp=2))
    Traceback (most recent call last):
    ...
    syncviz.errors.SyncvizError: dst tp (2) must be a multiple of src tp (4): use 4
    """
    validate(spec, src, dst)
    if dst.pp != 1:
        raise SyncvizError(
            f"dst pp ({dst.pp}) is not supported by the sync executors",
            fix="use dst pp 1 (the oracle and `syncviz layout` do support it)",
        )
    _one_of("comm", comm, ("broadcast", "p2p"))
    _one_of("values", values, ("ids", "random"))
    _one_of("expert_comm", expert_comm, ("allgather", "alltoall"))
    if bucket_size_mb <= 0:
        raise SyncvizError(
            f"bucket_size_mb ({bucket_size_mb}) must be positive", fix="use e.g. 64 (megabytes)"
        )
    src = replace(src, dp=max(src.dp, src.ep))
    conv = replace(conventions(spec.family), src_vocab_divisible_by=src_vocab_divisible_by)
    layout = model_layout(spec, src, dst, layers=layers, conv=conv)
    mapping = plan_rank_mapping(RankLayout.megatron_to_vllm(src, dst, replicas=1))

    roles: list[RankRole] = []
    for world in range(src.world_size):
        tp, dp, pp = world % src.tp, (world // src.tp) % src.dp, world // (src.tp * src.dp)
        roles.append(RankRole(world, "src", pp, tp, dp % src.ep))
    for local in range(dst.tp * dst.pp):
        roles.append(RankRole(len(roles), "dst", local // dst.tp, local % dst.tp))

    src_params: dict[int, list[str]] = {r.world: [] for r in roles if r.side == "src"}
    src_offset: dict[int, int] = {r.world: 0 for r in roles if r.side == "src"}
    dst_shapes: dict[int, dict[str, tuple[int, ...]]] = {
        r.world: {} for r in roles if r.side == "dst"
    }
    for param in layout:
        for shard in param.src:
            for role in roles[: src.world_size]:
                if holds(role, shard):
                    if shard.name not in src_params[role.world]:
                        src_params[role.world].append(shard.name)
                    if param.layer is not None:  # the embedding and lm_head carry no offset
                        src_offset[role.world] = shard.layer_offset
        for tensor in param.dst:
            role = next(
                r for r in roles[src.world_size :] if (r.pp, r.tp) == (tensor.pp, tensor.tp)
            )
            dst_shapes[role.world][tensor.name] = tensor.shape

    expert_groups = _expert_groups(roles[: src.world_size], src) if spec.is_moe else ()

    return SyncPlan(
        spec=spec,
        src=src,
        dst=dst,
        layout=layout,
        roles=tuple(roles),
        src_params={w: tuple(n) for w, n in src_params.items()},
        src_layer_offset=src_offset,
        dst_shapes=dst_shapes,
        stage1=tuple(mapping.stage1),
        stage2=tuple(mapping.stage2),
        expert_groups=expert_groups,
        expert_comm=expert_comm,
        bucket_size_mb=bucket_size_mb,
        values=values,
        seed=seed,
        comm=comm,
        id_base=_id_bases(layout),
    )


def _expert_groups(src_roles: list[RankRole], src: Parallel) -> tuple[tuple[int, ...], ...]:
    """Per pipeline stage, the tp*ep trainer ranks that exchange routed experts.

    Ordered by HEP rank ``ep * tp_size + tp``; only the first ``ep`` data-parallel
    replicas take part (they hold the experts between them).
    """
    groups: dict[int, list[tuple[int, int, int]]] = {}
    for role in src_roles:
        dp = (role.world // src.tp) % src.dp
        if dp < src.ep:
            groups.setdefault(role.pp, []).append((role.ep, role.tp, role.world))
    return tuple(tuple(w for _, _, w in sorted(g)) for _, g in sorted(groups.items()))


def _id_bases(layout: ModelLayout) -> dict[str, int]:
    """Where each parameter's ids start, so ids are unique across the whole model.

    A destination element then names its parameter too, and a value that
    landed in the wrong parameter is caught (float64 is exact up to 2**53).
    """
    bases, next_id = {}, 0
    for param in layout:
        bases[param.key] = next_id
        next_id += math.prod(param.global_shape)
    return bases
