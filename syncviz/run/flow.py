"""The parameter-sync flow, written once per rank over a :class:`Collective`.

Every rank runs :func:`run_rank` at the same time (threads in one process, or
Ray actors); the rank's role in the :class:`~syncviz.run.plan.SyncPlan` decides
what it does. The steps follow the original two-stage broadcast:

1. trainer ranks map names (``map_name_from_src_to_dst``), transform
   (``transform_parameters``) and, for MoE, all-gather or all-to-all their routed
   experts among the ranks of their expert group;
2. stage 1: for each (trainer, inference) pair the trainer regroups every
   parameter (``regroup_params_to_sync`` with ``tp_division`` = 1 when both sides
   hold the same number of elements, else dst tp // src tp) and broadcasts the
   buffers in buckets; the inference rank keeps its chunk and holds the others;
3. stage 2: each inference rank forwards the held chunks to its peers.

Unlike the original, a parameter the synchronizer fails on is a finding, not the
end of the run: the sender first broadcasts a manifest (names, sizes, errors),
so both sides skip that parameter and carry on. Receivers write only into their
own tensors, and only whole, size-checked chunks.

>>> from syncviz import Parallel, preset
>>> from syncviz.run.inprocess import run_sync
>>> result = run_sync(preset("llama3-8b").scaled(), Parallel(tp=1), Parallel(tp=2), layers=[0])
>>> sorted(result.dst_tensors[1])[0]
'model.model.layers.0.input_layernorm.weight'
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

from syncviz.run.plan import SyncPlan, expert_group, pair_group
from syncviz.run.values import PADDING_ID
from syncviz.sync.adapter import StageActor
from syncviz.sync.base import BaseSync
from syncviz.sync.collective import Collective
from syncviz.trace.tracer import Tracer


@dataclass
class Finding:
    """Something that went wrong for one parameter on one rank, in words."""

    param: str
    rank: int
    stage: str
    message: str
    detail: str = ""


@dataclass
class RankOutcome:
    """What one rank did: its findings and, for inference ranks, its write counts."""

    world: int
    findings: list[Finding] = field(default_factory=list)
    writes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Entry:
    """One parameter as announced in a manifest: destination name, size, or the error."""

    dst_name: str
    src_name: str
    numel: int
    tp_division: int
    error: str = ""
    dtype: str = "float64"


class _Traced:
    """The collective of one rank, recording every call in the rank's tracer."""

    def __init__(self, inner: Collective, tracer: Tracer | None, world: int, groups: dict) -> None:
        self.inner, self.tracer, self.world, self.groups = inner, tracer, world, groups

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _record(self, kind: str, group: Any, tensors: Any, **where: Any) -> None:
        if self.tracer is not None:
            ranks = self.groups.get(group, ())
            # The record reads sizes (numel, element_size): queries, never ops, so the
            # tracer's mode need not see them (64 per all-gather over 64 ranks).
            with torch._C.DisableTorchFunction():
                self.tracer.record_collective(
                    kind, str(group), list(ranks), tensors, rank=self.world, **where
                )

    # The backend's own tensor work (copies into buffers) is not the synchronizer's:
    # it runs with torch-function handling off, so the tracer records the call only.
    def all_gather(self, outputs: list[torch.Tensor], tensor: torch.Tensor, group: Any = None):
        with torch._C.DisableTorchFunction():
            self.inner.all_gather(outputs, tensor, group)
        self._record("all_gather", group, outputs)

    def all_to_all(self, outputs: list[torch.Tensor], inputs: list[torch.Tensor], group=None):
        with torch._C.DisableTorchFunction():
            self.inner.all_to_all(outputs, inputs, group)
        self._record("all_to_all", group, outputs)

    def broadcast_object(self, box: list[Any], src: int, group: Any = None) -> None:
        with torch._C.DisableTorchFunction():
            self.inner.broadcast_object(box, src, group)

    def send(self, tensor: torch.Tensor, dst: int, group: Any = None, label: str = ""):
        with torch._C.DisableTorchFunction():
            self.inner.send(tensor, dst, group)
        ranks = self.groups.get(group, ())
        self._record("send", group, tensor, dst=ranks[dst] if ranks else dst, label=label)

    def recv(self, tensor: torch.Tensor, src: int, group: Any = None, label: str = ""):
        with torch._C.DisableTorchFunction():
            self.inner.recv(tensor, src, group)
        ranks = self.groups.get(group, ())
        self._record("recv", group, tensor, src=ranks[src] if ranks else src, label=label)

    def broadcast(self, tensor: torch.Tensor, src: int, group: Any = None, label: str = ""):
        with torch._C.DisableTorchFunction():
            self.inner.broadcast(tensor, src, group)
        ranks = self.groups.get(group, ())
        self._record("broadcast", group, tensor, src=ranks[src] if ranks else src, label=label)


