"""SyncPlan answers rank questions from tables built once (hand-worked numberings)."""

from __future__ import annotations

import pytest

from syncviz.errors import SyncvizError
from syncviz.parallel import Parallel
from syncviz.presets import preset
from syncviz.run.plan import SyncOptions, build_plan


def test_world_ranks_follow_megatron_numbering() -> None:
    """src tp 2 pp 2 (tp fastest, then pp): ranks 0-3; vLLM tp 4 follows as ranks 4-7."""
    plan = build_plan(preset("qwen2-7b").scaled(), Parallel(2, pp=2), Parallel(4), layers=[0])
    got = {(pp, tp): plan.world_rank("src", pp, tp) for pp in (0, 1) for tp in (0, 1)}
    assert got == {(0, 0): 0, (0, 1): 1, (1, 0): 2, (1, 1): 3}
    assert [plan.world_rank("dst", 0, tp) for tp in range(4)] == [4, 5, 6, 7]
    for role in plan.roles:
        assert plan.world_rank(role.side, role.pp, role.tp, role.ep) == role.world


def test_pairs_and_senders() -> None:
    """s=2 -> d=4, pp 1: rank 0 feeds vLLM rank 2 (then 2 -> 3), rank 1 feeds 4 (then 4 -> 5)."""
    plan = build_plan(preset("llama3-8b").scaled(), Parallel(2), Parallel(4), layers=[0])
    assert plan.receivers(0) == (2,) and plan.receivers(1) == (4,)
    assert plan.receivers(2, "stage2") == (3,) and plan.receivers(3, "stage2") == ()
    assert [plan.sender_of(w) for w in (2, 3, 4, 5)] == [
        ("stage1", 0),
        ("stage2", 2),
        ("stage1", 1),
        ("stage2", 4),
    ]
    assert plan.sender_of(0) is None


def test_expert_groups_of_a_hep_trainer() -> None:
    """qwen2-moe, src tp 2 ep 2: the four trainer ranks exchange experts as one group."""
    plan = build_plan(
        preset("qwen1.5-moe-a2.7b").scaled(), Parallel(2, ep=2), Parallel(2), layers=[0]
    )
    assert plan.expert_groups == ((0, 1, 2, 3),)
    assert all(plan.expert_group_of(w) == (0, 1, 2, 3) for w in range(4))
    assert plan.expert_group_of(4) is None
    assert plan.rank_name(3) == "trainer tp 1 ep 1 (rank 3)"


def test_missing_rank_is_an_error() -> None:
    """A (side, pp, tp) no rank has is refused with the sizes named."""
    plan = build_plan(preset("llama3-8b").scaled(), Parallel(2), Parallel(2), layers=[0])
    with pytest.raises(SyncvizError, match=r"no dst rank has pp 0, tp 5.*tp 2, pp 1, ep 1"):
        plan.world_rank("dst", 0, 5)


def test_options_are_one_frozen_object() -> None:
    """Options given one by one land in plan.options; unknown ones are refused by name."""
    plan = build_plan(
        preset("llama3-8b").scaled(), Parallel(1), Parallel(2), layers=[0], comm="p2p"
    )
    assert plan.options == SyncOptions(comm="p2p") and plan.comm == "p2p"
    with pytest.raises(SyncvizError, match=r"option 'colour' is not known"):
        build_plan(preset("llama3-8b").scaled(), Parallel(1), Parallel(2), colour="red")
    with pytest.raises(SyncvizError, match=r"bucket_size_mb \(0\) must be positive"):
        SyncOptions(bucket_size_mb=0)
