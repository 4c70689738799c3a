"""A block's journey, and the regroup steps of one parameter, from a sync run's trace.

The trace records op names, arguments and shapes, never values. Replaying the
recorded data-moving ops (view, getitem, cat, chunk, ...) on a trainer shard's
provenance ids tells which ops carried which blocks, without running the
synchronizer again. Ops it cannot replay are listed as not replayed.

>>> from syncviz.run.inprocess import tiny_run
>>> result = tiny_run()
>>> key = "model.model.layers.0.self_attn.qkv_proj.weight"
>>> j = block_journey(result, key, 0)
>>> j.label, j.src_ranks, j.dst_ranks
('Q head 0', [0], [1])
>>> [s.text for s in param_steps(result, key)][0]
'trainer tp 0 (rank 0) regroup: view([16, 8], [8, 2, 8]) -> [8, 2, 8]'
"""

from __future__ import annotations

import functools
import math
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from syncviz.errors import SyncvizError
from syncviz.idset import IdSet, cells_meeting, merge_ranges
from syncviz.oracle import ParamLayout
from syncviz.provenance import Region, RegionMap, SymbolicTensor, as_symbolic, map_of, row_major
from syncviz.provenance.regions import map_work
from syncviz.ragged import ragged
from syncviz.run.values import FOREIGN_ID
from syncviz.trace.records import OpRecord, ParamTrace

if TYPE_CHECKING:
    from syncviz.run.result import SyncResult

QUIET_OPS = frozenset({"contiguous", "detach", "clone"})  # ops that do not move data
# Allocations: a buffer that a collective or an in-place op fills later; not a step.
ALLOC_OPS = frozenset({"empty_like", "zeros_like", "empty", "zeros", "new_empty", "new_zeros"})
# The order the flow runs them in: the routed-expert exchange feeds the regroup.
PHASE_ORDER = {"transform": 0, "routed_experts": 1, "regroup": 2, "stage1": 3, "stage2": 4}
GATHER_KINDS = frozenset({"all_gather", "allgather"})
ALLTOALL_KINDS = frozenset({"all_to_all", "alltoall"})


_NESTED_REF = re.compile(r"#\d+")  # a tensor inside an argument (an index tensor)


def op_words(op: OpRecord) -> str:
    """One recorded op as a person reads it: each tensor by its shape (the trace's tensor
    numbers and the ids' dtype mean nothing outside the trace), a tensor inside an
    argument as ``a tensor``.

    >>> from syncviz.trace.records import TensorRef
    >>> op = OpRecord(0, "chunk", [TensorRef(7, [8], "float64")], [2], {"dim": 0},
    ...     [TensorRef(8, [4], "float64"), TensorRef(9, [4], "float64")])
    >>> op_words(op)
    'chunk([8], 2, dim=0) -> [4], [4]'
    >>> op_words(OpRecord(1, "index_select", [TensorRef(3, [8, 4], "float64")], [0, "#4"]))
    'index_select([8, 4], 0, a tensor) -> None'
    """
    parts = [str(list(t.shape)) for t in op.inputs]
    parts += [_arg_words(a) for a in op.args]
    parts += [f"{k}={_arg_words(v)}" for k, v in op.kwargs.items()]
    outs = ", ".join(str(list(t.shape)) for t in op.outputs) or "None"
    return f"{op.op}({', '.join(parts)}) -> {outs}"


def _arg_words(arg: Any) -> str:
    if isinstance(arg, str) and _NESTED_REF.fullmatch(arg):
        return "a tensor"
    if isinstance(arg, list):
        return "[" + ", ".join(_arg_words(a) for a in arg) + "]"
    return repr(arg)


def blocks_words(param: ParamLayout, labels: Sequence[str]) -> str:
    """The blocks named by ``labels`` in words, in the parameter's block order, consecutive
    blocks of one unit folded into a range (``Q heads 0-7``) and every part of an expert
    into the expert (``experts 0-3``) as the layout words name them; labels it does not
    know last, as they are.

    >>> from syncviz.run.inprocess import tiny_run
    >>> layout = tiny_run().plan.layout
    >>> qkv = layout.param("model.model.layers.0.self_attn.qkv_proj.weight")
    >>> blocks_words(qkv, ["Q head 2", "K head 0", "Q head 0", "Q head 1", "V head 0"])
    'Q heads 0-2, K head 0, V head 0'
    """
    known = {b.label: b for b in param.blocks}
    order = {b.label: i for i, b in enumerate(param.blocks)}
    present = set(labels)
    parts: dict[tuple[str, int], list[str]] = {}  # an expert's parts: gate, up
    for b in param.blocks:
        if b.index is not None and b.part is not None:
            parts.setdefault((b.unit, b.index), []).append(b.label)
    runs: list[tuple[str, str | None, int, int] | str] = []  # (unit, part, first, last)
    for label in sorted(present, key=lambda x: (order.get(x, len(order)), x)):
        b, last = known.get(label), runs[-1] if runs else None
        if b is None or b.index is None:
            runs.append(label)
            continue
        part = b.part
        if part is not None and all(x in present for x in parts[(b.unit, b.index)]):
            part = None  # every part of it: the whole of it, as the layout words say
            if isinstance(last, tuple) and last[:2] == (b.unit, None) and last[3] == b.index:
                continue  # its other parts, said already
        if isinstance(last, tuple) and last[:2] == (b.unit, part) and last[3] + 1 == b.index:
            runs[-1] = (b.unit, part, last[2], b.index)
        else:
            runs.append((b.unit, part, b.index, b.index))
    out = []
    for run in runs:
        if isinstance(run, str):
            out.append(run)
            continue
        unit, part, first, last = run
        head = f"{unit} {first}" if first == last else f"{unit}s {first}-{last}"
        out.append(f"{head} {part}" if part else head)
    return ", ".join(out)


