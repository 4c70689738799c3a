"""Rank mapping of the parameter-sync group: hand-worked cases, properties and errors.

The golden records (tests/test_golden.py) cover the recorded configurations; the cases
here are worked out by hand from the rules (tp fastest, stage-1 start positions, replica
cycling, same-GPU skipping, HEP blocks) and written out literally.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncviz.errors import SyncvizError
from syncviz.parallel import Parallel
from syncviz.sync.local_actors import LocalActor, RankLayout, build_local_models
from syncviz.sync.rank_mapping import (
    ParameterSyncGroup,
    ParameterSyncGroupwithHEP,
    group_dp_ranks,
    split_grouped_tp,
    stage1_start,
)
from syncviz.sync.rank_plan import plan_rank_mapping


def layout(src: Parallel, dst: Parallel, replicas: int = 1, **kwargs: Any) -> RankLayout:
    return RankLayout.megatron_to_vllm(src, dst, replicas=replicas, **kwargs)


def test_two_stage_s2_d4_one_replica() -> None:
    """s=2 -> d=4: rank 0 feeds 2 (then 2 -> 3), rank 1 feeds 4 (then 4 -> 5)."""
    plan = plan_rank_mapping(layout(Parallel(tp=2), Parallel(tp=4)))
    assert plan.src_dp_ranks == ((0, 1),)
    assert plan.dst_dp_ranks == ((2, 3, 4, 5),)
    assert plan.stage1 == ((0, 2), (1, 4))
    assert plan.stage2 == ((2, 3), (4, 5))
    assert plan.regroup_groups is None


def test_two_stage_s1_d4_sends_to_first_and_fans_out() -> None:
    """s=1 -> d=4: one send to rank 1, which forwards to 2, 3 and 4."""
    plan = plan_rank_mapping(layout(Parallel(tp=1), Parallel(tp=4)))
    assert plan.stage1 == ((0, 1),)
    assert plan.stage2 == ((1, 2), (1, 3), (1, 4))


def test_two_stage_replicas_cycle_over_trainer_dp() -> None:
    """Three inference replicas take trainer dp replicas 0, 1, 0 in turn."""
    plan = plan_rank_mapping(layout(Parallel(tp=1, dp=2), Parallel(tp=2), replicas=3))
    assert plan.stage1 == ((0, 2), (1, 4), (0, 6))
    assert plan.stage2 == ((2, 3), (4, 5), (6, 7))


def test_two_stage_deeper_source_pipeline_alternates_start() -> None:
    """src pp=2 -> dst pp=1: stage 0 group starts at slot 0, stage 1 group at slot 1."""
    plan = plan_rank_mapping(layout(Parallel(tp=1, pp=2), Parallel(tp=2)))
    assert plan.stage1 == ((0, 2), (1, 3))
    assert plan.stage2 == ((2, 3), (3, 2))


def test_one_stage_equal_tp_maps_position_to_position() -> None:
    """tp 2 -> 2, two replicas: trainer dp replica k feeds inference replica k."""
    plan = plan_rank_mapping(layout(Parallel(tp=2, dp=2), Parallel(tp=2), replicas=2))
    assert plan.src_dp_ranks == ((0, 1), (2, 3))
    assert plan.stage1 == ((0, 4), (1, 5), (2, 6), (3, 7))
    assert plan.stage2 == ()
    assert plan.regroup_groups == ((0, 1), (2, 3))


def test_one_stage_pipeline_stages_share_destination() -> None:
    """src pp=2 -> dst pp=1: both stages send to the same rank, per replica."""
    plan = plan_rank_mapping(layout(Parallel(tp=1, pp=2), Parallel(tp=1), replicas=2))
    assert plan.stage1 == ((0, 2), (1, 2), (0, 3), (1, 3))
    assert plan.regroup_groups == ((0,), (1,), (0,), (1,))


def test_one_stage_colocated_odd_tp_walks_replicas_backwards() -> None:
    """Colocated with tp=1: replica 1 feeds the first inference replica."""
    plan = plan_rank_mapping(
        layout(Parallel(tp=1, dp=2), Parallel(tp=1), replicas=2, colocate=True)
    )
    assert plan.stage1 == ((1, 2), (0, 3))


def test_same_gpu_receiver_is_skipped() -> None:
    """Trainer rank 0 shares GPU 0 with inference rank 1, so it sends to rank 2."""
    base = layout(Parallel(tp=1), Parallel(tp=2))
    placed = RankLayout.from_dict(
        {
            **{
                name: getattr(base, name)
                for name in ("src_tp", "src_pp", "src_ep", "src_dp", "dst_tp", "dst_pp", "dst_ep")
            },
            "src_local_param_ranks": base.src_local_param_ranks,
            "dst_all_ranks": base.dst_all_ranks,
            "gpu_map": {"src": [["n0", [0]]], "dst": [["n0", [0]], ["n0", [1]]]},
        }
    )
    plan = plan_rank_mapping(placed)
    assert plan.stage1 == ((0, 2),)
    assert plan.stage2 == ((2, 1),)


def test_same_gpu_on_another_host_is_not_a_collision() -> None:
    """Same GPU id on a different host: the first receiver is kept."""
    base = layout(Parallel(tp=1), Parallel(tp=2))
    placed = RankLayout(
        1,
        1,
        1,
        1,
        base.src_local_param_ranks,
        2,
        1,
        1,
        base.dst_all_ranks,
        src_gpus=(("n0", (0,)),),
        dst_gpus=(("n1", (0,)), ("n1", (1,))),
    )
    assert plan_rank_mapping(placed).stage1 == ((0, 1),)


def test_megatron_ranks_with_expert_parallel() -> None:
    """tp=2, ep=2, dp=4: dp groups are the ranks tp*ep=4 apart (data-modulo-expert)."""
    ranks = layout(Parallel(tp=2, ep=2, dp=4), Parallel(tp=2)).src_local_param_ranks
    assert ranks == (
        ((0, 4), 0),
        ((1, 5), 0),
        ((2, 6), 0),
        ((3, 7), 0),
        ((0, 4), 1),
        ((1, 5), 1),
        ((2, 6), 1),
        ((3, 7), 1),
    )
    assert group_dp_ranks(ranks) == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_megatron_ranks_pipeline_is_slowest() -> None:
    """tp=2, pp=2, dp=2: ranks 0-3 are stage 0, dp groups stride tp within a stage."""
    ranks = layout(Parallel(tp=2, pp=2, dp=2), Parallel(tp=2)).src_local_param_ranks
    assert ranks[4:] == (((4, 6), 0), ((5, 7), 0), ((4, 6), 1), ((5, 7), 1))


def test_grouped_tp_split_returns_positions_with_ep() -> None:
    """The two-stage split with ep>1 yields positions 0..n-1, not the ranks (kept quirk)."""
    assert split_grouped_tp([10, 11, 12, 13], 2, 2) == [[0, 1], [2, 3]]
    assert split_grouped_tp([10, 11, 12, 13], 2, 1) == [[10, 11], [12, 13]]


def test_stage1_start_pattern() -> None:
    """tp_num_mapping 4: starts 0,1,2,3, then counts back 3,2,1,0 for the groups after."""
    assert [stage1_start(p, 4) for p in range(8)] == [0, 1, 2, 3, 3, 2, 1, 0]


def test_rank_without_actor_is_none_and_fails_later() -> None:
    """dst ep=2 makes two-stage pick rank 0 of the inference side: no actor, AttributeError."""
    bad = layout(Parallel(tp=2, ep=2, dp=2), Parallel(tp=4, ep=2))
    _, dst_model = build_local_models(bad)
    assert dst_model.get_actor(0) is None
    message = "'NoneType' object has no attribute 'get_visible_gpus'"
    with pytest.raises(AttributeError, match=message):
        plan_rank_mapping(bad)


def test_two_stage_tp_not_multiple_is_the_original_assertion() -> None:
    """tp 2 -> 3 forced to two stages fails with the original's text and model names."""
    with pytest.raises(AssertionError) as info:
        plan_rank_mapping(layout(Parallel(tp=2), Parallel(tp=3)), method="two_stage")
    assert str(info.value).endswith("src model policy(TP=2) and dst model inference(TP=3)")


