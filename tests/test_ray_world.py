"""RayWorld: real torch.distributed collectives across Ray actors, and its failure modes.

One local Ray (2 CPUs) and one 4-rank world serve the module; actors ask for no
CPUs so four fit. Each per-rank function also runs on LocalWorld, and both must
agree with results worked out by hand.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import ray  # a hard dependency: a missing ray is a failure, not a skip
import torch

from syncviz.errors import SyncvizError
from syncviz.run.local_world import LocalWorld
from syncviz.run.ray_cluster import ray_session
from syncviz.run.ray_world import RankActor, RayGroup, RayWorld, _process_alive

pytestmark = pytest.mark.ray

# pytest imports this file under a name the actors cannot import: send its functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

WORLD_SIZE = 4
ODD = [1, 3]


@pytest.fixture(scope="module")
def session():
    num_cpus = None if os.environ.get("RAY_ADDRESS") else 2
    with ray_session(num_cpus=num_cpus) as opened:
        yield opened


@pytest.fixture(scope="module")
def world(session):
    with RayWorld(WORLD_SIZE, timeout=30.0) as opened:
        opened.new_group(ODD, name="odd")
        yield opened


def local_results(fn):
    local = LocalWorld(WORLD_SIZE, timeout=30.0)
    local.new_group(ODD, name="odd")
    return [r.value for r in local.run(fn)]


def ray_results(world, fn):
    results = world.run(fn, timeout=60.0)
    assert [r.error for r in results] == [None] * WORLD_SIZE
    assert [r.rank for r in results] == list(range(WORLD_SIZE))
    return [r.value for r in results]


def gather_ranks(coll):
    outs = [torch.empty(2) for _ in range(coll.world_size())]
    coll.all_gather(outs, torch.tensor([coll.world_rank, 10.0 * coll.world_rank]))
    return [t.tolist() for t in outs]


def broadcast_in_odd_group(coll):
    if coll.world_rank not in ODD:
        return None
    tensor = torch.full((3,), float(coll.world_rank))
    coll.broadcast(tensor, src=1, group="odd")  # group rank 1 is world rank 3
    return (coll.rank("odd"), tensor.tolist())


def all_to_all_pairs(coll):
    me = coll.world_rank
    inputs = [torch.tensor([100.0 * me + j]) for j in range(WORLD_SIZE)]
    outputs = [torch.empty(1) for _ in range(WORLD_SIZE)]
    coll.all_to_all(outputs, inputs)
    return [t.item() for t in outputs]


def ring_send_recv(coll):
    me, size = coll.world_rank, coll.world_size()
    received = torch.empty(2)
    outgoing = torch.tensor([float(me), -1.0])
    # Even ranks send first, odd ranks receive first, so blocking pairs always meet.
    if me % 2 == 0:
        coll.send(outgoing, dst=(me + 1) % size)
        coll.recv(received, src=(me - 1) % size)
    else:
        coll.recv(received, src=(me - 1) % size)
        coll.send(outgoing, dst=(me + 1) % size)
    return received.tolist()


def test_all_gather_matches_local_world(world):
    """all_gather returns every rank's tensor in rank order, as on LocalWorld."""
    expected = [[[0.0, 0.0], [1.0, 10.0], [2.0, 20.0], [3.0, 30.0]]] * WORLD_SIZE
    assert ray_results(world, gather_ranks) == expected
    assert local_results(gather_ranks) == expected


def test_broadcast_in_named_group_matches_local_world(world):
    """broadcast by name in group [1, 3] with group src 1 copies world rank 3's tensor."""
    expected = [None, (0, [3.0, 3.0, 3.0]), None, (1, [3.0, 3.0, 3.0])]
    assert ray_results(world, broadcast_in_odd_group) == expected
    assert local_results(broadcast_in_odd_group) == expected


def test_all_to_all_matches_local_world(world):
    """all_to_all: rank r's output j is rank j's input r (100*j + r)."""
    expected = [[100.0 * j + r for j in range(WORLD_SIZE)] for r in range(WORLD_SIZE)]
    assert expected[1] == [1.0, 101.0, 201.0, 301.0]
    assert ray_results(world, all_to_all_pairs) == expected
    assert local_results(all_to_all_pairs) == expected