def run_rank(
    plan: SyncPlan,
    coll: Collective,
    state: dict[str, torch.Tensor],
    make_sync: Callable[[], BaseSync],
    tracer: Tracer | None = None,
    on_param: Callable[[], None] | None = None,
) -> RankOutcome:
    """Run this rank's part of the whole flow; ``state`` holds its named tensors.

    A trainer rank's ``state`` holds its shards under trainer names; an inference
    rank's holds its vLLM tensors, written in place.
    """
    world = coll.world_rank
    outcome = RankOutcome(world)
    traced = _Traced(coll, tracer, world, plan.groups())
    role = plan.roles[world]
    if role.side == "src":
        sync = make_sync()
        sync.collective = traced
        if plan.values == "ids":  # ids stand for values: an element that must be zero is -1
            sync.zero_value = PADDING_ID  # type: ignore[attr-defined]
        _send_all(plan, traced, state, sync, tracer, outcome, on_param or _nothing)
    else:
        _receive_all(plan, traced, state, tracer, outcome)
    return outcome


# ------------------------------------------------------------------ trainer side


def _scope(tracer: Tracer | None, param: str, world: int, phase: str):
    return tracer.scope(param=param, rank=world, phase=phase) if tracer else nullcontext()


def _nothing() -> None:
    pass


def _send_all(plan, coll, state, sync, tracer, outcome, on_param) -> None:
    world = coll.world_rank
    pairs = [(world, d) for d in plan.receivers(world, "stage1")]
    exchanges = plan.expert_group_of(world) is not None
    if not pairs and not exchanges:
        return
    names = list(plan.src_params[world])
    offset = plan.src_layer_offset[world]
    prepared: list[tuple[str, torch.Tensor]] = []
    try:
        src_names, dst_names = sync.map_name_from_src_to_dst(
            StageActor(offset, names), StageActor(0), names, list(names)
        )
        with _scope(tracer, "*", world, "transform"):
            params = [(n, state[n]) for n in src_names]
            prepared = list(sync.transform_parameters(params))
    except Exception as exc:  # a synchronizer failing is a finding for every parameter
        outcome.findings.append(_finding("*", world, "transform", exc))
        src_names, dst_names = [], []
    experts = _exchange_experts(plan, coll, sync, prepared, tracer, outcome)
    for _, dst in pairs:
        entries, buffers = _regroup_for(
            plan, world, dst, sync, prepared, dst_names, experts, tracer, outcome, on_param
        )
        _transfer(
            coll,
            plan,
            pair_group("stage1", world, dst),
            entries,
            buffers,
            sender=True,
        )


def _exchange_experts(plan, coll, sync, prepared, tracer, outcome) -> dict[str, torch.Tensor]:
    """Routed experts after the all-gather / all-to-all, by (transformed) name."""
    world = coll.world_rank
    group = plan.expert_group_of(world)
    if group is None:
        return {}
    regrouped: dict[str, torch.Tensor] = {}
    for name, tensor in prepared:
        try:
            with _scope(tracer, name, world, "routed_experts"):
                if plan.expert_comm == "allgather":
                    out, changed = sync.allgather_routed_experts(
                        name, tensor, expert_group(group), plan.roles[world].tp
                    )
                else:
                    out, changed = sync.alltoall_routed_experts(name, tensor, expert_group(group))
        except Exception as exc:
            outcome.findings.append(_finding(name, world, "routed_experts", exc))
            continue
        if changed:
            regrouped[name] = out
    return regrouped


