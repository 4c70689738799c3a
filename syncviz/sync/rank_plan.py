"""The plain rank-plan API: a :class:`~syncviz.sync.local_actors.RankLayout` in, rank pairs out.

:func:`plan_rank_mapping` runs the ported group (:mod:`syncviz.sync.rank_mapping`) on
in-process stand-in actors, so the pairs are exactly the original's; executors and
diagrams read the resulting :class:`RankMapping`.

>>> from syncviz.parallel import Parallel
>>> layout = RankLayout.megatron_to_vllm(Parallel(tp=1, dp=2), Parallel(tp=2), replicas=1)
>>> plan = plan_rank_mapping(layout)
>>> plan.stage1, plan.stage2
(((0, 2),), ((2, 3),))
"""

from __future__ import annotations

from dataclasses import dataclass

from syncviz.errors import SyncvizError
from syncviz.sync.local_actors import RankLayout, build_local_models
from syncviz.sync.rank_mapping import ParameterSyncGroup, ParameterSyncGroupwithHEP, RankPair, Ranks

__all__ = ["RankLayout", "RankMapping", "plan_rank_mapping"]


@dataclass(frozen=True)
class RankMapping:
    """The plan: who sends to whom, in the order the group decided it.

    ``stage1``: (trainer rank, inference rank) pairs; ``stage2``: (inference, inference)
    pairs of the two-stage broadcast; ``routed_experts``: one-to-one routed-expert pairs
    (HEP to Megatron inference only); ``regroup_groups``: trainer ranks that regroup routed
    experts together (None when no builder set them; None entries for ranks with no actor).

    >>> plan = RankMapping(((0,),), ((1, 2),), stage1=((0, 1),), stage2=((1, 2),))
    >>> plan.two_stage
    True
    """

    src_dp_ranks: tuple[Ranks, ...]
    dst_dp_ranks: tuple[Ranks, ...]
    stage1: tuple[RankPair, ...]
    stage2: tuple[RankPair, ...] = ()
    regroup_groups: tuple[tuple[int | None, ...], ...] | None = None
    routed_experts: tuple[RankPair, ...] = ()

    @property
    def two_stage(self) -> bool:
        """Whether there is a second (inference to inference) stage."""
        return bool(self.stage2)


_METHODS = {
    "one_stage": "build_rank_mapping",
    "two_stage": "build_rank_mapping_two_stage",
}


def plan_rank_mapping(
    layout: RankLayout, *, method: str = "auto", hep: bool = False, use_vllm_backend: bool = True
) -> RankMapping:
    """Run the group's rank mapping on in-process actors and return the rank pairs.

    ``method``: ``"auto"`` (what the group does when built: one stage when the tp sizes
    are equal, else two stages; with ``hep`` the HEP rules), ``"one_stage"`` or
    ``"two_stage"``. Errors are the original's (AssertionError, AttributeError, ...).

    >>> from syncviz.parallel import Parallel
    >>> layout = RankLayout.megatron_to_vllm(Parallel(tp=2, pp=2), Parallel(tp=2), replicas=2)
    >>> plan_rank_mapping(layout).stage1
    ((0, 4), (1, 5), (2, 4), (3, 5), (0, 6), (1, 7), (2, 6), (3, 7))
    """
    if method != "auto" and method not in _METHODS:
        raise SyncvizError(
            f"method ({method!r}) is not a rank-mapping method",
            fix="use 'auto', 'one_stage' or 'two_stage'",
        )
    src_model, dst_model = build_local_models(layout, use_vllm_backend)
    group_cls = ParameterSyncGroupwithHEP if hep else ParameterSyncGroup
    group = group_cls(src_model, dst_model, build_mapping=False)
    builder = "setup_rank_mapping" if method == "auto" else _METHODS[method]
    getattr(group, builder)()
    src_dp_ranks, dst_dp_ranks = group.get_src_and_dst_dp_ranks()
    regroup = group.send_actors_to_regroup_routed_experts
    return RankMapping(
        src_dp_ranks=tuple(tuple(ranks) for ranks in src_dp_ranks),
        dst_dp_ranks=tuple(tuple(ranks) for ranks in dst_dp_ranks),
        stage1=tuple(group.stage1_rank_pairs),
        stage2=tuple(group.stage2_rank_pairs),
        regroup_groups=None
        if regroup is None
        else tuple(
            tuple(None if actor is None else actor.rank for actor in actors) for actors in regroup
        ),
        routed_experts=tuple(getattr(group, "routed_expert_rank_pairs", ())),
    )
