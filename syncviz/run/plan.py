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
>>> plan.world_rank("dst", tp=2), plan.sender_of(5), plan.rank_name(4)
(4, ('stage2', 4), 'vLLM tp 2 (rank 4)')
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from typing import Any, Generic, Literal, TypeVar

from syncviz.engines import engine
from syncviz.errors import SyncvizError
from syncviz.findings import Role
from syncviz.oracle import ModelLayout, conventions, model_layout
from syncviz.parallel import Parallel, validate
from syncviz.run.options import Comm, ExpertComm, SyncOptions, Values
from syncviz.spec import ModelSpec
from syncviz.sync.local_actors import megatron_coordinates
from syncviz.sync.rank_plan import RankLayout, plan_rank_mapping

__all__ = [
    "RankRole",
    "SyncOptions",
    "SyncPlan",
    "build_plan",
    "expert_group",
    "held_shards",
    "holds",
    "pair_group",
]

Side = Literal["src", "dst"]
V = TypeVar("V")


@dataclass(frozen=True)
class RankRole:
    """One rank of the parameter-sync world: trainer (``src``) or inference (``dst``)."""

    world: int
    side: Side
    pp: int
    tp: int
    ep: int = 0


class _Option(Generic[V]):
    """A :class:`SyncPlan` attribute that reads the plan's option of the same name.

    >>> from syncviz import Parallel, preset
    >>> plan = build_plan(preset("llama3-8b").scaled(), Parallel(1), Parallel(2), layers=[0])
    >>> plan.comm, plan.options.comm, plan.seed == plan.options.seed
    ('broadcast', 'broadcast', True)
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, plan: SyncPlan | None, owner: type | None = None) -> V:
        if plan is None:  # read on the class (help(), inspect): the attribute itself
            return self  # type: ignore[return-value]
        return getattr(plan.options, self.name)


@dataclass(frozen=True)
class SyncPlan:
    """Everything the flow needs, decided up front, and the answers to rank questions.

    ``roles[world]``: who rank ``world`` is (side, pp, tp, ep).
    ``src_params[world]``: trainer names the rank holds, in model order.
    ``dst_shapes[world]``: vLLM name -> shape of every tensor the rank must hold.
    ``stage1`` / ``stage2``: the rank mapping's pairs, in the order they run.
    ``expert_groups``: trainer ranks that exchange routed experts together.
    ``options``: how the sync runs (:class:`SyncOptions`), kept for the result.
    ``id_base[key]``: the first model-wide id of parameter ``key`` (ids mode).

    The lookups (:meth:`world_rank`, :meth:`receivers`, :meth:`sender_of`,
    :meth:`expert_group_of`, :meth:`rank_name`) answer from tables built once.
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
    options: SyncOptions = field(default_factory=SyncOptions)
    id_base: dict[str, int] = field(default_factory=dict, repr=False)
    _index: _RankIndex = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", _RankIndex.of(self))

    # the options, as the flow reads them: plan.comm is plan.options.comm
    expert_comm = _Option[ExpertComm]()
    bucket_size_mb = _Option[float]()
    values = _Option[Values]()
    seed = _Option[int]()
    comm = _Option[Comm]()

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

    # ------------------------------------------------------------ rank questions

    def world_rank(self, side: Side, pp: int = 0, tp: int = 0, ep: int = 0) -> int:
        """The world rank of (side, pp, tp, ep); on the trainer, the first data-parallel
        replica holding it.

        >>> from syncviz import Parallel, preset
        >>> plan = build_plan(preset("mixtral-8x7b").scaled(), Parallel(2, ep=2), Parallel(2))
        >>> plan.world_rank("src", tp=1, ep=1), plan.world_rank("dst", tp=1)
        (3, 5)
        """
        try:
            return self._index.world[(side, pp, tp, ep if side == "src" else 0)]
        except KeyError:
            sizes = self.src if side == "src" else self.dst
            raise SyncvizError(
                f"no {side} rank has pp {pp}, tp {tp}, ep {ep}",
                fix=f"the {side} sizes are {_sizes(sizes)}",
            ) from None

    def receivers(self, world: int, stage: str = "stage1") -> tuple[int, ...]:
        """The ranks ``world`` sends to in ``stage`` ("stage1" or "stage2"), in order."""
        return self._index.receivers.get((stage, world), ())

    def sender_of(self, world: int) -> tuple[str, int] | None:
        """(stage, rank) that sends destination rank ``world`` its data; None if none does."""
        return self._index.sender.get(world)

    def expert_group_of(self, world: int) -> tuple[int, ...] | None:
        """The routed-expert exchange group trainer rank ``world`` belongs to, if any."""
        return self._index.experts.get(world)

    def rank_name(self, world: int) -> str:
        """Rank ``world`` named by its role, the global number second.

        >>> from syncviz import Parallel, preset
        >>> plan = build_plan(preset("qwen2-7b").scaled(), Parallel(2, pp=2), Parallel(4))
        >>> plan.rank_name(3), plan.rank_name(5)
        ('trainer pp 1 tp 1 (rank 3)', 'vLLM tp 1 (rank 5)')
        """
        return f"{self.role(world)} (rank {world})"

    def role(self, world: int) -> Role:
        """Rank ``world``'s role as data: pp said where its side has several stages, ep
        where the trainer has expert parallel.

        >>> from syncviz import Parallel, preset
        >>> plan = build_plan(preset("qwen2-7b").scaled(), Parallel(2, pp=2), Parallel(4))
        >>> plan.role(3), plan.role(5)
        (Role(name='trainer', tp=1, pp=1, ep=None), Role(name='vLLM', tp=1, pp=None, ep=None))
        """
        role = self.roles[world]
        sizes = self.src if role.side == "src" else self.dst
        return Role(
            "trainer" if role.side == "src" else self.dst.engine_name,
            role.tp,
            role.pp if sizes.pp > 1 else None,
            role.ep if role.side == "src" and sizes.ep > 1 else None,
        )


