"""In-process stand-ins for ChatLearn's actors and models, and the layout they are built from.

A :class:`RankLayout` holds everything the rank mapping reads, as numbers;
:func:`build_local_models` turns it into trainer and inference models of
:class:`LocalActor` objects that answer the questions
:class:`~syncviz.sync.rank_mapping.ParameterSyncGroup` asks an actor (no Ray needed).

>>> from syncviz.parallel import Parallel
>>> src, dst = build_local_models(RankLayout.megatron_to_vllm(Parallel(tp=2), Parallel(tp=2)))
>>> src.all_ranks, dst.all_ranks
([[0, 1]], [[2, 3]])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from syncviz.errors import SyncvizError
from syncviz.parallel import Parallel

Ranks = tuple[int, ...]


def megatron_coordinates(src: Parallel, rank: int) -> tuple[int, int, int]:
    """(pp, dp, tp) of trainer ``rank``: Megatron numbers tp fastest, then dp, then pp.

    >>> megatron_coordinates(Parallel(tp=2, dp=2, pp=2), 5)
    (1, 0, 1)
    """
    return rank // (src.tp * src.dp), (rank // src.tp) % src.dp, rank % src.tp


# ---- in-process actors ----------------------------------------------------------------------


@dataclass(eq=False)
class LocalActor:
    """One rank, answering the questions the group asks an actor (no Ray needed).

    >>> LocalActor(rank=3, tp_size=2, gpus=(3,)).get_visible_gpus()
    [3]
    """

    rank: int
    tp_size: int = 1
    pp_size: int = 1
    ep_size: int = 1
    dp_size: int = 1
    local_param_ranks: tuple[list[int], int] | None = None
    address: str = "localhost"
    gpus: tuple[int, ...] = ()

    def get_visible_gpus(self) -> list[int]:
        """GPU ids this actor sees."""
        return list(self.gpus)

    def get_address(self) -> str:
        """Host address."""
        return self.address

    def tensor_model_parallel_size(self) -> int:
        """tp size of the actor's model."""
        return self.tp_size

    def pipeline_model_parallel_size(self) -> int:
        """pp size of the actor's model."""
        return self.pp_size

    def expert_model_parallel_size(self) -> int:
        """ep size of the actor's model."""
        return self.ep_size

    def tensor_and_expert_model_parallel_size(self) -> int:
        """tp*ep size of the actor's model."""
        return self.tp_size * self.ep_size

    def get_data_parallel_size(self) -> int:
        """dp size of the actor's model."""
        return self.dp_size

    def get_local_param_ranks(self) -> tuple[list[int], int] | None:
        """``(dp_group_ranks, dp_rank)`` of this trainer rank."""
        return self.local_param_ranks

    def __repr__(self) -> str:
        return f"LocalActor(rank={self.rank})"


@dataclass(eq=False)
class LocalReplica:
    """One model replica: its actors in rank order.

    >>> LocalReplica([LocalActor(0, local_param_ranks=([0], 0))]).get_local_param_ranks()
    [([0], 0)]
    """

    all_actors: list[LocalActor]

    def get_local_param_ranks(self) -> list[Any]:
        """Each actor's ``(dp_group_ranks, dp_rank)``."""
        return [actor.get_local_param_ranks() for actor in self.all_actors]


@dataclass(eq=False)
class LocalModel:
    """A model made of replicas of :class:`LocalActor` (the DistModel part the group uses).

    >>> model = LocalModel("inference", [LocalReplica([LocalActor(4), LocalActor(5)])])
    >>> model.all_ranks, model.get_actor(5), model.get_actor(6)
    ([[4, 5]], LocalActor(rank=5), None)
    """

    name: str
    replicas: list[LocalReplica]
    use_vllm_backend: bool = False
    colocated: bool = False

    @property
    def all_ranks(self) -> list[list[int]]:
        """Ranks per replica."""
        return [[actor.rank for actor in replica.all_actors] for replica in self.replicas]

    def get_actor(self, rank: int) -> LocalActor | None:
        """The actor of ``rank``; None when no actor has it (as DistModel does)."""
        for replica in self.replicas:
            for actor in replica.all_actors:
                if actor.rank == rank:
                    return actor
        return None

    def colocate_with(self, other: LocalModel) -> bool:
        """Whether both models share their GPUs."""
        return self.colocated and other.colocated