def test_send_recv_ring_matches_local_world(world):
    """send/recv around a ring: each rank receives its left neighbour's tensor."""
    expected = [[3.0, -1.0], [0.0, -1.0], [1.0, -1.0], [2.0, -1.0]]
    assert ray_results(world, ring_send_recv) == expected
    assert local_results(ring_send_recv) == expected


def test_store_keeps_tensors_between_runs(world):
    """A tensor put in collective.store in one run is still there, per rank, in the next."""

    def put(coll):
        coll.store["kept"] = torch.tensor([coll.world_rank * 7.0])

    def take(coll):
        return coll.store.pop("kept").item()

    ray_results(world, put)
    assert ray_results(world, take) == [0.0, 7.0, 14.0, 21.0]


def test_group_object_and_non_member_use(world):
    """The RayGroup object works like its name; a non-member using it gets a SyncvizError."""
    group = world.new_group([0, 2], name="even")
    assert group == RayGroup(ranks=(0, 2), name="even")

    def rank_in_even(coll):
        return coll.rank(group)

    results = world.run(rank_in_even, timeout=60.0)
    assert [r.value for r in results] == [0, None, 1, None]
    assert [type(r.error) for r in results] == [type(None), SyncvizError, type(None), SyncvizError]
    assert "rank 1 is not a member of group even" in str(results[1].error)


def test_exception_in_one_rank_is_its_error_and_world_recovers(world):
    """A rank that raises gets its own error back; ranks blocked on it fail fast; next run works."""

    def rank2_fails(coll):
        if coll.world_rank == 2:
            raise KeyError("rank 2 lost its shard")
        return gather_ranks(coll)

    started = time.monotonic()
    results = world.run(rank2_fails, timeout=60.0)
    elapsed = time.monotonic() - started
    assert isinstance(results[2].error, KeyError)
    assert "rank 2 lost its shard" in str(results[2].error)
    # The others were waiting for rank 2 in all_gather: they fail too, long before the
    # 30 s collective timeout, because rank 2 closed its connections.
    assert all(not r.ok for r in results)
    assert elapsed < 15.0
    assert ray_results(world, gather_ranks)[0] == [
        [0.0, 0.0],
        [1.0, 10.0],
        [2.0, 20.0],
        [3.0, 30.0],
    ]


def test_dead_actor_is_reported_and_leaves_no_process(session):
    """A rank that exits mid-run makes run raise, naming it, quickly; no actor process remains."""
    world = RayWorld(3, timeout=30.0)
    pids = list(world.pids)
    assert all(_process_alive(pid) for pid in pids)

    def rank1_crashes(coll):
        if coll.world_rank == 1:
            time.sleep(0.5)  # let the others enter all_gather first
            os._exit(1)
        outs = [torch.empty(1) for _ in range(3)]
        coll.all_gather(outs, torch.ones(1))

    started = time.monotonic()
    with pytest.raises(SyncvizError, match=r"rank\(s\) \[1\] of 3 died") as caught:
        world.run(rank1_crashes)
    assert time.monotonic() - started < 60.0
    assert caught.value.context["dead_ranks"] == [1]
    assert world.closed
    assert [pid for pid in pids if _process_alive(pid)] == []
    with pytest.raises(SyncvizError, match="shut down after"):
        world.run(gather_ranks)


class DiesJoining(RankActor):
    """Rank 1 exits (status 7) when asked to join torch.distributed; its peers then wait."""

    def init_process_groups(self, host, port, groups):
        if self.rank == 1:
            os._exit(7)
        super().init_process_groups(host, port, groups)


class RaisesJoining(RankActor):
    """Rank 2 raises when asked to join torch.distributed; its peers then wait."""

    def init_process_groups(self, host, port, groups):
        if self.rank == 2:
            raise RuntimeError("rank 2 has no route to the store")
        super().init_process_groups(host, port, groups)