@dataclass(frozen=True)
class _RankIndex:
    """The plan's lookup tables, built once from its roles, pairs and groups."""

    world: dict[tuple[str, int, int, int], int]
    receivers: dict[tuple[str, int], tuple[int, ...]]
    sender: dict[int, tuple[str, int]]
    experts: dict[int, tuple[int, ...]]

    @classmethod
    def of(cls, plan: SyncPlan) -> _RankIndex:
        world: dict[tuple[str, int, int, int], int] = {}
        for role in plan.roles:
            world.setdefault((role.side, role.pp, role.tp, role.ep), role.world)
        receivers: dict[tuple[str, int], list[int]] = {}
        sender: dict[int, tuple[str, int]] = {}
        for stage, pairs in (("stage1", plan.stage1), ("stage2", plan.stage2)):
            for a, b in pairs:
                receivers.setdefault((stage, a), []).append(b)
                sender.setdefault(b, (stage, a))
        experts = {w: group for group in plan.expert_groups for w in group}
        return cls(world, {k: tuple(v) for k, v in receivers.items()}, sender, experts)


def _sizes(p: Parallel) -> str:
    return f"tp {p.tp}, pp {p.pp}, ep {p.ep}"


def holds(role: RankRole, shard) -> bool:
    """Whether trainer rank ``role`` holds oracle source ``shard`` (ep None: every ep rank)."""
    return (role.pp, role.tp) == (shard.pp, shard.tp) and shard.ep in (None, role.ep)


