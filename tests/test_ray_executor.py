"""The sync flow on Ray actors (gloo): same tensors and trace as in process; faults bounded."""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch

from syncviz import Parallel, preset
from syncviz.check import check
from syncviz.errors import SyncvizError
from syncviz.run.inprocess import run_sync
from syncviz.run.local_world import LocalWorld
from syncviz.run.plan import build_plan
from syncviz.sync.megatron_vllm import MegatronVllmQWen2Sync

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_cluster():
    from syncviz.run.ray_cluster import ray_session

    with ray_session(num_cpus=2) as session:
        yield session


def _same(a, b) -> None:
    assert a.dst_tensors.keys() == b.dst_tensors.keys()
    for world, tensors in a.dst_tensors.items():
        for name, t in tensors.items():
            assert torch.equal(t.materialize(), b.dst_tensors[world][name].materialize()), (
                world,
                name,
            )
    assert [(f.param, f.rank, f.stage, f.message) for f in a.findings] == [
        (f.param, f.rank, f.stage, f.message) for f in b.findings
    ]


def _ops(result) -> list[tuple]:
    return sorted(
        (pt.param or "", pt.rank or 0, pt.phase or "", tuple(op.op for op in pt.ops))
        for pt in result.trace.params
    )


def _collectives(result) -> list[tuple]:
    return sorted((c.kind, c.group, c.rank, c.src, c.bytes) for c in result.trace.collectives)


@pytest.mark.parametrize(
    ("preset_name", "expert_comm", "comm"),
    [
        ("qwen2-7b", "allgather", "broadcast"),
        ("qwen2-7b", "allgather", "p2p"),
        ("qwen2-57b-a14b", "allgather", "broadcast"),
        ("qwen2-57b-a14b", "alltoall", "broadcast"),
    ],
)
def test_ray_matches_in_process(ray_cluster, preset_name, expert_comm, comm):
    """s=2 -> d=4 on Ray: tensors, findings and merged traces equal the in-process run."""
    spec = preset(preset_name).scaled()
    args = dict(layers=[0], expert_comm=expert_comm, comm=comm)
    on_ray = run_sync(spec, Parallel(tp=2), Parallel(tp=4), executor="ray", **args)
    local = run_sync(spec, Parallel(tp=2), Parallel(tp=4), **args)
    _same(on_ray, local)
    assert _ops(on_ray) == _ops(local)
    assert _collectives(on_ray) == _collectives(local)
    assert check(on_ray).ok == check(local).ok


class _SlowSync(MegatronVllmQWen2Sync):
    """Takes its time on every parameter, so a fault can land mid-sync."""

    def regroup_params_to_sync(self, name, param_data, tp_division, regroup_routed_experts=False):
        time.sleep(0.5)
        return super().regroup_params_to_sync(name, param_data, tp_division, regroup_routed_experts)


def test_killed_destination_actor_fails_fast_and_leaves_nothing_behind(ray_cluster):
    """Killing one vLLM actor mid-sync raises within 60 s and leaves no actor process running."""
    from syncviz.run.ray_world import RayWorld

    spec = preset("qwen2-7b").scaled()
    plan = build_plan(spec, Parallel(tp=2), Parallel(tp=4), layers=[0])
    world = RayWorld(plan.world_size, timeout=30)
    pids = list(world.pids)
    victim = pids[plan.stage2[0][1]]  # a stage-2 receiver
    killer = threading.Timer(1.5, lambda: os.kill(victim, 9))
    start = time.monotonic()
    killer.start()
    try:
        with pytest.raises(SyncvizError, match="died"):
            run_sync(
                spec,
                Parallel(tp=2),
                Parallel(tp=4),
                layers=[0],
                synchronizer=_SlowSync,
                world=world,
            )
    finally:
        killer.cancel()
        world.shutdown()
    assert time.monotonic() - start < 60
    time.sleep(1.0)
    alive = [pid for pid in pids if os.path.exists(f"/proc/{pid}")]
    assert alive == []


class _FailingWorld(LocalWorld):
    """A LocalWorld where one rank's stage-2 broadcasts fail, as if its peer had died."""

    def __init__(self, size: int, victim: int) -> None:
        super().__init__(size, timeout=20)
        self.victim = victim

    def collective(self, rank):
        coll = super().collective(rank)
        if rank == self.victim:
            inner = coll.broadcast

            def broadcast(tensor, src, group=None):
                if str(group).startswith("stage2"):
                    raise RuntimeError("peer died")
                inner(tensor, src, group)

            coll.broadcast = broadcast
        return coll


class _Reversed(MegatronVllmQWen2Sync):
    """Sends every regrouped buffer reversed, so a second sync changes every value."""

    def regroup_params_to_sync(self, name, param_data, tp_division, regroup_routed_experts=False):
        out = super().regroup_params_to_sync(name, param_data, tp_division, regroup_routed_experts)
        return out.flatten().flip(0).view(out.shape)


def test_failed_rank_leaves_destination_tensors_unchanged():
    """A rank failing mid-sync: vLLM ranks that did not finish keep their previous tensors."""
    spec = preset("qwen2-7b").scaled()
    plan = build_plan(spec, Parallel(tp=2), Parallel(tp=4), layers=[0])
    victim = plan.stage2[0][1]
    world = _FailingWorld(plan.world_size, victim=-1)  # no failure on the first sync
    first = run_sync(spec, Parallel(tp=2), Parallel(tp=4), layers=[0], world=world)
    before = {
        r: {n: t.clone() for n, t in world.stores[r]["state"].items()} for r in plan.dst_shapes
    }
    world.victim = victim
    second = run_sync(
        spec, Parallel(tp=2), Parallel(tp=4), layers=[0], world=world, synchronizer=_Reversed
    )
    failed = {f.rank for f in second.findings if f.stage == "flow"}
    assert victim in failed
    for rank in failed & set(plan.dst_shapes):
        for name, t in world.stores[rank]["state"].items():
            assert torch.equal(t, before[rank][name]), (rank, name)
            assert torch.equal(t, first.dst_tensors[rank][name].materialize())