def _titled(title: str) -> list[int]:
    """Live processes whose command line (a Ray actor's process title) starts with ``title``."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and _process_alive(int(pid)):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as cmd:
                    if cmd.read().startswith(title.encode()):
                        found.append(int(pid))
            except OSError:
                continue
    return found


def _gone(title: str, within: float = 30.0) -> list[int]:
    """Processes titled ``title`` still alive ``within`` seconds from now."""
    end = time.monotonic() + within
    while (alive := _titled(title)) and time.monotonic() < end:
        time.sleep(0.1)
    return alive


def test_rank_dying_while_joining_is_named_long_before_the_timeout(session):
    """A rank whose process exits in the rendezvous is named as dead, not its waiting peers."""

    class World(RayWorld):
        actor_body = DiesJoining

    started = time.monotonic()
    with pytest.raises(SyncvizError) as caught:
        World(3, timeout=600.0, start_timeout=600.0)
    elapsed = time.monotonic() - started
    message = str(caught.value)
    assert message.startswith("rank(s) [1] of 3 died while trying to join torch.distributed")
    assert "(rank 1: " in message and "(pid " in message
    assert caught.value.exit_code == 3
    assert caught.value.context["dead_ranks"] == [1]
    # The old wait blamed ranks 0 and 2 after the whole 600 s: the death is seen at once.
    assert elapsed < 300.0
    assert _gone("ray::DiesJoining") == []


def test_rank_raising_while_joining_is_named_with_its_error(session):
    """A rank that raises in the rendezvous is named with its error; no actor process remains."""

    class World(RayWorld):
        actor_body = RaisesJoining

    started = time.monotonic()
    with pytest.raises(SyncvizError) as caught:
        World(3, timeout=600.0, start_timeout=600.0)
    assert str(caught.value).startswith(
        "rank(s) [2] of 3 failed to join torch.distributed "
        "(rank 2: RuntimeError: rank 2 has no route to the store)"
    )
    assert caught.value.exit_code == 3
    assert time.monotonic() - started < 300.0
    assert _gone("ray::RaisesJoining") == []


def test_run_timeout_names_the_stuck_rank(session):
    """A rank stuck outside any collective makes run(timeout=2) raise naming it, in bounded time."""
    world = RayWorld(2, timeout=30.0)
    pids = list(world.pids)

    def rank1_sleeps(coll):
        if coll.world_rank == 1:
            time.sleep(300)
        return coll.world_rank

    started = time.monotonic()
    stuck = r"rank 1 stopped answering: still running after the 2 s run timeout"
    with pytest.raises(SyncvizError, match=stuck) as caught:
        world.run(rank1_sleeps, timeout=2.0)
    assert time.monotonic() - started < 20.0
    assert caught.value.context["stuck_ranks"] == [1]
    assert [pid for pid in pids if _process_alive(pid)] == []


def test_bad_arguments_raise_before_ray_is_touched():
    """Invalid sizes or backends are refused with a SyncvizError naming the value."""
    with pytest.raises(SyncvizError, match=r"world_size \(0\) must be at least 1"):
        RayWorld(0)
    with pytest.raises(SyncvizError, match="backend 'mpi' is not supported"):
        RayWorld(2, backend="mpi")
    with pytest.raises(SyncvizError, match="needs a whole GPU per actor"):
        RayWorld(2, backend="nccl", num_gpus_per_actor=0.5)


def test_import_is_light_and_world_needs_ray_initialised():
    """Importing leaves ray unloaded; RayWorld without ray.init refuses instead of starting one."""
    code = (
        "import sys\n"
        "import syncviz.run.ray_world as rw, syncviz.run.ray_cluster\n"
        "print('ray' in sys.modules)\n"
        "try:\n"
        "    rw.RayWorld(1)\n"
        "except rw.SyncvizError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    loaded, refused = done.stdout.strip().splitlines()[-2:]
    assert loaded == "False"
    assert refused.startswith("Ray is not initialised: create the world inside")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_nccl_all_gather_on_own_gpus(session):
    """With backend='nccl' and a GPU per actor, all_gather runs on each actor's cuda device."""
    size = min(2, torch.cuda.device_count())

    def gather_on_device(coll):
        outs = [torch.empty(1, device=coll.device) for _ in range(coll.world_size())]
        coll.all_gather(outs, torch.tensor([coll.world_rank + 0.5], device=coll.device))
        return [t.item() for t in outs], coll.device.type

    with RayWorld(size, timeout=60.0, backend="nccl", num_gpus_per_actor=1) as gpu_world:
        results = gpu_world.run(gather_on_device, timeout=120.0)
    expected = [0.5, 1.5][:size]
    assert [r.value for r in results] == [(expected, "cuda")] * size
