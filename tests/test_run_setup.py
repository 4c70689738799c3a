"""The in-process run's set-up and records at real sizes: shard maps shared by the ranks
holding a shard, each rank's tensors its own; held shards found by (pp, tp) as ``holds``
says; repeated ops recorded as equal records with their own refs; the collector restored."""

from __future__ import annotations

import gc

import torch

from syncviz import Parallel, preset
from syncviz.provenance import RegionMap, SymbolicTensor
from syncviz.run.inprocess import run_sync
from syncviz.run.local_world import LocalWorld
from syncviz.run.plan import build_plan, held_shards, holds
from syncviz.run.symbolic_state import SharedShardMaps, symbolic_state
from syncviz.trace.json_io import trace_fields, trace_to_json
from syncviz.trace.tracer import Tracer

QKV = "module.module.decoder.layers.0.self_attention.linear_qkv.weight"


def _plan():
    return build_plan(preset("mixtral-8x7b").scaled(), Parallel(2, ep=2), Parallel(2), layers=[0])


def test_held_shards_are_what_holds_says_in_model_order():
    """Every trainer rank of tp 2 ep 2 (also pp 2): the pairs found by (pp, tp) are
    exactly the (param, shard) pairs ``holds`` accepts, walking the layout in order."""
    for spec, src, dst, layers in (
        (preset("mixtral-8x7b").scaled(), Parallel(2, ep=2), Parallel(2), [0, 31]),
        (preset("deepseek-v3").scaled(), Parallel(2, ep=2), Parallel(4), [0, 3, 60]),
        (preset("qwen3-30b-a3b").scaled(), Parallel(2, pp=2, ep=2), Parallel(2), [0, 47]),
    ):
        plan = build_plan(spec, src, dst, layers=layers)
        found = held_shards(plan.layout, plan.roles)
        for role in [r for r in plan.roles if r.side == "src"]:
            want = [(p.key, s.name) for p in plan.layout for s in p.src if holds(role, s)]
            assert [(p.key, s.name) for p, s in found[role.world]] == want
            assert want, role


def test_shared_maps_serve_every_ep_rank_and_each_rank_writes_its_own():
    """Ranks 0 and 2 (tp 0, ep 0 and ep 1) share the qkv shard's map, not its tensor: rank 0
    writing -7 into its rows 0-1 leaves rank 2's ids those of a fresh set-up."""
    plan = _plan()
    shared = SharedShardMaps(plan)
    a, b = symbolic_state(plan, 0, shared), symbolic_state(plan, 2, shared)
    assert a[QKV] is not b[QKV]
    assert a[QKV].region_map() is b[QKV].region_map()
    fresh = symbolic_state(plan, 2)[QKV].materialize()  # built alone, shares nothing
    mark = SymbolicTensor.from_map(RegionMap.constant((2, a[QKV].shape[1]), -7.0))
    a[QKV][0:2].copy_(mark)
    assert (a[QKV].materialize()[0:2] == -7).all()
    assert torch.equal(b[QKV].materialize(), fresh)
    param, shard = next(
        (p, s) for p in plan.layout for s in p.src if s.name == QKV and holds(plan.roles[2], s)
    )
    assert torch.equal(fresh, shard.index.shifted(plan.id_base[param.key]).materialize())


def test_repeated_ops_are_equal_records_with_their_own_refs():
    """Four empty_like of one tracked tensor, then a zeros_like: five records, indexes 0-4,
    output refs 1-5, each as if built alone (JSON read back equal)."""
    with Tracer() as tracer:
        x = tracer.track(torch.zeros(2, 3), "x")
        bufs = [torch.empty_like(x) for _ in range(4)]
        bufs.append(torch.zeros_like(x))
    ops = tracer.trace.params[0].ops
    assert [op.op for op in ops] == ["empty_like"] * 4 + ["zeros_like"]
    assert [op.index for op in ops] == [0, 1, 2, 3, 4]
    assert [op.outputs[0].ref for op in ops] == [1, 2, 3, 4, 5]
    assert [op.summary() for op in ops[:4]] == [
        f"empty_like(#0[2, 3] float32) -> #{r}[2, 3] float32" for r in (1, 2, 3, 4)
    ]
    read = trace_fields(trace_to_json(tracer.trace))["params"][0].ops
    assert read == ops
    assert len(bufs) == 5