def test_one_stage_width_mismatch_is_the_original_assertion() -> None:
    """tp 4 -> 6 in one stage: 4 trainer ranks are not a multiple of 6."""
    with pytest.raises(AssertionError, match="should be times of dst ranks, but got 4 and 6"):
        plan_rank_mapping(layout(Parallel(tp=4), Parallel(tp=6)), method="one_stage")


def test_hep_vllm_same_tp_fewer_experts_ranks() -> None:
    """HEP tp=1 ep=2 -> vLLM tp=1, two replicas: block tp groups taken in turn."""
    plan = plan_rank_mapping(
        layout(Parallel(tp=1, ep=2, dp=2), Parallel(tp=1), replicas=2), hep=True
    )
    assert plan.stage1 == ((0, 2), (1, 3))
    assert plan.stage2 == ()
    assert plan.regroup_groups == ((0, 1),)


def test_hep_to_megatron_routes_experts_one_to_one() -> None:
    """HEP tp=1 ep=2 -> Megatron tp=2 (same tp*ep): experts 0->2, 1->3; the rest two-stage."""
    plan = plan_rank_mapping(
        layout(Parallel(tp=1, ep=2, dp=2), Parallel(tp=2)), hep=True, use_vllm_backend=False
    )
    assert plan.routed_experts == ((0, 2), (1, 3))
    assert plan.stage1 == ((0, 2),)
    assert plan.stage2 == ((2, 3),)
    assert plan.regroup_groups == ((0, 1),)


def test_hep_to_megatron_unequal_hep_is_not_supported() -> None:
    """HEP tp=1 ep=2 -> Megatron tp=4: tp*ep differs, the original's NotImplementedError."""
    with pytest.raises(NotImplementedError, match="EP2 TP1 for training model `policy`"):
        plan_rank_mapping(
            layout(Parallel(tp=1, ep=2, dp=2), Parallel(tp=4)), hep=True, use_vllm_backend=False
        )


