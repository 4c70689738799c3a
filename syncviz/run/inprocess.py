"""Run the whole sync flow: on simulated ranks in one process, or on Ray actors.

Both executors run the very same per-rank code (:func:`syncviz.run.flow.run_rank`);
only the world differs (:class:`~syncviz.run.local_world.LocalWorld` threads or
:class:`~syncviz.run.ray_world.RayWorld` actors with gloo/NCCL).

>>> from syncviz import Parallel, preset
>>> result = run_sync(preset("qwen2-7b").scaled(), Parallel(tp=2), Parallel(tp=4), layers=[0])
>>> result.plan.world_size, sorted(result.dst_tensors)
(6, [2, 3, 4, 5])
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import replace
from typing import Any, Literal

import torch

from syncviz.errors import RunFailed, SyncvizError
from syncviz.families import family_of_architecture
from syncviz.parallel import Parallel
from syncviz.progress import Ticker
from syncviz.provenance import RegionMap, SymbolicTensor, symbolic_factories
from syncviz.provenance.collector import gc_paused
from syncviz.run.choose import synchronizer_factory
from syncviz.run.flow import Finding, RankOutcome, run_rank
from syncviz.run.local_world import LocalWorld
from syncviz.run.memory import check_memory
from syncviz.run.options import Comm, ExpertComm, SyncOptions, Values
from syncviz.run.plan import SyncPlan, build_plan, holds
from syncviz.run.result import SyncResult
from syncviz.run.symbolic_state import SharedShardMaps, symbolic_state
from syncviz.run.values import global_weights, held_ids, take, unwritten
from syncviz.run.world import World
from syncviz.spec import ModelSpec
from syncviz.sync.base import BaseSync
from syncviz.trace.model import SyncTrace
from syncviz.trace.tracer import Tracer

Executor = Literal["inprocess", "ray"]
DEFAULT_TIMEOUT_S = 600.0  # a whole scaled model takes seconds; exact sizes take minutes
Provenance = Literal["materialized", "symbolic"]
# Objects made while the collector was paused above which one full collection follows.
# A whole-model trace holds tens of thousands of small records, which every automatic
# collection would rescan (tracing ran several times slower); after a large run, one full
# collection spares the three scans as they age (tens of seconds for a whole DeepSeek-V3
# at 64 trainer ranks), and once they are old the collector leaves them be.
_COLLECT_AFTER = 200_000


def synchronizer_name(choice: str | type[BaseSync]) -> str:
    """The name a result keeps for the synchronizer: as given, or ``module:Class``.

    >>> from syncviz.sync import MegatronVllmQWen2Sync
    >>> synchronizer_name(MegatronVllmQWen2Sync), synchronizer_name("corrected")
    ('syncviz.sync.megatron_vllm:MegatronVllmQWen2Sync', 'corrected')
    """
    if isinstance(choice, type):
        return f"{choice.__module__}:{choice.__qualname__}"
    return choice


def initial_state(plan: SyncPlan, world: int) -> dict[str, torch.Tensor]:
    """A rank's tensors before the sync: trainer shards hold global element ids
    (float64, exact up to 2**53) or real float32 weights; vLLM tensors hold the
    "unwritten" marker everywhere."""
    role = plan.roles[world]
    if role.side == "dst":
        return {
            name: unwritten(shape, plan.values) for name, shape in plan.dst_shapes[world].items()
        }
    state = {}
    for param in plan.layout:
        for shard in param.src:
            if holds(role, shard):
                ids = shard.index.ids()
                if plan.values == "ids":
                    base = plan.id_base[param.key]
                    state[shard.name] = torch.where(ids >= 0, ids + base, ids).to(torch.float64)
                else:
                    weights = global_weights(param.key, param.global_shape, plan.seed)
                    state[shard.name] = take(weights, ids)
    return state


def tiny_run() -> SyncResult:
    """The small run the pictures' examples draw: a tiny Llama (hidden 8, 4 heads of 2, 2 KV
    heads, 64 words), layer 0, trainer tp 1 -> vLLM tp 2, through the faithful port.

    >>> result = tiny_run()
    >>> result.plan.world_size, sorted(result.dst_tensors)
    (3, [1, 2])
    """
    family = family_of_architecture("LlamaForCausalLM")  # the family a plain Llama reads as
    spec = ModelSpec("tiny", family, 1, 8, 4, 2, 8, 64, head_dim=2)
    return run_sync(spec, Parallel(tp=1), Parallel(tp=2), layers=[0])


def run_sync(
    spec: ModelSpec,
    src: Parallel,
    dst: Parallel,
    *,
    synchronizer: str | type[BaseSync] = SyncOptions.synchronizer,
    layers: Iterable[int] | None = None,
    expert_comm: ExpertComm = SyncOptions.expert_comm,
    executor: Executor = "inprocess",
    trace: bool = True,
    timeout: float = DEFAULT_TIMEOUT_S,
    world: World | None = None,
    show_progress: bool = False,
    values: Values = SyncOptions.values,
    seed: int = SyncOptions.seed,
    src_vocab_divisible_by: int | None = SyncOptions.src_vocab_divisible_by,
    comm: Comm = SyncOptions.comm,
    bucket_size_mb: float = SyncOptions.bucket_size_mb,
    options: SyncOptions | None = None,
    provenance: Provenance = "materialized",
) -> SyncResult:
    """Sync ``spec`` from trainer sizes ``src`` to vLLM sizes ``dst`` and collect the result.

    Source shards hold provenance ids, so every destination element says where
    it came from; :func:`syncviz.check.check` compares them with the oracle.
    The run options are those of :class:`~syncviz.run.plan.SyncOptions` (given one
    by one, or as ``options``, which then wins); they travel in ``result.plan.options``,
    the synchronizer's name included.
    ``executor="ray"`` runs one Ray actor per rank with gloo collectives (a local
    Ray is started unless ``RAY_ADDRESS`` names a cluster). ``world`` runs on a
    world the caller built (a ``LocalWorld`` or ``RayWorld`` of the plan's size).

    ``provenance="symbolic"`` gives every rank
    :class:`~syncviz.provenance.SymbolicTensor` shards (ids kept as compact maps,
    nothing allocated per element), so real sizes are cheap; the in-process
    world passes the maps through its collectives. The Ray executor and
    ``values="random"`` need real buffers and keep ``"materialized"`` (float64 ids,
    also the reference the tests hold the symbolic flow to). Either way the
    result holds maps only: real buffers are compacted when it is built.

    A rank that fails mid-sync (a dead actor, a timed-out collective) leaves
    every destination rank's tensors as they were: receivers stage what arrives
    and commit only when all of it arrived.

    ``timeout`` (seconds) bounds the whole run, set-up included, on either
    executor: a rank still running then is named in a
    :class:`~syncviz.errors.RunFailed` ("vLLM tp 1 (rank 3) stopped answering
    during regroup of ...") and every other rank is released. Before anything is
    allocated, the memory the run needs is estimated from the plan and a run that
    does not fit is refused (:func:`syncviz.run.memory.check_memory`).
    """
    _check_timeout(timeout)
    deadline = time.monotonic() + timeout
    if options is None:
        options = SyncOptions(
            synchronizer=synchronizer_name(synchronizer),
            expert_comm=expert_comm,
            comm=comm,
            bucket_size_mb=bucket_size_mb,
            values=values,
            seed=seed,
            src_vocab_divisible_by=src_vocab_divisible_by,
        )
    elif synchronizer != SyncOptions.synchronizer:
        options = replace(options, synchronizer=synchronizer_name(synchronizer))
    # The plan, set-up, sync and result make millions of objects at real sizes: one pause.
    with gc_paused(_COLLECT_AFTER):
        plan = build_plan(spec, src, dst, layers=layers, options=options)
        if isinstance(synchronizer, str):
            synchronizer = options.synchronizer
        if executor not in ("inprocess", "ray"):
            raise SyncvizError(f"unknown executor {executor!r}", fix="use 'inprocess' or 'ray'")
        symbolic = _symbolic(provenance, plan.values, executor, world)
        if not symbolic:  # symbolic ids cost a map's structure, not its elements
            check_memory(plan)
        factory = synchronizer_factory(synchronizer)
        if world is not None:  # a world the caller made (and owns), of plan.world_size ranks
            return _execute(world, plan, factory, trace, deadline=deadline)
        if executor == "inprocess":
            world = LocalWorld(plan.world_size, timeout=timeout)
            return _execute(
                world, plan, factory, trace, show_progress, symbolic=symbolic, deadline=deadline
            )
        from syncviz.run.ray_cluster import ray_session
        from syncviz.run.ray_world import RayWorld

        with ray_session():
            start = max(1.0, deadline - time.monotonic())
            with RayWorld(plan.world_size, timeout=timeout, start_timeout=start) as world:
                return _execute(world, plan, factory, trace, deadline=deadline)


def _check_timeout(timeout: float) -> None:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise SyncvizError(f"timeout ({timeout!r}) must be a number of seconds", fix="e.g. 600")
    if not (0 < timeout < math.inf):
        raise SyncvizError(
            f"timeout ({timeout}) must be positive and finite", fix="give seconds, e.g. 600"
        )


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _describer(plan: SyncPlan, tracers: dict[int, Tracer]):
    """Words for a rank: its role, and what it was doing when the tracer last saw it."""

    def describe(rank: int) -> str:
        role = plan.roles[rank]
        side = "trainer" if role.side == "src" else plan.dst.engine_name
        where = f"pp {role.pp} tp {role.tp}" if role.pp else f"tp {role.tp}"
        text = f"{side} {where} (rank {rank}) stopped answering"
        tracer = tracers.get(rank)
        scopes = list(getattr(tracer, "_scopes", ()) or ())
        if scopes and scopes[-1].param:
            text += f" during {scopes[-1].phase or 'sync'} of {scopes[-1].param}"
        return text

    return describe


def _symbolic(provenance: str, values: str, executor: str, world: World | None) -> bool:
    if provenance not in ("materialized", "symbolic"):
        raise SyncvizError(
            f"unknown provenance {provenance!r}", fix="use 'materialized' or 'symbolic'"
        )
    if provenance == "materialized":
        return False
    if values != "ids" or executor != "inprocess" or world is not None:
        raise SyncvizError(
            "symbolic provenance runs on the in-process executor with values='ids' only"
            f" (got executor={executor!r}, values={values!r})",
            fix="use provenance='materialized' for Ray, random weights or your own world",
        )
    return True


def _execute(
    world: World,
    plan: SyncPlan,
    factory,
    trace: bool,
    show_progress: bool = False,
    *,
    symbolic: bool = False,
    deadline: float,
) -> SyncResult:
    for name, ranks in plan.groups().items():
        world.new_group(list(ranks), name=name)

    shared = SharedShardMaps(plan) if symbolic else None

    def setup(coll):
        # Trainer shards are fresh each sync; a vLLM rank keeps the tensors it holds.
        if symbolic:
            fresh = symbolic_state(plan, coll.world_rank, shared)
        else:
            fresh = initial_state(plan, coll.world_rank)
        held = coll.store.get("state")
        if plan.roles[coll.world_rank].side == "src" or held is None or held.keys() != fresh.keys():
            coll.store["state"] = fresh
        state = coll.store["state"]
        if symbolic and plan.roles[coll.world_rank].side == "src":
            return {n: t.region_map() for n, t in state.items()}  # see _unchanged
        return {n: _snapshot(t) for n, t in state.items()}

    # Counts parameters regrouped by all senders (in-process runs only).
    total = sum(len(plan.src_params[s]) for s, _ in plan.stage1)
    ticker = Ticker(total, "sync", enabled=show_progress, suffix=" params")
    tracers: dict[int, Tracer] = {}  # filled in process only: names what a stuck rank did
    describe = _describer(plan, tracers)

    def sync_rank(coll):
        # Buffers the flow or the synchronizer allocates (torch.empty, zeros) stay symbolic.
        with symbolic_factories() if symbolic else nullcontext():
            return _sync_rank(coll)

    def _sync_rank(coll):
        state = coll.store["state"]
        make_sync = lambda: factory(plan.spec, plan.src, plan.dst)  # noqa: E731
        tracer = Tracer() if trace else None
        if tracer is not None:
            tracers[coll.world_rank] = tracer
        if tracer is None:
            outcome = run_rank(plan, coll, state, make_sync, on_param=ticker)
        else:
            with tracer:
                if plan.roles[coll.world_rank].side == "src":
                    for name, tensor in state.items():
                        tracer.track(tensor, f"src {name}")
                outcome = run_rank(plan, coll, state, make_sync, tracer, on_param=ticker)
        return outcome, (tracer.trace if tracer else None), state

    with gc_paused(_COLLECT_AFTER):  # set-up, sync and result: hundreds of thousands of objects
        before = _values(world.run(setup, timeout=_left(deadline), describe=describe))
        results = world.run(sync_rank, timeout=_left(deadline), describe=describe)
        ticker.close()
        for r in results:  # the run itself failed on a rank (e.g. it could not load the class)
            if isinstance(r.error, RunFailed):
                raise r.error
        outcomes, traces = [], []
        dst_tensors = {w: before[w] for w in plan.dst_shapes}
        for r in results:
            if r.error is not None:
                outcome = RankOutcome(r.rank)
                outcome.findings.append(
                    Finding("*", r.rank, "flow", f"{type(r.error).__name__}: {r.error}")
                )
                outcomes.append(outcome)
                continue
            outcome, rank_trace, state = r.value
            outcomes.append(outcome)
            if rank_trace is not None:
                traces.append(rank_trace)
            if r.rank in dst_tensors:
                dst_tensors[r.rank] = state
        # The result holds maps only: buffers that had to be real are compacted here.
        states = {r.rank: r.value[2] for r in results if r.error is None}
        before.update({w: _unchanged(states.get(w), before[w]) for w in plan.src_params})
        src_tensors = {w: held_ids(plan, w, before[w]) for w in plan.src_params}
        dst_tensors = {w: held_ids(plan, w, t) for w, t in dst_tensors.items()}
        merged = _merge(traces) if trace else None
        return SyncResult(plan, src_tensors, dst_tensors, outcomes, merged)


def _unchanged(
    state: dict[str, torch.Tensor] | None, maps: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """A symbolic trainer rank's tensors as they were before the sync, from the maps kept at
    set-up: the rank's own tensor where the sync left it as it was (its map the very same
    object, a plain base tensor: nearly always), else a fresh tensor on the kept map.
    Copying every shard up front cost seconds and a second set of tensors at 64 ranks."""
    if not maps or not isinstance(next(iter(maps.values())), RegionMap):
        return maps  # real tensors (snapshots): nothing to do
    out: dict[str, torch.Tensor] = {}
    for name, region_map in maps.items():
        t = (state or {}).get(name)
        if not (
            type(t) is SymbolicTensor
            and t._base is None
            and t.storage_offset() == 0
            and t.is_contiguous()
            and t.dtype == torch.float64
            and tuple(t.shape) == tuple(region_map.shape)
            and t.region_map() is region_map
        ):
            t = SymbolicTensor.from_map(region_map)
        out[name] = t
    return out


def _snapshot(tensor: torch.Tensor) -> torch.Tensor:
    """A copy of ``tensor`` as it is before the sync. A symbolic base tensor's map is
    immutable, so a fresh tensor on the same map is its copy (torch's clone dispatches
    through the meta device: seconds for the shards of 64 ranks)."""
    if (
        type(tensor) is SymbolicTensor
        and tensor._base is None
        and tensor.storage_offset() == 0
        and tensor.is_contiguous()
    ):
        return SymbolicTensor.from_map(tensor.region_map(), tensor.dtype)
    return tensor.clone()


def _values(results) -> dict[int, Any]:
    for r in results:
        if isinstance(r.error, RunFailed):
            raise r.error
        if r.error is not None:
            raise RunFailed(
                f"rank {r.rank} failed to set up: {type(r.error).__name__}: {r.error}",
                fix="see the error; out of memory: use --scaled or fewer --layers",
            ) from r.error
    return {r.rank: r.value for r in results}


def _merge(traces: list[SyncTrace]) -> SyncTrace:
    merged = SyncTrace()
    for t in traces:
        merged.params.extend(t.params)
        merged.collectives.extend(t.collectives)
        merged.warnings.extend(t.warnings)
    return merged