def _regroup_for(plan, sender, dst, sync, prepared, dst_names, experts, tracer, outcome, on_param):
    shapes = plan.dst_shapes[dst]
    entries: list[_Entry] = []
    buffers: list[torch.Tensor] = []
    for (name, tensor), dst_name in zip(prepared, dst_names, strict=False):
        on_param()
        data = experts.get(name, tensor)
        if dst_name not in shapes:
            message = f"{plan.dst.engine_name} rank {dst} has no {dst_name!r}"
            outcome.findings.append(Finding(dst_name, sender, "names", message))
            entries.append(_Entry(dst_name, name, 0, 0, message))
            continue
        recv_numel = _numel(shapes[dst_name])
        division = 1 if data.numel() == recv_numel else plan.tp_num_mapping
        try:
            with _scope(tracer, dst_name, sender, "regroup"):
                # One-stage sync (equal tp) broadcasts the transformed tensors as they are.
                out = data
                if plan.tp_num_mapping > 1:
                    out = sync.regroup_params_to_sync(name, data, division, name in experts)
        except Exception as exc:
            finding = _finding(dst_name, sender, "regroup", exc)
            outcome.findings.append(finding)
            entries.append(_Entry(dst_name, name, 0, division, finding.message))
            continue
        entries.append(_Entry(dst_name, name, out.numel(), division, dtype=_dtype_name(out)))
        buffers.append(out.reshape(-1))
    if len(prepared) != len(dst_names):
        outcome.findings.append(
            Finding(
                "*",
                sender,
                "names",
                f"{len(prepared)} transformed parameters but {len(dst_names)} destination names",
            )
        )
    return entries, buffers


# ------------------------------------------------------------------ the wire


def _receive(coll, plan, group):
    """The receiving member's side of :func:`_transfer`: the manifest and data that came."""
    return _transfer(coll, plan, group, None, None, sender=False)


def _transfer(coll, plan, group, entries, buffers, *, sender: bool):
    """Send a pair's manifest, then the data of every good entry, bucket by bucket.

    Member 0 of the two-member group sends. ``plan.comm`` picks the data path:
    ``"broadcast"`` (the original's default) or ``"p2p"`` (its send/recv mode).
    """
    box = [entries if sender else None]
    coll.broadcast_object(box, 0, group)
    entries = box[0]
    good = [e for e in entries if not e.error]
    flat: list[torch.Tensor] = []
    for bucket in _buckets(good, plan.bucket_size_mb * 2**20):
        label = ", ".join(e.dst_name for e in bucket)
        if sender:
            payload = torch.cat([buffers.pop(0) for _ in bucket])
        else:
            payload = torch.empty(
                sum(e.numel for e in bucket), dtype=getattr(torch, bucket[0].dtype)
            )
        if plan.comm == "broadcast":
            coll.broadcast(payload, 0, group, label=label)
        elif sender:
            coll.send(payload, 1, group, label=label)
        else:
            coll.recv(payload, 0, group, label=label)
        flat.append(payload)
    return entries, flat


def _buckets(entries: list[_Entry], limit_bytes: float) -> Iterator[list[_Entry]]:
    """Consecutive entries of one dtype, up to ``limit_bytes`` each (as the original buckets)."""
    bucket: list[_Entry] = []
    size = 0
    for entry in entries:
        nbytes = entry.numel * getattr(torch, entry.dtype).itemsize
        if bucket and (size + nbytes > limit_bytes or entry.dtype != bucket[0].dtype):
            yield bucket
            bucket, size = [], 0
        bucket.append(entry)
        size += nbytes
    if bucket:
        yield bucket


