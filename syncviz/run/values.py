"""What the trainer shards hold (provenance ids, or real random weights), and how a
destination tensor is read back: the one home of the id sentinels and their decoding,
for the checker and the diagrams alike.

With ids every element says where it came from (its model-wide id,
``plan.id_base[key]`` + its index in the global tensor). With random weights the
same flow moves real float32 values; the expected destination values are the
global tensor read at the oracle's ids, so the comparison is bit for bit. Read
back with :func:`to_local_ids`, every element is an id local to one parameter or
one of ``PADDING_ID``, ``UNWRITTEN_ID`` and ``FOREIGN_ID``.

>>> import torch
>>> from syncviz.oracle import whole_map
>>> weights = global_weights("w", (2, 3), seed=0)
>>> torch.equal(take(weights, whole_map((2, 3)).ids()), weights)
True
"""

from __future__ import annotations

import math
import zlib
from typing import TYPE_CHECKING

import torch

from syncviz.errors import SyncvizError
from syncviz.oracle.index import PAD_ID, UNKNOWN_ID
from syncviz.provenance import as_symbolic

if TYPE_CHECKING:  # the plan and the layout are only read here
    from syncviz.oracle import ParamLayout
    from syncviz.run.plan import SyncPlan

# vLLM's padding rows (its vocab padded to a multiple of 64).
PADDING_ID = float(PAD_ID)
# A destination element nobody wrote keeps this value.
UNWRITTEN_ID = -2.0
# An element that is not from the parameter being checked (read back as a local id).
FOREIGN_ID = float(UNKNOWN_ID)


def global_weights(key: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """The whole (unsharded) float32 weight of parameter ``key``, the same on every process.

    Values are distinct odd multiples of a power of two, in random order and
    roughly uniform in [-1, 1]: exact in float32 (for up to 2**23 elements),
    never zero (zero marks padding) and never equal, so a received value names
    exactly one global element.

    >>> w = global_weights("w", (4, 8), seed=1)
    >>> w.unique().numel(), bool((w != 0).all()), bool(w.abs().max() <= 1)
    (32, True, True)
    """
    numel = math.prod(shape)
    if numel > 2**23:
        raise SyncvizError(
            f"random weights for {key} need {numel} distinct float32 values (more than 2**23)",
            fix="use values='ids' or a scaled spec (spec.scaled()) for real-weight runs",
        )
    generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key.encode()))
    odd = 2 * torch.randperm(numel, generator=generator) - (numel - 1)  # distinct, odd
    scale = 2.0 ** -max(0, math.ceil(math.log2(numel)))
    return (odd.to(torch.float32) * scale).view(shape)


def take(weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``weights`` read at global ``ids`` (shape of ``ids``); padding (-1) reads as zero."""
    flat = weights.reshape(-1)
    out = flat[ids.clamp(min=0).reshape(-1)].view(ids.shape).clone()
    out[ids < 0] = 0.0
    return out


def unwritten(shape: tuple[int, ...], values: str) -> torch.Tensor:
    """A destination tensor before the sync: ``UNWRITTEN_ID`` for ids, NaN for weights."""
    if values == "ids":
        return torch.full(shape, UNWRITTEN_ID, dtype=torch.float64)
    return torch.full(shape, float("nan"), dtype=torch.float32)


def ids_of_values(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Turn received float32 weights back into global ids (float64), bit for bit.

    Each value is looked up among the global tensor's values: an exact match
    gives its id; 0.0 gives -1 (padding); NaN stays unwritten; any other value
    (a value the sync made up) gives -3. Random weights are distinct, so the
    lookup is exact, and the checker can then describe blocks as it does for ids.

    >>> w = torch.tensor([0.5, -1.0, 2.0])
    >>> ids_of_values(w, torch.tensor([2.0, 0.5, 0.0, float("nan"), 7.0])).tolist()
    [2.0, 0.0, -1.0, -2.0, -3.0]
    """
    flat = weights.reshape(-1)
    ordered, order = flat.sort()
    v = values.reshape(-1).to(flat.dtype)
    pos = torch.searchsorted(ordered, v).clamp(max=flat.numel() - 1)
    found = ordered[pos] == v
    ids = torch.where(
        found, order[pos].to(torch.float64), torch.full_like(v, FOREIGN_ID, dtype=torch.float64)
    )
    ids[v == 0] = PADDING_ID
    ids[v.isnan()] = UNWRITTEN_ID
    return ids.view(values.shape)


def held_ids(
    plan: SyncPlan, world: int, tensors: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """A rank's tensors as maps of model-wide ids, whatever the run moved.

    Maps stay as they are; real ids are compacted; random weights are first read
    back as ids of the parameter each tensor belongs to (a value that is not
    one of them: -3). The result of every run holds these maps only.
    """
    out: dict[str, torch.Tensor] = {}
    params = None
    for name, t in tensors.items():
        if plan.values == "random":  # random weights only ever travel as real tensors
            params = params or _params_by_name(plan, world)
            param = params[name]
            local = ids_of_values(global_weights(param.key, param.global_shape, plan.seed), t)
            t = torch.where(local >= 0, local + plan.id_base[param.key], local)
        out[name] = as_symbolic(t)
    return out


def _params_by_name(plan: SyncPlan, world: int) -> dict[str, ParamLayout]:
    role = plan.roles[world]
    names = {}
    for param in plan.layout:
        if role.side == "dst":
            names.update({t.name: param for t in param.dst if (t.pp, t.tp) == (role.pp, role.tp)})
        else:
            names.update({s.name: param for s in param.src})
    return names


def to_local_ids(plan: SyncPlan, param: ParamLayout, values: torch.Tensor) -> torch.Tensor:
    """Materialized model-wide ids as ids local to ``param`` (float64), or the markers:
    the test oracle's and the small pictures' reading."""
    base, numel = plan.id_base[param.key], math.prod(param.global_shape)
    local = values - base
    inside = (local >= 0) & (local < numel)
    out = torch.where(inside, local, torch.full_like(values, FOREIGN_ID))
    return torch.where(values < 0, values, out)


def owners(plan: SyncPlan, values: torch.Tensor, exclude: str = "") -> list[str]:
    """The parameters (keys) whose materialized ids occur in ``values``, except ``exclude``."""
    ids = values[values >= 0]
    if not ids.numel():
        return []
    keys = list(plan.id_base)
    starts = torch.tensor([plan.id_base[k] for k in keys], dtype=torch.float64)
    found = torch.unique(torch.searchsorted(starts, ids.unique(), right=True) - 1).tolist()
    return [keys[i] for i in found if keys[i] != exclude]