def held_shards(layout: ModelLayout, roles: Iterable[RankRole]) -> dict[int, list[tuple[Any, Any]]]:
    """Per trainer world rank, the (parameter, oracle source shard) pairs it holds, in model
    order: what :func:`holds` says, found through the (pp, tp) of each shard (a whole model
    at 64 trainer ranks has thousands of shards; asking every rank of each costs seconds).

    >>> from syncviz import Parallel, preset
    >>> plan = build_plan(preset("mixtral-8x7b").scaled(), Parallel(2, ep=2), Parallel(2))
    >>> held = held_shards(plan.layout, plan.roles)
    >>> sorted(held), all(holds(plan.roles[w], s) for w in held for _, s in held[w])
    ([0, 1, 2, 3], True)
    """
    by_place: dict[tuple[int, int], list[RankRole]] = {}
    for role in roles:
        if role.side == "src":
            by_place.setdefault((role.pp, role.tp), []).append(role)
    held: dict[int, list[tuple[Any, Any]]] = {r.world: [] for rs in by_place.values() for r in rs}
    for param in layout:
        for shard in param.src:
            for role in by_place.get((shard.pp, shard.tp), ()):
                if shard.ep is None or shard.ep == role.ep:
                    held[role.world].append((param, shard))
    return held


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
    options: SyncOptions | None = None,
    **option_values: Any,
) -> SyncPlan:
    """Plan a sync of ``spec`` from a Megatron trainer under ``src`` to vLLM under ``dst``.

    The sizes are validated here, once. One inference replica; the trainer's
    data-parallel size is raised to its expert-parallel size, as Megatron requires.
    ``options`` (a :class:`SyncOptions`) says how the sync runs; keyword arguments
    named like its fields (``comm="p2p"``, ...) override single options.

    >>> from syncviz import Parallel, preset
    >>> build_plan(preset("qwen2-7b"), Parallel(tp=4), Parallel(tp=2))
    Traceback (most recent call last):
    ...
    syncviz.errors.SyncvizError: dst tp (2) must be a multiple of src tp (4): use 4
    >>> build_plan(preset("qwen2-7b").scaled(), Parallel(1), Parallel(2), seed=3).options.seed
    3
    """
    options = options or SyncOptions()
    if option_values:
        known = {f.name for f in fields(SyncOptions)}
        for name in option_values:
            if name not in known:
                raise SyncvizError(
                    f"option {name!r} is not known", fix="use one of " + ", ".join(sorted(known))
                )
        options = replace(options, **option_values)
    validate(spec, src, dst)
    if spec.mtp_layers and engine(dst.engine).mtp_renames:
        raise SyncvizError(
            f"mtp_layers ({spec.mtp_layers}) with engine {dst.engine}: the synchronizers carry"
            " the multi-token-prediction layer with vLLM's draft-model names only",
            fix="use engine vllm, or lay the MTP layer out with model_layout or layout --mtp",
        )
    if dst.pp != 1:
        raise SyncvizError(
            f"dst pp ({dst.pp}) is not supported by the sync executors",
            fix="use dst pp 1 (the oracle and `syncviz layout` do support it)",
        )
    src = replace(src, dp=max(src.dp, src.ep))
    conv = replace(conventions(spec.family), src_vocab_divisible_by=options.src_vocab_divisible_by)
    layout = model_layout(spec, src, dst, layers=layers, conv=conv)
    _check_dst_experts(spec, src, dst)
    # The engine's expert parallel lives inside its tp ranks (each holds whole experts): the
    # rank mapping, whose dst ep is ChatLearn's (more ranks), sees tp ranks only.
    mapping = plan_rank_mapping(RankLayout.megatron_to_vllm(src, replace(dst, ep=1), replicas=1))

    roles: list[RankRole] = []
    for world in range(src.world_size):
        pp, dp, tp = megatron_coordinates(src, world)
        roles.append(RankRole(world, "src", pp, tp, dp % src.ep))
    for local in range(dst.tp * dst.pp):
        roles.append(RankRole(len(roles), "dst", local // dst.tp, local % dst.tp))

    src_params: dict[int, list[str]] = {r.world: [] for r in roles if r.side == "src"}
    src_offset: dict[int, int] = {r.world: 0 for r in roles if r.side == "src"}
    dst_shapes: dict[int, dict[str, tuple[int, ...]]] = {
        r.world: {} for r in roles if r.side == "dst"
    }
    dst_world = {(r.pp, r.tp): r.world for r in roles if r.side == "dst"}
    named: dict[int, set[str]] = {w: set() for w in src_params}
    for world, held in held_shards(layout, roles).items():
        for param, shard in held:
            if shard.name not in named[world]:
                named[world].add(shard.name)
                src_params[world].append(shard.name)
            if param.layer is not None:  # the embedding and lm_head carry no offset
                src_offset[world] = shard.layer_offset
    for param in layout:
        for tensor in param.dst:
            dst_shapes[dst_world[(tensor.pp, tensor.tp)]][tensor.name] = tensor.shape

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
        options=options,
        id_base=id_bases(layout),
    )


def _check_dst_experts(spec: ModelSpec, src: Parallel, dst: Parallel) -> None:
    """What the sync executors can carry of the destination's expert parallel and DP
    attention (the oracle and ``syncviz layout`` take any valid one).

    Destination EP is carried from any trainer tp: the exchange of routed experts gives
    each trainer tp rank the whole experts of the destination ranks it feeds. DP attention
    is not: a destination rank's attention shard would need heads of other trainer ranks.

    >>> from syncviz import preset
    >>> spec = preset("qwen3-30b-a3b").scaled()
    >>> _check_dst_experts(spec, Parallel(tp=2, ep=2), Parallel(tp=4, ep=4))  # carried
    >>> sglang = Parallel(tp=4, engine="sglang", dp_attention=2)
    >>> _check_dst_experts(spec, Parallel(tp=2), sglang)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    syncviz.errors.SyncvizError: dst dp_attention (2) needs src tp 1 ... attention shard r mod 2 ...
    """
    if dst.dp_attention > 1 and src.tp != 1:
        raise SyncvizError(
            f"dst dp_attention ({dst.dp_attention}) needs src tp 1 in the sync executors (src tp"
            f" is {src.tp}): destination rank r holds the heads of attention shard r mod"
            f" {dst.attn_tp} (dst tp / dp_attention), which trainer tp ranks other than the one"
            " it receives from hold",
            fix="use --src-tp 1; `syncviz layout` shows any src tp",
        )
    if dst.ep > 1 and spec.num_experts % dst.ep:
        per = spec.num_experts // dst.ep
        raise SyncvizError(
            f"dst ep ({dst.ep}) with num_experts ({spec.num_experts}): ranks hold {per + 1} or"
            f" {per} experts, and the sync executors cut a regrouped buffer into equal chunks",
            fix="for a sync use a dst ep dividing num_experts; `syncviz layout` shows any",
        )


def _expert_groups(src_roles: list[RankRole], src: Parallel) -> tuple[tuple[int, ...], ...]:
    """Per pipeline stage, the tp*ep trainer ranks that exchange routed experts.

    Ordered by HEP rank ``ep * tp_size + tp``; only the first ``ep`` data-parallel
    replicas take part (they hold the experts between them).
    """
    groups: dict[int, list[tuple[int, int, int]]] = {}
    for role in src_roles:
        _, dp, _ = megatron_coordinates(src, role.world)
        if dp < src.ep:
            groups.setdefault(role.pp, []).append((role.ep, role.tp, role.world))
    return tuple(tuple(w for _, _, w in sorted(g)) for _, g in sorted(groups.items()))


def id_bases(layout: ModelLayout) -> dict[str, int]:
    """Where each parameter's ids start, so ids are unique across the whole model.

    A destination element then names its parameter too, and a value that
    landed in the wrong parameter is caught (float64 is exact up to 2**53).
    """
    bases, next_id = {}, 0
    for param in layout:
        bases[param.key] = next_id
        next_id += math.prod(param.global_shape)
    return bases