# ------------------------------------------------------------------ inference side


def _receive_all(plan, coll, state, tracer, outcome) -> None:
    """Receive into staging buffers; commit to ``state`` only once every stage arrived.

    A peer dying or a collective timing out raises before the commit, so the
    rank's tensors keep their previous values.
    """
    staged: dict[str, torch.Tensor] = {}
    _stage_and_forward(plan, coll, state, staged, tracer, outcome)
    for name, data in staged.items():
        state[name].copy_(data)


def _stage_and_forward(plan, coll, state, staged, tracer, outcome) -> None:
    world = coll.world_rank
    held: dict[int, list[tuple[_Entry, torch.Tensor]]] = {}
    for src, dst in plan.stage1:
        if dst != world:
            continue
        entries, flat = _receive(coll, plan, pair_group("stage1", src, dst))
        for entry, data in _unpack(entries, flat):
            with _scope(tracer, entry.dst_name, world, "stage1"):
                chunks = _chunks(entry, data, plan.tp_num_mapping)
                if chunks is None:
                    outcome.findings.append(
                        Finding(
                            entry.dst_name,
                            world,
                            "stage1",
                            f"regrouped buffer has {entry.numel} elements, not divisible into"
                            f" {entry.tp_division} chunks",
                        )
                    )
                    continue
                for slot, chunk in enumerate(chunks):
                    held.setdefault(slot, []).append((entry, chunk))
                own = chunks[plan.dst_slot(world)]
                _write(state, staged, entry.dst_name, own, world, "stage1", outcome)
    for a, b in plan.stage2:
        if world == a:
            items = held.get(plan.dst_slot(b), [])
            entries = [
                _Entry(e.dst_name, e.src_name, c.numel(), 1, dtype=e.dtype) for e, c in items
            ]
            _transfer(
                coll,
                plan,
                pair_group("stage2", a, b),
                entries,
                [c for _, c in items],
                sender=True,
            )
        elif world == b:
            entries, flat = _receive(coll, plan, pair_group("stage2", a, b))
            for entry, data in _unpack(entries, flat):
                with _scope(tracer, entry.dst_name, world, "stage2"):
                    _write(state, staged, entry.dst_name, data, world, "stage2", outcome)


def _unpack(entries: list[_Entry], flat: list[torch.Tensor]):
    good = [e for e in entries if not e.error]
    payloads = iter(flat)
    payload, offset = None, 0
    for entry in good:
        if payload is None or offset + entry.numel > payload.numel():
            payload, offset = next(payloads), 0
        yield entry, payload[offset : offset + entry.numel]
        offset += entry.numel


def _chunks(entry: _Entry, data: torch.Tensor, tp_num_mapping: int) -> list[torch.Tensor] | None:
    """Cut a regrouped buffer as the receiver does: ``tp_division`` equal flat chunks."""
    if entry.tp_division <= 1:
        return [data] * tp_num_mapping
    if entry.numel % entry.tp_division:
        return None
    return list(data.chunk(entry.tp_division))


def _write(state, staged, name, data, world, stage, outcome) -> None:
    target = state.get(name)
    if target is None:
        outcome.findings.append(Finding(name, world, stage, "this vLLM rank has no such tensor"))
        return
    if target.numel() != data.numel():
        outcome.findings.append(
            Finding(
                name,
                world,
                stage,
                f"received {data.numel()} elements for a tensor of {target.numel()}"
                f" ({list(target.shape)})",
            )
        )
        return
    staged[name] = data.view(target.shape).clone()
    outcome.writes[name] = outcome.writes.get(name, 0) + 1


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _finding(param: str, rank: int, stage: str, exc: BaseException) -> Finding:
    return Finding(
        param,
        rank,
        stage,
        f"{type(exc).__name__}: {exc}",
        "".join(traceback.format_exception(exc)[-3:]),
    )


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