def carried_words(param: ParamLayout, step: TraceStep) -> str:
    """What a step's result carries of ``param``, block by block: whole blocks by name
    (:func:`blocks_words`), a block it carries in part as the block's rows it holds
    (``rows 0-3 of heads 0-3``; ``parts of rows`` where it holds only some columns of
    them); from its replayed ids' runs, no element read.

    >>> from syncviz.run.inprocess import tiny_run
    >>> result = tiny_run()
    >>> key = "model.model.layers.0.self_attn.o_proj.weight"
    >>> step = param_steps(result, key)[1]  # the first rank's half of the flat o_proj
    >>> step.text, carried_words(result.plan.layout.param(key), step)
    ('vLLM tp 0 (rank 1) stage1: view([32], [8, 4]) -> [8, 4]', 'rows 0-3 of heads 0-3')
    """
    if step.blocks is None or step.outputs is None:
        return "blocks not known (not replayed)"
    if not step.blocks:
        return "nothing of this parameter"
    held, wanted = step_ids(step.outputs), set(step.blocks)
    shape = tuple(param.global_shape)
    unit = "elements" if len(shape) == 1 else "rows"
    whole: list[str] = []
    parts: dict[str, list[str]] = {}  # the rows' words -> the blocks held at those rows
    for b in param.blocks:
        if b.label not in wanted:
            continue
        meets, inside = _block_lines(b.box, shape, held)
        if bool(inside.all()):
            whole.append(b.label)
        elif bool(meets.any()):
            rows = f"{unit} {_runs(meets, unit)}"
            rows = rows if bool(inside[meets].all()) else f"parts of {rows}"
            parts.setdefault(rows, []).append(b.label)
    out = [blocks_words(param, whole)] if whole else []
    out += [f"{rows} of {blocks_words(param, labels)}" for rows, labels in parts.items()]
    return "; ".join(out) or "nothing of this parameter"