def test_all_gather_lists_each_buffer_with_its_own_ref():
    """An all-gather of 3 buffers of one shape records 3 tensors of that shape, refs distinct."""
    with Tracer() as tracer:
        bufs = [torch.zeros(2, 2) for _ in range(3)]
        record = tracer.record_collective("all_gather", "g", [0, 1, 2], bufs, rank=0)
    assert [t.shape for t in record.tensors] == [[2, 2]] * 3
    assert len({t.ref for t in record.tensors}) == 3
    assert record.bytes == 3 * 4 * 4


def test_run_restores_the_collector_and_send_recv_still_meet():
    """A symbolic run leaves the collector on (as it found it); send/recv over lazily made
    mailboxes deliver, and a member outside the group is refused."""
    assert gc.isenabled()
    spec = _plan().spec
    result = run_sync(
        spec, Parallel(2, ep=2), Parallel(2), layers=[0], comm="p2p", provenance="symbolic"
    )
    assert gc.isenabled() and result.dst_tensors
    world = LocalWorld(2)

    def talk(coll):
        if coll.rank() == 0:
            coll.send(torch.tensor([5.0]), 1)
            return None
        got = torch.zeros(1)
        coll.recv(got, 0)
        return got.item()

    assert [r.value for r in world.run(talk)] == [None, 5.0]
    group = world.default_group
    try:
        group.post(0, 2, torch.zeros(1))
    except KeyError as err:
        assert err.args == ((0, 2),)
    else:
        raise AssertionError("a post to member 2 of 2 was accepted")


def test_trainer_tensors_before_the_sync_come_back_as_they_were():
    """A shard the sync left alone comes back as the rank's own tensor; one it wrote into
    (rows 0-1 set to -7) comes back as a fresh tensor holding the ids kept at set-up."""
    from syncviz.run.inprocess import _unchanged

    plan = _plan()
    state = symbolic_state(plan, 0)
    maps = {n: t.region_map() for n, t in state.items()}
    written = next(iter(state))
    ids = state[written].materialize()
    state[written][0:2].copy_(
        SymbolicTensor.from_map(RegionMap.constant((2, *state[written].shape[1:]), -7.0))
    )
    back = _unchanged(state, maps)
    assert back.keys() == state.keys()
    assert all(back[n] is state[n] for n in state if n != written)
    assert back[written] is not state[written]
    assert torch.equal(back[written].materialize(), ids)
    assert (state[written].materialize()[0:2] == -7).all()
    # A rank that failed (no state): every tensor fresh on its kept map.
    assert all(_unchanged(None, maps)[n].region_map() is maps[n] for n in maps)


def test_shared_maps_hold_every_shards_model_wide_ids():
    """Every shard of every trainer rank (DeepSeek-V3 tp 2 ep 4 layers 0, 3, 4; Qwen3-MoE tp 2
    ep 2; Llama 3 8B whole, its vocab padded): the shared map holds the oracle's ids moved by
    the parameter's base, padding kept at -1, and is built once per shard."""
    for spec, src, dst, layers in (
        (preset("deepseek-v3").scaled(), Parallel(2, ep=4), Parallel(4), [0, 3, 4]),
        (preset("qwen3-30b-a3b").scaled(), Parallel(2, ep=2), Parallel(2), [0, 1]),
        (preset("llama3-8b").scaled(), Parallel(2), Parallel(4), None),
    ):
        plan = build_plan(spec, src, dst, layers=layers)
        shared = SharedShardMaps(plan)
        for world, held in shared.held.items():
            for param, shard in held:
                got = shared.shard_map(param, shard)
                assert shared.shard_map(param, shard) is got
                ids = shard.index.ids().to(torch.float64)
                want = torch.where(ids >= 0, ids + plan.id_base[param.key], ids)
                assert torch.equal(got.materialize(), want), (world, shard.name)