def test_group_fills_actor_mappings() -> None:
    """The facade's mappings hold actors: send, receive and stage-2 sides agree."""
    src, dst = build_local_models(layout(Parallel(tp=1), Parallel(tp=2)))
    group = ParameterSyncGroup(src, dst, "g")
    sender, first, second = src.get_actor(0), dst.get_actor(1), dst.get_actor(2)
    assert group.send_recv_actor_mappings == {sender: [first]}
    assert group.recv_send_actor_mappings == {first: [sender]}
    assert group.send_recv_actor_mappings_stage2 == {first: [second]}
    assert group.actor2rank == {sender: 0, first: 1, second: 2}


class _Ref:
    """What a Ray-style ``.remote`` call returns here: a box to be resolved."""

    def __init__(self, value: Any) -> None:
        self.value = value


class _RemoteMethod:
    def __init__(self, method: Any) -> None:
        self._method = method

    def remote(self, *args: Any) -> _Ref:
        return _Ref(self._method(*args))


class _RemoteActor:
    """Wraps a LocalActor so that every method is called as ``actor.method.remote()``."""

    def __init__(self, actor: LocalActor) -> None:
        self.rank = actor.rank
        self._actor = actor

    def __getattr__(self, name: str) -> _RemoteMethod:
        return _RemoteMethod(getattr(self._actor, name))


def _resolve(value: Any) -> Any:
    if isinstance(value, list):
        return [_resolve(item) for item in value]
    return value.value if isinstance(value, _Ref) else value


def test_group_drives_remote_style_actors_through_resolve() -> None:
    """Actors whose methods have ``.remote`` give the same pairs as local ones."""
    src, dst = build_local_models(layout(Parallel(tp=2, dp=2), Parallel(tp=4), replicas=2))
    for model in (src, dst):
        for replica in model.replicas:
            values = replica.get_local_param_ranks()
            replica.all_actors = [_RemoteActor(a) for a in replica.all_actors]  # type: ignore[misc]
            replica.get_local_param_ranks = (  # type: ignore[method-assign]
                lambda values=values: [_Ref(value) for value in values]
            )
    group = ParameterSyncGroup(src, dst, "g", resolve=_resolve)
    assert group.stage1_rank_pairs == [(0, 4), (1, 6), (2, 8), (3, 10)]
    assert group.stage2_rank_pairs == [(4, 5), (6, 7), (8, 9), (10, 11)]


def test_layout_rejects_bad_sizes_and_gpu_lists() -> None:
    """Bad layouts name the field: a zero size, a GPU list of the wrong length."""
    good = layout(Parallel(tp=1), Parallel(tp=1))
    with pytest.raises(SyncvizError, match=r"dst_tp \(0\) must be a positive integer"):
        RankLayout(1, 1, 1, 1, good.src_local_param_ranks, 0, 1, 1, good.dst_all_ranks)
    with pytest.raises(SyncvizError, match="dst_gpus has 2 entries but there are 1 actors"):
        RankLayout(
            1,
            1,
            1,
            1,
            good.src_local_param_ranks,
            1,
            1,
            1,
            good.dst_all_ranks,
            dst_gpus=(("n", (0,)), ("n", (1,))),
        )
    with pytest.raises(SyncvizError, match="method"):
        plan_rank_mapping(good, method="three_stage")


@settings(max_examples=60, deadline=None)
@given(
    src_tp=st.sampled_from([1, 2, 4]),
    factor=st.sampled_from([1, 2, 4]),
    dp=st.integers(1, 3),
    replicas=st.integers(1, 3),
)
def test_every_inference_rank_is_written_once(
    src_tp: int, factor: int, dp: int, replicas: int
) -> None:
    """pp=1, ep=1, own GPUs: each inference rank receives exactly once over both stages."""
    plan = plan_rank_mapping(
        layout(Parallel(tp=src_tp, dp=dp), Parallel(tp=src_tp * factor), replicas=replicas)
    )
    received = Counter(dst for _, dst in plan.stage1 + plan.stage2)
    all_dst = [rank for ranks in plan.dst_dp_ranks for rank in ranks]
    assert received == Counter(all_dst)
    stage1_receivers = {dst for _, dst in plan.stage1}
    assert all(sender in stage1_receivers for sender, _ in plan.stage2)


def test_hep_group_class_is_a_parameter_sync_group() -> None:
    """The HEP group keeps the base API (drop-in for ChatLearn code)."""
    assert issubclass(ParameterSyncGroupwithHEP, ParameterSyncGroup)
    src, dst = build_local_models(layout(Parallel(tp=1, ep=2, dp=2), Parallel(tp=1)))
    group = ParameterSyncGroupwithHEP(src, dst, "g")
    assert group.routed_experts_filter(["a.mlp.experts.w", "b"]) == ["a.mlp.experts.w"]
    assert group.params_except_routed_expert_filter(["a.mlp.experts.w", "b"]) == ["b"]