def _block_lines(box, shape: tuple[int, ...], held: IdSet) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of a block's box (per element of a 1-D one), counted from the box's first:
    does ``held`` hold any of its ids, and all of them (a row of a 3-D box is its rows
    over the leading dim: an expert's rows)."""
    start, stop = tuple(box.start), tuple(box.stop)
    if len(shape) == 1:
        lo = torch.arange(start[0], stop[0], dtype=torch.int64)
        return held.meets_inside(lo, lo + 1)
    strides = row_major(shape)
    starts = torch.zeros((), dtype=torch.int64)
    for a, z, st in zip(start[:-1], stop[:-1], strides[:-1], strict=True):
        starts = starts[..., None] + torch.arange(a, z, dtype=torch.int64) * st
    meets, inside = held.meets_inside(starts + start[-1], starts + stop[-1])
    lead = tuple(range(meets.dim() - 1))  # every dim but the rows'
    if lead:
        meets, inside = meets.any(dim=lead), inside.all(dim=lead)
    return meets, inside


@dataclass(frozen=True)
class TraceStep:
    """One recorded data-moving op of a parameter on one rank.

    ``blocks`` names the blocks its outputs hold (replayed on provenance ids);
    None when the op could not be replayed. ``inputs``/``outputs`` are the
    replayed id tensors (None when not replayed):
    :class:`~syncviz.provenance.SymbolicTensor` maps of local ids (read them with
    :func:`step_ids`). ``where`` names its rank as ``check`` and the pictures do
    (:meth:`~syncviz.run.plan.SyncPlan.rank_name`).

    >>> TraceStep(0, "regroup", OpRecord(0, "view"), ("Q head 0",)).text
    'rank 0 regroup: view() -> None'
    """

    rank: int
    phase: str
    op: OpRecord
    blocks: tuple[str, ...] | None = None
    inputs: tuple[torch.Tensor, ...] | None = field(default=None, compare=False, repr=False)
    outputs: tuple[torch.Tensor, ...] | None = field(default=None, compare=False, repr=False)
    where: str = ""

    @property
    def who(self) -> str:
        """Its rank in words: ``where``, or ``rank N`` when that is not known."""
        return self.where or f"rank {self.rank}"

    @property
    def text(self) -> str:
        return f"{self.who} {self.phase}: {op_words(self.op)}"

    def holds(self, element: int) -> bool:
        """Whether its result holds global id ``element`` (False when not replayed).

        >>> TraceStep(0, "regroup", OpRecord(0, "view"), (), None, (torch.arange(4),)).holds(2)
        True
        """
        if self.outputs is None:
            return False
        return bool(step_ids(self.outputs).contains(torch.tensor([element]))[0])

    @property
    def shapes(self) -> str:
        """Input and output shapes, e.g. ``[16, 8] -> [4, 4, 8]``."""
        ins = ", ".join(str(t.shape) for t in self.op.inputs) or "-"
        outs = ", ".join(str(t.shape) for t in self.op.outputs) or "-"
        return f"{ins} -> {outs}"


@dataclass(frozen=True)
class PathStep:
    """One step of a block's path, as the journey picture draws it: where it is (``side``:
    ``trainer``, ``op`` on a rank, ``collective`` from a rank, ``vLLM``), which rank,
    which op, which rows (words; '' when the op's rows are not read); ``where`` names the
    rank as the panels do (:meth:`~syncviz.run.plan.SyncPlan.rank_name`).

    >>> PathStep("op", 0, "regroup: view", "rows 0-1").words
    'rank 0 | regroup: view | rows 0-1'
    >>> PathStep("op", 0, "regroup: view", "rows 0-1", "trainer tp 0 (rank 0)").words
    'trainer tp 0 (rank 0) | regroup: view | rows 0-1'
    """

    side: str
    rank: int
    op: str
    rows: str = ""
    where: str = field(default="", compare=False)

    @property
    def words(self) -> str:
        return " | ".join(x for x in (self.where or f"rank {self.rank}", self.op, self.rows) if x)


@dataclass
class Journey:
    """Where one block starts, what moved it, where it ends, and whether that is right.

    >>> j = Journey("Q head 0", ["src rank 0 rows 0-1"], [], ["dst rank 1 rows 0-1"], True)
    >>> print(j.text())
    Q head 0
    starts: src rank 0 rows 0-1
    moved by: (no recorded op)
    ends: dst rank 1 rows 0-1
    verdict: right (as the oracle expects)
    """

    label: str
    starts: list[str]
    moves: list[str]
    ends: list[str]
    ok: bool
    expected: list[str] = field(default_factory=list)
    src_ranks: list[int] = field(default_factory=list)
    dst_ranks: list[int] = field(default_factory=list)
    path: list[PathStep] = field(default_factory=list)

    def text(self) -> str:
        lines = [self.label]
        lines += [f"starts: {s}" for s in self.starts] or ["starts: (no trainer rank holds it)"]
        lines += [f"moved by: {m}" for m in self.moves] or ["moved by: (no recorded op)"]
        lines += [f"ends: {e}" for e in self.ends] or ["ends: (no vLLM rank holds it)"]
        if self.ok:
            lines.append("verdict: right (as the oracle expects)")
        else:
            lines.append("verdict: WRONG; the oracle expects it at:")
            lines += [f"  {e}" for e in self.expected]
        return "\n".join(lines)


# ---------------------------------------------------------------- replay


def _index(arg: Any) -> Any:
    """A recorded index argument back into a Python index (slices were [a, b, c])."""
    if isinstance(arg, list):
        if len(arg) == 3 and all(v is None or isinstance(v, int) for v in arg):
            return slice(*arg)
        return tuple(_index(a) for a in arg)
    if arg == "...":
        return Ellipsis
    if isinstance(arg, str):
        raise ValueError("index tensor")
    return arg


def _dims(args: list[Any]) -> list[int]:
    return list(args[0]) if len(args) == 1 and isinstance(args[0], list) else list(args)


def _apply(op: OpRecord, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Run one recorded op on id tensors; raises for ops it does not know."""
    x, args, kw = inputs[0], op.args, op.kwargs
    name = op.op
    if name in ("view", "reshape"):
        return [x.reshape(_dims(args))]
    if name in QUIET_OPS:
        return [x]
    if name == "getitem":
        return [x[_index(args[0])]]
    if name in ("cat", "concat", "concatenate"):
        dim = kw.get("dim", args[0] if args else 0)
        return [torch.cat(inputs, dim=dim)]
    if name == "chunk":
        return list(torch.chunk(x, args[0], dim=kw.get("dim", args[1] if len(args) > 1 else 0)))
    if name == "split":
        return list(torch.split(x, args[0], dim=kw.get("dim", args[1] if len(args) > 1 else 0)))
    if name in ("transpose", "swapaxes"):
        return [x.transpose(args[0], args[1])]
    if name == "permute":
        return [x.permute(_dims(args))]
    if name == "flatten":
        return [x.flatten(*args)]
    if name == "narrow":
        return [x.narrow(*args)]
    if name in ("squeeze", "unsqueeze"):
        return [getattr(x, name)(*args)]
    raise ValueError(f"op {name} is not replayed")


def _replay(pt: ParamTrace, bound: dict[int, torch.Tensor]) -> dict[int, list[torch.Tensor]]:
    """Outputs (id tensors) of each op of ``pt`` that could be replayed, by op index."""
    return _replay_io(pt, bound)[1]


def _replay_io(
    pt: ParamTrace, bound: dict[int, torch.Tensor]
) -> tuple[dict[int, list[torch.Tensor]], dict[int, list[torch.Tensor]]]:
    """Inputs and outputs (id tensors) of each op of ``pt`` that could be replayed."""
    values = dict(bound)
    ins: dict[int, list[torch.Tensor]] = {}
    out: dict[int, list[torch.Tensor]] = {}
    for op in pt.ops:
        if not op.inputs or any(t.ref not in values for t in op.inputs):
            continue
        try:
            results = _apply(op, [values[t.ref] for t in op.inputs])
        except Exception:  # an op or argument form it does not know: leave it unknown
            continue
        if len(results) != len(op.outputs):
            continue
        ins[op.index] = [values[t.ref] for t in op.inputs]
        for ref, tensor in zip(op.outputs, results, strict=True):
            values[ref.ref] = tensor
        out[op.index] = results
    return ins, out


def _bindings(result: SyncResult, param: ParamLayout, pt: ParamTrace) -> dict[int, torch.Tensor]:
    """Bind the scope's first input refs to the trainer shard of the same shape on its rank."""
    role = result.plan.roles[pt.rank] if pt.rank is not None else None
    if role is not None and role.side == "dst":
        return _receiver_bindings(result, param, pt)
    if role is None or role.side != "src":
        return {}
    shards = _role_shards(param, role)
    if pt.phase == "routed_experts":
        bound = _exchange_bindings(result, param, pt)
    else:  # what this rank's routed-expert exchange produced, replayed
        bound = _exchanged(result, param, pt.rank)
    return _bind_shards(pt, shards, bound)


def _role_shards(param: ParamLayout, role) -> list:
    """The trainer shards of ``param`` that a trainer rank of ``role`` holds."""
    return [s for s in param.src if _holds(role, s)]


def _holds(role, shard) -> bool:
    """Whether trainer rank ``role`` holds trainer shard ``shard``."""
    return (shard.pp, shard.tp) == (role.pp, role.tp) and shard.ep in (None, role.ep)


def _bind_shards(pt: ParamTrace, shards: list, bound: dict[int, torch.Tensor]) -> dict:
    """``bound``, plus each input the scope did not produce bound to the one shard of its
    shape; or, shaped [n, *shard] where the rank holds exactly n shards of one shape
    (local experts, stacked by an untraced transform), to their stack in layout order."""
    produced: set[int] = set()
    for op in pt.ops:
        for t in op.inputs:
            if t.ref in produced or t.ref in bound:
                continue
            same = [s for s in shards if list(s.shape) == list(t.shape)]
            if len(same) == 1:  # unambiguous: this input is that shard
                bound[t.ref] = _ids(same[0].index)
            elif _stacked(shards, t.shape):
                bound[t.ref] = torch.stack([_ids(s.index) for s in shards])
        produced.update(t.ref for t in op.outputs)
    return bound


def _stacked(shards: list, shape: list[int]) -> bool:
    """Is ``shape`` [n, *s] for n shards all of shape s?"""
    n = len(shards)
    return (
        n > 1
        and len(shape) > 1
        and shape[0] == n
        and all(list(s.shape) == list(shape[1:]) for s in shards)
    )


def _shard_ids(result: SyncResult, param: ParamLayout, world: int) -> torch.Tensor | None:
    """The ids of the trainer shard that world rank ``world`` holds, if exactly one."""
    role = result.plan.roles[world]
    if role.side != "src":
        return None
    found = _role_shards(param, role)
    return _ids(found[0].index) if len(found) == 1 else None


def _exchange_bindings(
    result: SyncResult, param: ParamLayout, pt: ParamTrace
) -> dict[int, torch.Tensor]:
    """The buffers a routed-expert exchange fills, each bound to what it holds where that
    has the buffer's size: an all-gather's buffer k holds the shard of the group's k-th
    rank; an all-to-all's receive buffer k what the group's k-th rank sent to this one,
    its send for this rank's place in the group.

    The trace lists an all-to-all's receive buffers only. A member's sends are read from
    how it allocated its own receive buffers, each ``empty_like`` the send of the same
    place (send i and receive i have one shape); a buffer allocated otherwise is left
    unbound, so what it feeds stays not replayed.
    """
    bound: dict[int, torch.Tensor] = {}
    nth = -1  # the all-to-all's number among this scope's all-to-alls
    for rec in pt.collectives:
        if rec.kind in ALLTOALL_KINDS:
            nth += 1
        if len(rec.tensors) != len(rec.ranks):
            continue
        if rec.kind in GATHER_KINDS:
            held = [_shard_ids(result, param, world) for world in rec.ranks]
        elif rec.kind in ALLTOALL_KINDS and pt.rank in rec.ranks:
            place = rec.ranks.index(pt.rank)
            held = [
                _alltoall_send(result, param, pt.param, member, nth, rec.group, place)
                for member in rec.ranks
            ]
        else:
            continue
        for ref, ids in zip(rec.tensors, held, strict=True):
            if ids is not None and ids.numel() == math.prod(ref.shape):
                bound[ref.ref] = ids.reshape(ref.shape)
    return bound


def _alltoall_send(
    result: SyncResult,
    param: ParamLayout,
    name: str | None,
    member: int,
    nth: int,
    group: str,
    place: int,
) -> torch.Tensor | None:
    """What ``member`` sent to group place ``place`` in its ``nth`` all-to-all of trainer
    tensor ``name`` (replayed from its shard), if its trace tells."""
    shards = _role_shards(param, result.plan.roles[member])
    for pt in _param_traces(result, param.key):
        if pt.rank != member or pt.phase != "routed_experts" or pt.param != name:
            continue
        recs = [rec for rec in pt.collectives if rec.kind in ALLTOALL_KINDS]
        if len(recs) <= nth or recs[nth].group != group or len(recs[nth].tensors) <= place:
            return None
        target = recs[nth].tensors[place].ref
        alloc = [op for op in pt.ops if op.op in ALLOC_OPS and op.inputs]
        like = [op.inputs[0].ref for op in alloc if any(t.ref == target for t in op.outputs)]
        if len(like) != 1:
            return None
        return _replayed_outputs(pt, _bind_shards(pt, shards, {})).get(like[0])
    return None


def _exchanged(result: SyncResult, param: ParamLayout, rank: int | None) -> dict[int, torch.Tensor]:
    """The results of ``rank``'s routed-expert exchange of this parameter (replayed), by ref:
    the regroup that follows reads them."""
    out: dict[int, torch.Tensor] = {}
    for pt in _param_traces(result, param.key):
        if pt.rank == rank and pt.phase == "routed_experts":
            out.update(_replayed_outputs(pt, _bindings(result, param, pt)))
    return out


def _replayed_outputs(pt: ParamTrace, bound: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    """The outputs of ``pt``'s ops that replay from ``bound``, by ref."""
    outs = _replay(pt, bound)
    return {
        ref.ref: t
        for op in pt.ops
        for ref, t in zip(op.outputs, outs.get(op.index, []), strict=False)
    }


SHAPE_ONLY_OPS = frozenset({"view", "reshape", "flatten", "contiguous", "detach", "clone"})


def _receiver_bindings(
    result: SyncResult, param: ParamLayout, pt: ParamTrace
) -> dict[int, torch.Tensor]:
    """A receiving rank's buffer: what its sender sent (the stage-1 sender's regroup
    result, or the chunk the stage-2 sender forwards), whatever the receiver then does
    with it; else, when its ops only reshape it into the vLLM tensor, the final
    tensor's ids flattened to the buffer's shape (it holds, in order, what the rank
    ends up holding).
    """
    first = pt.ops[0].inputs[0] if pt.ops and pt.ops[0].inputs else None
    if first is not None and pt.phase in ("stage1", "stage2"):
        payload = _stage1_payload if pt.phase == "stage1" else _stage2_payload
        sent = payload(result, param, pt.rank, math.prod(first.shape))
        if sent is not None:
            return {first.ref: sent.reshape(first.shape)}
    if first is None or any(op.op not in SHAPE_ONLY_OPS for op in pt.ops):
        return {}
    final = _held_ids(result, pt.rank, param.key)
    if final is None or final.numel() != math.prod(first.shape):
        return {}
    return {first.ref: final.reshape(first.shape)}


def _stage1_payload(
    result: SyncResult, param: ParamLayout, rank: int | None, numel: int
) -> torch.Tensor | None:
    """What the stage-1 sender of ``rank`` broadcast: the result of its last phase before
    the broadcast (regroup, else the routed-expert exchange; replayed) or its shard, when
    exactly one of them has the received buffer's size."""
    senders = [a for a, b in result.plan.stage1 if b == rank]
    if len(senders) != 1:
        return None
    by_phase: dict[int, list[torch.Tensor]] = {}
    for pt in _param_traces(result, param.key):
        if pt.rank == senders[0] and pt.phase not in ("stage1", "stage2"):
            values = _replayed_outputs(pt, _bindings(result, param, pt))
            got = [values[r] for r in pt.output_refs if r in values]
            by_phase.setdefault(PHASE_ORDER.get(pt.phase or "", 9), []).extend(got)
    found = by_phase[max(by_phase)] if by_phase else []
    if not found:
        found = [_ids(s.index) for s in _role_shards(param, result.plan.roles[senders[0]])]
    sized = [t for t in found if t.numel() == numel]
    return sized[0].reshape(-1).to(torch.int64) if len(sized) == 1 else None


def _stage2_payload(
    result: SyncResult, param: ParamLayout, rank: int | None, numel: int
) -> torch.Tensor | None:
    """What the stage-2 sender of ``rank`` forwarded: the chunk for ``rank``'s slot of its
    replayed stage-1 cut (an op with one output per slot), or the one replayed stage-1
    result of the received buffer's size that the sender does not keep."""
    plan = result.plan
    senders = [a for a, b in plan.stage2 if b == rank]
    if len(senders) != 1 or rank is None:
        return None
    slots = plan.tp_num_mapping
    cut, sized = [], []
    for pt in _param_traces(result, param.key):
        if pt.rank != senders[0] or pt.phase != "stage1":
            continue
        outs = _replay(pt, _bindings(result, param, pt))
        for op in pt.ops:
            got = outs.get(op.index, [])
            if len(op.outputs) == slots > 1 and len(got) == slots:
                cut.append(got[plan.dst_slot(rank)])
            sized += [t for t in got if t.numel() == numel]
    cut = [t for t in cut if t.numel() == numel]
    if len(cut) == 1:
        return cut[0].reshape(-1).to(torch.int64)
    kept = _held_ids(result, senders[0], param.key)
    if kept is not None:
        held = step_ids([kept])
        sized = [t for t in sized if not held.covers(step_ids([t]))]
    distinct = {_value_key(t): t for t in sized}
    return next(iter(distinct.values())).reshape(-1).to(torch.int64) if len(distinct) == 1 else None


def _held_ids(result: SyncResult, world: int | None, key: str) -> torch.Tensor | None:
    """What vLLM rank ``world`` holds of ``key`` as flat local ids; None when it holds none."""
    if getattr(result, "local_ids", None) is None:
        return None
    try:
        return _local(result, world, key).reshape(-1)
    except (StopIteration, KeyError):  # this rank does not hold the parameter
        return None


# ---------------------------------------------------------------- ids as maps


def _ids(index) -> torch.Tensor:
    """The local ids of an oracle map, as a tensor."""
    return SymbolicTensor.from_map(index, dtype=torch.int64)


def _local(result: SyncResult, world: int | None, key: str) -> torch.Tensor:
    """What vLLM rank ``world`` holds of ``key``, as local ids (int64, a map: model-wide
    ids shifted, other parameters' ids -3)."""
    param = result.plan.layout.param(key)
    raw = result.dst_tensors[world][result.name_on(param, world)]
    base, numel = result.plan.id_base[key], math.prod(param.global_shape)
    m = map_of(raw)
    kept = (id(m), base, numel)  # the map itself is kept: its id stays its own
    hit = _locals.get(kept)
    if hit is None or hit[0] is not m:
        hit = _locals[kept] = (m, local_map(m, base, numel))
        while len(_locals) > LOCALS_KEPT:
            _locals.popitem(last=False)
    _locals.move_to_end(kept)
    return SymbolicTensor.from_map(hit[1], dtype=torch.int64)


# Local maps of the last vLLM tensors read: every block's journey of a parameter reads
# every rank's (thousands of regions each at real sizes), the same for each block.
LOCALS_KEPT = 64
_locals: OrderedDict[tuple[int, int, int], tuple[RegionMap, RegionMap]] = OrderedDict()


def local_map(m: RegionMap, base: int, numel: int) -> RegionMap:
    """Model-wide ids ``m`` as ids local to a parameter whose ids are ``base .. base +
    numel - 1``, as :func:`~syncviz.run.values.to_local_ids` reads them: markers below 0
    kept, any other id outside the parameter -3.

    Every region is placed at once from its lowest and highest id (a real-size map is
    thousands of regions); one that is partly the parameter's is halved along its
    longest dim until each part is one or the other.

    >>> m = RegionMap.affine((2, 4), 98, (4, 1))  # ids 98..105; the parameter has 100..103
    >>> local_map(m, 100, 4).materialize().tolist()
    [[-3.0, -3.0, 0.0, 1.0], [2.0, 3.0, -3.0, -3.0]]
    """
    regions = m.regions
    if not regions:
        return RegionMap(m.shape, [])
    kinds = _kinds(regions, base, numel)
    if all(k == 1 for k in kinds):
        return _shifted_local(m, base)
    out: list[Region] = []
    while regions:
        split: list[Region] = []
        for r, k in zip(regions, kinds, strict=True):
            if k == 1:
                out.append(Region(r.start, r.stop, r.offset - base, r.strides))
            elif k == 2:
                out.append(Region(r.start, r.stop, FOREIGN_ID, (0,) * len(r.strides)))
            elif k == 3:
                out.append(r)
            else:
                split += _halves(r)
        regions = split
        kinds = _kinds(regions, base, numel) if regions else []
    return RegionMap(m.shape, out)


def _kinds(regions: Sequence[Region], base: int, numel: int) -> list[int]:
    """Per region, from its lowest and highest id: 1 all the parameter's, 2 all another's,
    3 a marker (padding, unwritten, another's: kept, as to_local_ids does), 0 partly the
    parameter's."""
    low, high = _id_spans(regions)
    marker = high < 0
    inside = ~marker & (low >= base) & (high < base + numel)
    foreign = ~marker & ~inside & (low >= 0) & ((high < base) | (low >= base + numel))
    kind = inside.to(torch.int8) + 2 * foreign.to(torch.int8) + 3 * marker.to(torch.int8)
    return kind.tolist()


def _halves(r: Region) -> list[Region]:
    """``r`` cut in two along its longest dim."""
    ext = r.extents
    d = max(range(len(ext)), key=lambda i: ext[i])
    mid = r.start[d] + ext[d] // 2
    first_stop = (*r.stop[:d], mid, *r.stop[d + 1 :])
    second_start = (*r.start[:d], mid, *r.start[d + 1 :])
    shift = r.strides[d] * (mid - r.start[d])
    return [
        Region(r.start, first_stop, r.offset, r.strides),
        Region(second_start, r.stop, r.offset + shift, r.strides),
    ]


LOCAL_KEPT = 16  # local forms remembered by their structure (see _shifted_local)
_local_forms: OrderedDict[tuple, tuple[Region, ...]] = OrderedDict()


def _shifted_local(m: RegionMap, base: int) -> RegionMap:
    """``m`` as local ids when every region is the parameter's: every id less ``base``.

    Its regions are then merged anew (as :class:`~syncviz.provenance.RegionMap` merges
    them), and that merging reads offsets only by their differences and their order: maps
    whose regions differ by one constant in every offset merge alike. Every vLLM rank of
    a row-parallel weight, and every layer of one kind, holds such a map (thousands of
    regions at real sizes): the merged form of the first is kept and shifted for the others.
    """
    regions = m.regions
    first = regions[0].offset
    key = (m.shape, tuple((r.start, r.stop, r.strides, r.offset - first) for r in regions))
    kept = _local_forms.get(key)
    if kept is None:
        relative = [Region(r.start, r.stop, r.offset - first, r.strides) for r in regions]
        kept = _local_forms[key] = RegionMap(m.shape, relative).regions
        while len(_local_forms) > LOCAL_KEPT:
            _local_forms.popitem(last=False)
    _local_forms.move_to_end(key)
    shift = first - base
    out = [Region(r.start, r.stop, r.offset + shift, r.strides) for r in kept]
    return RegionMap(m.shape, out, merge=False)


def _id_spans(regions: Sequence[Region]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per region its lowest and highest value (int64), all regions at once."""
    offset = torch.tensor([r.offset for r in regions], dtype=torch.float64).to(torch.int64)
    strides = torch.tensor([r.strides for r in regions], dtype=torch.int64)
    last = torch.tensor([r.stop for r in regions], dtype=torch.int64) - torch.tensor(
        [r.start for r in regions], dtype=torch.int64
    )
    moves = strides.reshape(len(regions), -1) * (last.reshape(len(regions), -1) - 1)
    return offset + moves.clamp(max=0).sum(1), offset + moves.clamp(min=0).sum(1)


def step_ids(tensors) -> IdSet:
    """The non-negative ids some step tensors hold, as a set (a real tensor, e.g. an
    index a replayed op made, is compacted first).

    >>> step_ids([torch.tensor([[3, 4], [-1, 9]])]).lo.tolist()
    [3, 9]
    """
    return IdSet.of([_map(t) for t in tensors])


def _map(t: torch.Tensor) -> RegionMap:
    return as_symbolic(t).region_map()


def _value_key(t: torch.Tensor):
    """What tells two replayed tensors' values apart: their flat map."""
    flat = _map(t).reshape((t.numel(),))
    return tuple(sorted((r.start, r.stop, r.offset, r.strides) for r in flat.regions))


class _BlockRuns:
    """Which block each global id is in: every block's ids as runs of consecutive global
    ids (starts, ends, block index), built when first asked."""

    def __init__(self, param: ParamLayout) -> None:
        self.param = param

    @functools.cached_property
    def runs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        strides = row_major(self.param.global_shape)
        los, his, which = [], [], []
        for i, block in enumerate(self.param.blocks):
            box = block.box
            ext = tuple(b - a for a, b in zip(box.start, box.stop, strict=True))
            offset = sum(a * s for a, s in zip(box.start, strides, strict=True))
            got = IdSet.of([RegionMap.affine(ext, offset, strides)])
            los.append(got.lo)
            his.append(got.hi)
            which.append(torch.full(got.lo.shape, i, dtype=torch.int64))
        return torch.cat(los), torch.cat(his), torch.cat(which)

    def labels(self, t: torch.Tensor) -> tuple[str, ...]:
        """The labels of the blocks some ids of step tensor ``t`` belong to, in block order."""
        lo, hi, which = self.runs
        found = torch.unique(which[step_ids([t]).meets(lo, hi)]).tolist()
        return tuple(self.param.blocks[i].label for i in found)


def _param_traces(result: SyncResult, key: str) -> list[ParamTrace]:
    """The scopes of ``key``: its own, and the routed-expert exchanges of its trainer
    tensors (recorded under the trainer's name)."""
    if result.trace is None:
        return []
    try:
        trainer = {s.name for s in result.plan.layout.param(key).src}
    except SyncvizError:  # a key this layout does not have: its own scopes only
        trainer = set()
    traces = [
        pt
        for pt in result.trace.params
        if pt.rank is not None
        and (pt.param == key or (pt.phase == "routed_experts" and pt.param in trainer))
    ]
    return sorted(traces, key=lambda pt: (PHASE_ORDER.get(pt.phase or "", 9), pt.rank))


def step_count(result: SyncResult, key: str) -> int:
    """How many steps :func:`param_steps` gives for ``key``, read from the trace without
    replaying anything.

    >>> from syncviz.run.inprocess import tiny_run
    >>> result = tiny_run()
    >>> key = "model.model.layers.0.self_attn.qkv_proj.weight"
    >>> step_count(result, key) == len(param_steps(result, key))
    True
    """
    return sum(_is_step(op) for pt in _param_traces(result, key) for op in pt.ops)


def _is_step(op: OpRecord) -> bool:
    return op.op not in QUIET_OPS and op.op not in ALLOC_OPS


@map_work()
def param_steps(result: SyncResult, key: str) -> list[TraceStep]:
    """Every recorded data-moving op of parameter ``key``, rank by rank, phase by phase."""
    param = result.plan.layout.param(key)
    table = _BlockRuns(param)
    steps = []
    for pt in _param_traces(result, key):
        ins, replayed = _replay_io(pt, _bindings(result, param, pt))
        for op in pt.ops:
            if not _is_step(op):
                continue
            outs = replayed.get(op.index)
            blocks = None
            if outs is not None:
                blocks = tuple(dict.fromkeys(b for o in outs for b in table.labels(o)))
            inputs = tuple(ins[op.index]) if op.index in ins else None
            outputs = tuple(outs) if outs is not None else None
            rank = pt.rank or 0
            where = result.plan.rank_name(rank)
            steps.append(TraceStep(rank, pt.phase or "", op, blocks, inputs, outputs, where))
    return steps


# ---------------------------------------------------------------- journey


def _runs(flags: torch.Tensor, unit: str = "rows") -> str:
    """Indices where ``flags`` is true as ranges a person reads: consecutive ones as
    ``0-3``, evenly spaced ones as ``0-4094 step 2 (every other row)``.

    >>> _runs(torch.tensor([1, 1, 0, 0, 1, 0]))
    '0-1, 4'
    >>> _runs(torch.arange(4096) % 2 == 0)
    '0-4094 step 2 (every other row)'
    >>> _runs(torch.arange(12) % 3 == 1, "experts")
    '1-10 step 3 (every 3rd expert)'
    """
    idx = torch.nonzero(flags).flatten().tolist()
    runs: list[list[int]] = []  # [first, last, step]
    for i in idx:
        if runs and runs[-1][2] in (0, i - runs[-1][1]):
            runs[-1][2] = i - runs[-1][1]
            runs[-1][1] = i
        elif runs and runs[-1][2] > 1 and runs[-1][0] + runs[-1][2] == runs[-1][1]:
            # two points only: keep the second for a new run, as "a, b" reads better
            first = runs[-1][1]
            runs[-1][1], runs[-1][2] = runs[-1][0], 0
            runs.append([first, i, i - first])
        else:
            runs.append([i, i, 0])
    out = []
    for a, b, step in runs:
        if a == b:
            out.append(str(a))
        elif step == 1:
            out.append(f"{a}-{b}")
        elif b == a + step:
            out += [str(a), str(b)]
        else:
            out.append(f"{a}-{b} step {step} ({_every(step, unit)})")
    return ", ".join(out)


def _every(step: int, unit: str) -> str:
    """``every other row``, ``every 3rd expert``, ``every 8th element``."""
    one = unit.removesuffix("s")
    if step == 2:
        return f"every other {one}"
    suffix = "th" if 10 <= step % 100 < 20 else {1: "st", 2: "nd", 3: "rd"}.get(step % 10, "th")
    return f"every {step}{suffix} {one}"


def where_in_map(
    m: RegionMap, box, shape: tuple[int, ...], unit: str | None = None
) -> tuple[str, torch.Tensor] | None:
    """Which rows (experts, elements) hold any id of
    ``box``, and per row whether it does (rows, not elements), from the map's regions
    (:func:`rows_meeting`), no id materialized.

    >>> m = RegionMap.affine((4, 4), 0, (4, 1)).slice(0, 1, 4)  # rows 1-3 of a [4, 4]
    >>> from syncviz.oracle.index import Box
    >>> where_in_map(m, Box((2, 0), (4, 2)), (4, 4))[0]
    'rows 1-2'
    """
    ids = IdSet.of_box(box.start, box.stop, shape)
    dims = len(m.shape)
    if dims == 1:
        flags = cells_meeting(m.unsqueeze(0), (1, 1), ids).reshape(-1)
    else:
        grid = m if dims == 2 else m.reshape((m.shape[0], math.prod(m.shape[1:])))
        flags = rows_meeting(grid, ids)
    if not bool(flags.any()):
        return None
    unit = unit or {1: "elements", 2: "rows", 3: "experts"}.get(dims, "rows")
    return f"{unit} {_runs(flags, unit)}", flags


LINES_AT_ONCE = 1 << 21  # lines of a map asked of an id set at once (else as cells are)


def rows_meeting(grid: RegionMap, ids: IdSet) -> torch.Tensor:
    """Per row of a 2-D map: does any of its elements hold an id of ``ids``.

    A region whose ids run along its rows one by one (or stay put) holds one interval of
    ids per row: all such rows of all regions are asked at once. Other regions (and a map
    of more than ``LINES_AT_ONCE`` such rows) are asked as
    :func:`~syncviz.idset.cells_meeting` asks them, one cell per row: both read every
    region exactly, so the answer is the same.

    >>> m = RegionMap.affine((4, 4), 0, (4, 1)).slice(0, 1, 4)  # rows 1-3 of a [4, 4]
    >>> rows_meeting(m, IdSet.of_box((2, 0), (4, 2), (4, 4))).tolist()
    [False, True, True]
    """
    rows, cols = grid.shape
    lines, other = [], []
    for r in grid.regions:
        sr, sc = r.strides
        if sc in (0, 1):
            if sc or sr or r.offset >= 0:  # a constant below 0 is a marker: no id
                width = r.stop[1] - r.start[1]
                lines.append((r.start[0], r.stop[0], width, int(r.offset), sr, sc))
        else:
            other.append(r)
    if sum(b - a for a, b, *_ in lines) > LINES_AT_ONCE:
        lines, other = [], list(grid.regions)
    if other:
        cell = (1, max(1, cols))
        flags = cells_meeting(RegionMap(grid.shape, other, merge=False), cell, ids).reshape(-1)
    else:
        flags = torch.zeros(rows, dtype=torch.bool)
    if lines and not ids.empty:
        t = torch.tensor(lines, dtype=torch.int64)
        r0, r1, width, first, sr, sc = t.unbind(1)
        which, k = ragged(r1 - r0)
        lo = first[which] + k * sr[which]
        hit = ids.meets(lo, lo + width[which] * sc[which] + (1 - sc[which]))
        flags[(r0[which] + k)[hit]] = True
    return flags


SMALL_OVERLAP = 1 << 16  # elements of an overlap read one by one where two maps may agree


def maps_agree_on(got: RegionMap, want: RegionMap, box, shape: tuple[int, ...]) -> bool:
    """Whether ``got`` equals ``want`` (maps of local ids, one shape) at every element where
    either holds an id of ``box``: the journey's verdict, from the maps.

    Each overlap of a ``got`` region with a ``want`` region is one affine function minus
    another: zero throughout (right), nowhere (wrong wherever either side holds the
    block: asked of their id sets), or on one line, where an overlap of at most
    ``SMALL_OVERLAP`` elements is read element by element and a bigger one counts as
    wrong wherever it touches the block.

    >>> from syncviz.oracle.index import Box
    >>> want = RegionMap.affine((2, 4), 0, (4, 1))
    >>> got = RegionMap.cat([want.slice(0, 0, 1), RegionMap.constant((1, 4), -2)], 0)
    >>> maps_agree_on(got, want, Box((0, 0), (1, 4)), (2, 4)), maps_agree_on(
    ...     got, want, Box((1, 0), (2, 4)), (2, 4))
    (True, False)
    """
    ids = IdSet.of_box(box.start, box.stop, shape)
    sides: list[Region] = []  # both sides of every overlap where the two differ somewhere
    reads: dict[tuple[int, ...], list[tuple]] = {}  # small overlaps to read, by their extents
    for g in got.regions:
        for w in want.regions:
            lo = tuple(max(a, b) for a, b in zip(g.start, w.start, strict=True))
            hi = tuple(min(a, b) for a, b in zip(g.stop, w.stop, strict=True))
            if any(a >= b for a, b in zip(lo, hi, strict=True)):
                continue
            gv, wv = g.value_at(lo), w.value_at(lo)
            moves = [
                (gs - ws) * (b - a - 1)
                for gs, ws, a, b in zip(g.strides, w.strides, lo, hi, strict=True)
            ]
            if gv == wv and not any(moves):
                continue  # the same ids throughout
            low = gv - wv + sum(x for x in moves if x < 0)
            high = gv - wv + sum(x for x in moves if x > 0)
            ext = tuple(b - a for a, b in zip(lo, hi, strict=True))
            if low <= 0 <= high and math.prod(ext) <= SMALL_OVERLAP:  # may agree on a line
                reads.setdefault(ext, []).append((gv, g.strides, wv, w.strides))
                continue
            sides += [Region(lo, hi, gv, g.strides), Region(lo, hi, wv, w.strides)]
    if any(_differ_on(ext, overlaps, ids) for ext, overlaps in reads.items()):
        return False
    if not sides:
        return True
    touched = IdSet.of([RegionMap(got.shape, sides, merge=False)])  # the ids, not a partition
    return not bool(touched.meets(ids.lo, ids.hi).any())


READ_AT_ONCE = 1 << 22  # elements of small overlaps read at once


def _differ_on(ext: tuple[int, ...], overlaps: list[tuple], ids: IdSet) -> bool:
    """Whether any of some overlaps of extents ``ext`` (each: the got side's value at its
    start and strides, the wanted side's) differs at an element where either side holds an
    id of ``ids``: every element read, overlaps of one size side by side."""
    numel = math.prod(ext)
    coords = torch.zeros((0, 1), dtype=torch.int64)  # per dim, each element's coordinate
    if ext:
        grid = torch.cartesian_prod(*(torch.arange(n, dtype=torch.int64) for n in ext))
        coords = grid.reshape(numel, len(ext)).t()
    per = max(1, READ_AT_ONCE // numel)
    for i in range(0, len(overlaps), per):
        part = overlaps[i : i + per]
        sides = []
        for at, steps in ((0, 1), (2, 3)):
            first = torch.tensor([int(o[at]) for o in part], dtype=torch.int64)
            strides = torch.tensor([o[steps] for o in part], dtype=torch.int64)
            sides.append(first[:, None] + strides.reshape(len(part), -1) @ coords)
        a, b = sides
        if bool(((ids.contains(a) | ids.contains(b)) & (a != b)).any()):
            return True
    return False


@map_work()
def block_journey(result: SyncResult, key: str, block: int) -> Journey:
    """The journey of block number ``block`` (an index into the parameter's blocks)."""
    plan = result.plan
    param = plan.layout.param(key)
    chosen = param.blocks[block]
    box, shape = chosen.box, tuple(param.global_shape)
    starts, src_ranks, path = [], [], []
    for shard in param.src:  # every answer comes from maps, no id materialized
        found = where_in_map(shard.index, box, shape)
        if found is None:
            continue
        for role in plan.roles:
            if role.side == "src" and _holds(role, shard):
                if role.world not in src_ranks:
                    src_ranks.append(role.world)
                where = plan.rank_name(role.world)
                starts.append(f"{where}: {found[0]} of {shard.name} {list(shard.shape)}")
                path.append(PathStep("trainer", role.world, "holds", found[0], where))
    moves = _op_moves(result, param, src_ranks, chosen.label, path, box, shape)
    ends, expected, dst_ranks, ok, arrived = [], [], [], True, []
    for t in param.dst:
        world = next(
            r.world for r in plan.roles if r.side == "dst" and (r.pp, r.tp) == (t.pp, t.tp)
        )
        got_map, want_map = map_of(_local(result, world, key)), t.index
        held, should = where_in_map(got_map, box, shape), where_in_map(want_map, box, shape)
        if held is not None:
            dst_ranks.append(world)
            where = plan.rank_name(world)
            ends.append(f"{where}: {held[0]} of {t.name}")
            arrived.append(PathStep("vLLM", world, "holds", held[0], where))
        if should is not None:
            expected.append(f"{plan.rank_name(world)}: {should[0]}")
        if (held is None) != (should is None):
            ok = False
        elif held is not None and should is not None:
            ok = ok and maps_agree_on(got_map, want_map, box, shape)
    moves += _collective_moves(result, key, src_ranks, dst_ranks, path)
    path += arrived
    return Journey(chosen.label, starts, moves, ends, ok, expected, src_ranks, dst_ranks, path)


def _op_moves(result, param, src_ranks, label, path, box, shape) -> list[str]:
    """The recorded ops on the block's trainer ranks that carry it (words), each also a
    step of ``path`` with the rows of its first result that hold the block.

    An op carries the block when its results hold an id of a block labelled ``label``:
    asked of those blocks' ids alone, not of every block's."""
    full = tuple(param.global_shape)
    chosen = [IdSet.of_box(b.box.start, b.box.stop, full) for b in param.blocks if b.label == label]
    ids = merge_ranges([s.lo for s in chosen], [s.hi for s in chosen])
    moves = []
    for pt in _param_traces(result, param.key):
        if pt.rank not in src_ranks:
            continue
        who = result.plan.rank_name(pt.rank)
        replayed = _replay(pt, _bindings(result, param, pt))
        for op in pt.ops:
            if op.op in QUIET_OPS:
                continue
            outs = replayed.get(op.index)
            if outs is None:
                moves.append(f"{who} {pt.phase}: {op_words(op)} (not replayed)")
                done = f"{pt.phase}: {op.op} (not replayed)"
                path.append(PathStep("op", pt.rank, done, where=who))
            elif any(_holds_any(o, ids) for o in outs):
                moves.append(f"{who} {pt.phase}: {op_words(op)}")
                held = next((w for o in outs if (w := _rows_holding(o, box, shape))), "")
                path.append(PathStep("op", pt.rank, f"{pt.phase}: {op.op}", held, who))
    return moves


def _holds_any(t: torch.Tensor, ids: IdSet) -> bool:
    """Whether a replayed tensor holds any id of ``ids``. A lazy reshape holds the ids of
    its segments (its order aside): they are asked, its own regions are not made."""
    m = _map(t)
    held = IdSet.of(list(m.segments))
    return bool(ids.meets(held.lo, held.hi).any())


def _rows_holding(t: torch.Tensor, box, shape: tuple[int, ...]) -> str:
    """Words for the rows (experts, elements) of a replayed tensor holding ids of ``box``
    ('' when none), from its map (:func:`where_in_map`)."""
    found = where_in_map(_map(t), box, shape, unit="rows")
    return f"{found[0]} of {list(t.shape)}" if found is not None else ""


def sent_records(result: SyncResult) -> list:
    """Every recorded collective once, as its sender (with none, its first rank) recorded it.

    >>> from syncviz.run.inprocess import tiny_run
    >>> sorted({(r.kind, _sender(r)) for r in sent_records(tiny_run())})
    [('broadcast', 0), ('broadcast', 1)]
    """
    if result.trace is None:
        return []
    records = list(result.trace.collectives)
    for pt in result.trace.params:
        records += pt.collectives
    return [rec for rec in records if rec.rank is None or rec.rank == _sender(rec)]


def _sender(rec) -> int:
    return rec.src if rec.src is not None else min(rec.ranks)


def _collective_moves(result, key, src_ranks, dst_ranks, path) -> list[str]:
    """Collectives carrying this parameter out of the ranks that hold the block (words;
    each also a step of ``path``)."""
    plan = result.plan
    holders, moves = set(src_ranks), []
    records = sent_records(result)
    for rec in sorted(records, key=lambda r: (r.group.split(":")[0] != "stage1", r.index)):
        sender = _sender(rec)
        if key not in (rec.label or "").split(", ") or sender not in holders:
            continue
        others = [r for r in rec.ranks if r != sender]
        by, to_words = (
            plan.rank_name(sender),
            ", ".join(plan.rank_name(r) for r in others),
        )
        moves.append(f"{rec.kind} from {by} to {to_words} (group {rec.group})")
        path.append(PathStep("collective", sender, f"{rec.kind} to {to_words}", where=by))
        holders.update(rec.ranks)
    for pt in _param_traces(result, key):
        if pt.rank in dst_ranks and pt.phase in ("stage1", "stage2"):
            for op in pt.ops:
                if op.op not in QUIET_OPS:
                    who = plan.rank_name(pt.rank)
                    moves.append(f"{who} {pt.phase}: {op_words(op)}")
                    path.append(PathStep("op", pt.rank, f"{pt.phase}: {op.op}", where=who))
    return moves