# ---- plain API ------------------------------------------------------------------------------

Placement = tuple[str, tuple[int, ...]]


@dataclass(frozen=True)
class RankLayout:
    """Everything the rank mapping reads, as numbers.

    ``src_local_param_ranks`` holds one ``(dp_group_ranks, dp_rank)`` per trainer rank (rank
    = position); ``dst_all_ranks`` the inference ranks of each replica. ``src_gpus`` /
    ``dst_gpus`` give ``(address, gpu ids)`` per trainer rank / per inference rank in
    ``dst_all_ranks`` order; empty means every actor has a GPU of its own.

    >>> layout = RankLayout(1, 1, 1, 1, (((0,), 0),), 2, 1, 1, ((1, 2),))
    >>> layout.tp_num_mapping
    2
    """

    src_tp: int
    src_pp: int
    src_ep: int
    src_dp: int
    src_local_param_ranks: tuple[tuple[Ranks, int], ...]
    dst_tp: int
    dst_pp: int
    dst_ep: int
    dst_all_ranks: tuple[Ranks, ...]
    colocate: bool = False
    src_gpus: tuple[Placement, ...] = ()
    dst_gpus: tuple[Placement, ...] = ()

    def __post_init__(self) -> None:
        for name in ("src_tp", "src_pp", "src_ep", "src_dp", "dst_tp", "dst_pp", "dst_ep"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SyncvizError(
                    f"{name} ({value!r}) must be a positive integer", fix=f"use {name}=1 or more"
                )
        if not self.src_local_param_ranks:
            raise SyncvizError(
                "src_local_param_ranks is empty: the trainer needs one rank",
                fix="give one (dp_group_ranks, dp_rank) pair per trainer rank",
            )
        if not self.dst_all_ranks:
            raise SyncvizError(
                "dst_all_ranks is empty: inference needs one replica",
                fix="give the ranks of each inference replica",
            )
        self._check_gpus("src_gpus", self.src_gpus, len(self.src_local_param_ranks))
        self._check_gpus("dst_gpus", self.dst_gpus, sum(len(r) for r in self.dst_all_ranks))

    @staticmethod
    def _check_gpus(name: str, gpus: tuple[Placement, ...], actors: int) -> None:
        if gpus and len(gpus) != actors:
            raise SyncvizError(
                f"{name} has {len(gpus)} entries but there are {actors} actors",
                fix=f"give one (address, gpus) per actor, or leave {name} empty",
            )

    @property
    def tp_num_mapping(self) -> int:
        """Inference tp over trainer tp (1: one stage)."""
        return self.dst_tp // self.src_tp

    @classmethod
    def from_dict(cls, args: Mapping[str, Any]) -> RankLayout:
        """From the keys ``src_tp/pp/ep/dp``, ``src_local_param_ranks``, ``dst_tp/pp/ep``,
        ``dst_all_ranks``, ``colocate`` and ``gpu_map`` (``{"src": [[address, gpus]...],
        "dst": [...]}`` or None); other keys are ignored.

        >>> RankLayout.from_dict({"src_tp": 1, "src_pp": 1, "src_ep": 1, "src_dp": 1,
        ...     "src_local_param_ranks": [[[0], 0]], "dst_tp": 1, "dst_pp": 1, "dst_ep": 1,
        ...     "dst_all_ranks": [[1]]}).dst_all_ranks
        ((1,),)
        """
        gpu_map = args.get("gpu_map") or {}

        def placements(entries: Sequence[Sequence[Any]]) -> tuple[Placement, ...]:
            return tuple((str(address), tuple(gpus)) for address, gpus in entries)

        return cls(
            src_tp=args["src_tp"],
            src_pp=args["src_pp"],
            src_ep=args["src_ep"],
            src_dp=args["src_dp"],
            src_local_param_ranks=tuple(
                (tuple(ranks), dp_rank) for ranks, dp_rank in args["src_local_param_ranks"]
            ),
            dst_tp=args["dst_tp"],
            dst_pp=args["dst_pp"],
            dst_ep=args["dst_ep"],
            dst_all_ranks=tuple(tuple(ranks) for ranks in args["dst_all_ranks"]),
            colocate=bool(args.get("colocate", False)),
            src_gpus=placements(gpu_map.get("src", ())),
            dst_gpus=placements(gpu_map.get("dst", ())),
        )

    @classmethod
    def megatron_to_vllm(
        cls, src: Parallel, dst: Parallel, replicas: int | None = None, colocate: bool = False
    ) -> RankLayout:
        """Megatron trainer ranks (tp fastest, then dp, then pp) and ``replicas`` inference
        replicas (default ``dst.dp``) whose ranks follow the trainer's.

        With ``src.ep > 1`` a trainer rank's dp group is Megatron's data-modulo-expert
        group: the ranks ``tp*ep`` apart within its pipeline stage.

        >>> RankLayout.megatron_to_vllm(Parallel(tp=2, dp=2), Parallel(tp=2)).src_local_param_ranks
        (((0, 2), 0), ((1, 3), 0), ((0, 2), 1), ((1, 3), 1))
        """
        if src.ep > 1 and src.dp % src.ep != 0:
            raise SyncvizError(
                f"src ep ({src.ep}) must divide src dp ({src.dp})",
                fix="Megatron carves expert parallel out of data parallel",
            )
        stage_size = src.tp * src.dp
        stride = src.tp * src.ep
        local: list[tuple[Ranks, int]] = []
        for rank in range(src.world_size):
            pp, dp, tp = megatron_coordinates(src, rank)
            stage_start, offset = pp * stage_size, dp * src.tp + tp
            first = stage_start + offset % stride
            count = src.dp // src.ep
            local.append((tuple(range(first, first + count * stride, stride)), offset // stride))
        per_replica = dst.tp * dst.pp * dst.ep
        n_replicas = dst.dp if replicas is None else replicas
        dst_ranks = tuple(
            tuple(range(src.world_size + i * per_replica, src.world_size + (i + 1) * per_replica))
            for i in range(n_replicas)
        )
        return cls(
            src.tp,
            src.pp,
            src.ep,
            src.dp,
            tuple(local),
            dst.tp,
            dst.pp,
            dst.ep,
            dst_ranks,
            colocate,
        )


def build_local_models(
    layout: RankLayout, use_vllm_backend: bool = True
) -> tuple[LocalModel, LocalModel]:
    """Trainer and inference models of :class:`LocalActor` for a layout.

    The trainer has one replica holding every trainer rank (rank = position); each
    inference replica holds its ranks. Without placements each actor gets GPU ``[rank]``
    on one host, so no two actors share a GPU.

    >>> src, dst = build_local_models(RankLayout.megatron_to_vllm(Parallel(tp=2), Parallel(tp=2)))
    >>> dst.all_ranks, dst.get_actor(0)
    ([[2, 3]], None)
    """

    def placement(gpus: tuple[Placement, ...], index: int, rank: int) -> Placement:
        return gpus[index] if gpus else ("localhost", (rank,))

    src_actors = []
    for rank, local in enumerate(layout.src_local_param_ranks):
        address, gpus = placement(layout.src_gpus, rank, rank)
        src_actors.append(
            LocalActor(
                rank,
                layout.src_tp,
                layout.src_pp,
                layout.src_ep,
                layout.src_dp,
                (list(local[0]), local[1]),
                address,
                gpus,
            )
        )
    dst_replicas, index = [], 0
    for replica_ranks in layout.dst_all_ranks:
        actors = []
        for rank in replica_ranks:
            address, gpus = placement(layout.dst_gpus, index, rank)
            actors.append(
                LocalActor(
                    rank,
                    layout.dst_tp,
                    layout.dst_pp,
                    layout.dst_ep,
                    len(layout.dst_all_ranks),
                    None,
                    address,
                    gpus,
                )
            )
            index += 1
        dst_replicas.append(LocalReplica(actors))
    src_model = LocalModel("policy", [LocalReplica(src_actors)], colocated=layout.colocate)
    dst_model = LocalModel("inference", dst_replicas, use_vllm_backend, layout.colocate)
    return src_model, dst_model
