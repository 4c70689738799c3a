"""The collective interface: simulated ranks in one process, and a real gloo process group."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch.overrides import TorchFunctionMode

from syncviz.errors import SyncvizError
from syncviz.parallel import Parallel
from syncviz.provenance import RegionMap, SymbolicTensor, copy_whole
from syncviz.run import local_world
from syncviz.run.local_world import LocalWorld
from syncviz.spec import ModelSpec
from syncviz.sync.adapter import StageActor, models_for
from syncviz.sync.collective import TorchCollective
from syncviz.sync.megatron_vllm import MegatronVllmQWen2Sync
from syncviz.trace.tracer import Tracer


def test_all_gather_gives_every_rank_every_tensor_in_rank_order():
    """all_gather over 3 ranks fills each rank's list with [rank 0, rank 1, rank 2]."""

    def body(coll):
        outs = [torch.empty(2) for _ in range(3)]
        coll.all_gather(outs, torch.tensor([1.0, 2.0]) + 10 * coll.rank())
        return [t.tolist() for t in outs]

    expected = [[1.0, 2.0], [11.0, 12.0], [21.0, 22.0]]
    assert [r.value for r in LocalWorld(3).run(body)] == [expected] * 3


def test_all_to_all_delivers_input_i_of_member_j_to_output_j_of_member_i():
    """all_to_all: member i's outputs[j] is member j's inputs[i]."""

    def body(coll):
        me = coll.rank()
        inputs = [torch.tensor([10.0 * me + j]) for j in range(2)]
        outputs = [torch.empty(1) for _ in range(2)]
        coll.all_to_all(outputs, inputs)
        return [t.item() for t in outputs]

    assert [r.value for r in LocalWorld(2).run(body)] == [[0.0, 10.0], [1.0, 11.0]]


def test_broadcast_copies_the_source_tensor_to_every_rank():
    """broadcast from group rank 1 overwrites the others' tensors."""

    def body(coll):
        t = torch.full((2,), float(coll.rank()))
        coll.broadcast(t, src=1)
        return t.tolist()

    assert [r.value for r in LocalWorld(3).run(body)] == [[1.0, 1.0]] * 3


def test_send_and_recv_pass_a_tensor_around_a_ring():
    """Each rank sends its rank to the next and receives the previous rank's."""

    def body(coll):
        me, n = coll.rank(), coll.world_size()
        coll.send(torch.tensor([float(me)]), dst=(me + 1) % n)
        got = torch.empty(1)
        coll.recv(got, src=(me - 1) % n)
        return got.item()

    assert [r.value for r in LocalWorld(3).run(body)] == [2.0, 0.0, 1.0]


def test_named_sub_group_uses_group_ranks_and_excludes_others():
    """A group over world ranks [1, 2] named "g" gathers only those two, in group order."""
    world = LocalWorld(3)
    world.new_group([2, 1], name="g")

    def body(coll):
        if coll.world_rank == 0:
            return None
        outs = [torch.empty(1) for _ in range(2)]
        coll.all_gather(outs, torch.tensor([float(coll.world_rank)]), group="g")
        return coll.rank("g"), [t.item() for t in outs]

    results = [r.value for r in world.run(body)]
    assert results == [None, (1, [2.0, 1.0]), (0, [2.0, 1.0])]


def test_a_rank_failing_before_a_collective_releases_the_others():
    """When rank 0 raises before all_gather, rank 1 gets an 'abandoned' error, not a hang."""

    def body(coll):
        if coll.rank() == 0:
            raise ValueError("boom")
        coll.all_gather([torch.empty(1), torch.empty(1)], torch.zeros(1))

    world = LocalWorld(2, timeout=20.0)
    first, second = world.run(body)
    assert isinstance(first.error, ValueError)
    assert isinstance(second.error, SyncvizError)
    assert "abandoned" in str(second.error)
    # The world is usable again afterwards.
    assert [r.value for r in world.run(lambda c: c.world_size())] == [2, 2]


def test_wrong_number_of_buffers_is_rejected_with_the_group_size():
    """all_to_all with 3 buffers in a 2-rank group names the counts."""

    def body(coll):
        coll.all_to_all([torch.empty(1)] * 3, [torch.zeros(1)] * 3)

    results = LocalWorld(2).run(body)
    assert all(isinstance(r.error, SyncvizError) for r in results)
    assert "all_to_all got 3 input tensors for a group of 2 ranks" in str(results[0].error)


def test_unknown_group_name_is_rejected():
    """A group name never created names the fix."""
    with pytest.raises(SyncvizError, match="new_group"):
        LocalWorld(1).collective(0).rank("nope")


def test_symbolic_all_gather_buffers_stay_each_ranks_own():
    """After a symbolic all_gather over 3 ranks, a rank writing into its gathered buffers
    and its own input changes nothing that the others gathered (ids 100 * rank + i)."""

    def body(coll):
        me = coll.rank()
        mine = SymbolicTensor.from_map(RegionMap.affine((2, 2), 100.0 * me, (2, 1)))
        outs = [torch.empty_like(mine) for _ in range(3)]
        coll.all_gather(outs, mine)
        outs[(me + 1) % 3].fill_(-5.0)  # each rank spoils the next rank's gathered copy
        mine.fill_(-7.0)
        box = [None]
        coll.broadcast_object(box, 0)  # everyone has written before anyone reads
        return [t.materialize().flatten().tolist() for t in outs]

    def ids(rank):
        return [100.0 * rank + i for i in range(4)]

    for me, result in enumerate(LocalWorld(3).run(body)):
        want = [ids(r) for r in range(3)]
        want[(me + 1) % 3] = [-5.0] * 4
        assert result.value == want, me


def test_a_copy_a_tracer_could_see_goes_through_torch():
    """Under a tracer's mode, the all_gather's copy into a traced buffer is a recorded
    copy_ (the shared-map hand-over is only for copies no mode watches)."""
    src = SymbolicTensor.from_map(RegionMap.affine((2, 3), 10.0, (3, 1)))
    out = torch.empty_like(src)
    with Tracer() as tracer:
        tracer.track(out, "gathered")
        LocalWorld(1).collective(0).all_gather([out], src)
    assert [op.op for p in tracer.trace.params for op in p.ops] == ["copy_"]
    assert out.materialize().flatten().tolist() == [10.0, 11.0, 12.0, 13.0, 14.0, 15.0]


class _PassThrough(TorchFunctionMode):
    """A torch-function mode that records nothing and changes nothing."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def test_only_a_copy_no_mode_watches_hands_the_map_over(monkeypatch):
    """A broadcast of a symbolic tensor from rank 0 to rank 1 hands the map over
    (copy_whole) outside any torch-function mode and leaves the copy to torch inside one
    (a mode that records nothing too); rank 1 holds rank 0's ids either way."""
    handed = []

    def counting(out, item):
        handed.append(item.shape)
        return copy_whole(out, item)

    monkeypatch.setattr(local_world, "copy_whole", counting)

    def body(coll):
        mine = SymbolicTensor.from_map(RegionMap.affine((2, 3), 10.0 + 100 * coll.rank(), (3, 1)))
        coll.broadcast(mine, 0)
        return mine.materialize().flatten().tolist()

    def watched(coll):
        with _PassThrough():
            return body(coll)

    ids = [10.0, 11.0, 12.0, 13.0, 14.0, 15.0]
    assert [r.value for r in LocalWorld(2).run(body)] == [ids, ids]
    assert handed == [torch.Size([2, 3])]
    assert [r.value for r in LocalWorld(2).run(watched)] == [ids, ids]
    assert handed == [torch.Size([2, 3])]


class _CountingCondition(threading.Condition):
    """A condition that counts its notify_all calls."""

    def __init__(self) -> None:
        super().__init__()
        self.notified = 0

    def notify_all(self) -> None:
        self.notified += 1
        super().notify_all()


def test_a_collective_wakes_its_waiters_once():
    """5 all_gathers over 8 ranks wake the waiting members 5 times (when the last member
    posts), not once per post (40)."""
    world = LocalWorld(8)
    counting = world.default_group._cond = _CountingCondition()

    def body(coll):
        for step in range(5):
            outs = [torch.empty(1) for _ in range(8)]
            coll.all_gather(outs, torch.tensor([float(step * 8 + coll.rank())]))
        return [t.item() for t in outs]

    results = world.run(body)
    assert [r.value for r in results] == [[32.0 + r for r in range(8)]] * 8
    assert counting.notified == 5


# ---------------------------------------------------------------- real process group

MOE_SPEC = ModelSpec(
    name="moe",
    family="qwen2-moe",
    num_layers=1,
    hidden_size=4,
    num_attention_heads=2,
    num_query_groups=2,
    ffn_hidden_size=8,
    vocab_size=64,
    num_experts=4,
    moe_ffn_hidden_size=4,
)
FC1 = "module.module.language_model.encoder.layers.0.mlp.experts.dense_h_to_4h.weight"
FC2 = "module.module.language_model.encoder.layers.0.mlp.experts.dense_4h_to_h.weight"


def _shards(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HEP shards of rank ``rank`` (tp=2): 2 local experts, fc1 [2*2*4, 4], fc2 [2*4, 4]."""
    fc1 = torch.arange(64, dtype=torch.float64).reshape(16, 4) + 1000 * rank
    fc2 = torch.arange(32, dtype=torch.float64).reshape(8, 4) + 1000 * rank + 500
    return fc1, fc2


def _regroup_all(coll, rank: int) -> list[torch.Tensor]:
    sync = MegatronVllmQWen2Sync(*models_for(MOE_SPEC, Parallel(tp=2), Parallel(tp=2)))
    sync.map_name_from_src_to_dst(StageActor(0), StageActor(0), [], [])
    sync.collective = coll
    fc1, fc2 = _shards(rank)
    return [
        sync.allgather_routed_experts(FC1, fc1, "g", rank)[0],
        sync.allgather_routed_experts(FC2, fc2, "g", rank)[0],
        sync.alltoall_routed_experts(FC1, fc1, None)[0],
        sync.alltoall_routed_experts(FC2, fc2, None)[0],
    ]


def _gloo_worker(rank: int, port: int, out_dir: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
    )
    try:
        coll = TorchCollective(groups={"g": None})
        torch.save(_regroup_all(coll, rank), Path(out_dir) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_routed_expert_regrouping_is_the_same_in_process_and_on_gloo(tmp_path):
    """Routed-expert all-gather and all-to-all give identical tensors on LocalWorld and gloo."""
    world = LocalWorld(2)
    world.new_group(name="g")
    local = world.run(lambda coll: _regroup_all(coll, coll.rank()))
    assert all(r.ok for r in local), [r.error for r in local]

    mp.start_processes(
        _gloo_worker, args=(_free_port(), str(tmp_path)), nprocs=2, start_method="spawn"
    )
    for rank in range(2):
        real = torch.load(tmp_path / f"rank{rank}.pt")
        assert len(real) == len(local[rank].value)
        for got, want in zip(real, local[rank].value, strict=True):
            assert torch.equal(got, want)
    # The expert slices really moved: tp rank 1 holds other rows than tp rank 0.
    assert not torch.equal(local[0].value[0], local[1].value[0])
