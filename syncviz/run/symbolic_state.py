"""Trainer shards and vLLM tensors as symbolic provenance tensors (no element stored).

The oracle's :class:`~syncviz.oracle.index.IndexMap` of a shard (boxes of the
global tensor, padding) becomes a :class:`~syncviz.provenance.RegionMap` of
model-wide ids: the same numbers the float64 flow stores, kept compact.

>>> from syncviz.oracle.index import Box, IndexMap, Pad
>>> idx = IndexMap((4, 6), (3, 2), [Box((0, 2), (2, 4)), Pad(2)])
>>> shard_map(idx, base=100).materialize().tolist()
[[102.0, 103.0], [108.0, 109.0], [-1.0, -1.0]]
"""

from __future__ import annotations

import math
from typing import Any

import torch

from syncviz.oracle.index import Box, IndexMap, Pad
from syncviz.oracle.layout import ParamLayout
from syncviz.provenance import RegionMap, SymbolicTensor, row_major
from syncviz.run.plan import SyncPlan, held_shards
from syncviz.run.values import FOREIGN_ID, UNWRITTEN_ID


def shard_map(index: IndexMap, base: int) -> RegionMap:
    """Model-wide ids (``base`` + global id; -1 padding) of ``index``, as regions."""
    strides = row_major(index.global_shape)
    parts = []
    for piece in index.pieces:
        if isinstance(piece, Box):
            dims = piece.dims
            extents = tuple(piece.stop[d] - piece.start[d] for d in dims)
            offset = base + sum(a * s for a, s in zip(piece.start, strides, strict=True))
            parts.append(RegionMap.affine(extents, offset, tuple(strides[d] for d in dims)))
        else:
            value = -1.0 if isinstance(piece, Pad) else FOREIGN_ID
            parts.append(RegionMap.constant((piece.numel,), value))
    shape = index.shape
    if len(parts) == 1:
        return parts[0].reshape(shape)
    # Pieces laid end to end in flat memory: join them as whole rows where they allow it.
    inner = math.prod(shape[1:]) if len(shape) > 1 else 1
    if shape and all(p.numel % inner == 0 for p in parts):
        rows = [p.reshape((p.numel // inner, *shape[1:])) for p in parts]
        return RegionMap.cat(rows, 0)
    flat = RegionMap.cat([p.reshape((p.numel,)) for p in parts], 0)
    return flat.reshape(shape)


class SharedShardMaps:
    """Trainer shard maps built once and shared by every rank holding the shard.

    A dense parameter's shard is held by every expert-parallel rank of its (pp, tp); its
    map is immutable, so one object serves them all. Each rank still gets tensors of its
    own (:func:`symbolic_state`): a rank writing into its tensor replaces its own map only.
    Safe to use from the ranks' threads at once (two may build the same map; one is kept).

    >>> from syncviz import Parallel, preset
    >>> from syncviz.run.plan import build_plan
    >>> plan = build_plan(preset("mixtral-8x7b").scaled(), Parallel(2, ep=2), Parallel(2),
    ...                   layers=[0])
    >>> shared = SharedShardMaps(plan)
    >>> a, b = symbolic_state(plan, 0, shared), symbolic_state(plan, 2, shared)  # ep 0, ep 1
    >>> name = "module.module.decoder.layers.0.self_attention.linear_qkv.weight"
    >>> a[name] is b[name], a[name].region_map() is b[name].region_map()
    (False, True)
    """

    def __init__(self, plan: SyncPlan) -> None:
        self.plan = plan
        self.held = held_shards(plan.layout, plan.roles)
        self._maps: dict[int, RegionMap] = {}  # id(shard) -> map; shards live in the plan
        self._shapes: dict[tuple, tuple[RegionMap, int]] = {}  # see _placed

    def shard_map(self, param: ParamLayout, shard: Any) -> RegionMap:
        found = self._maps.get(id(shard))
        if found is None:
            found = self._placed(shard.index, self.plan.id_base[param.key])
            found = self._maps.setdefault(id(shard), found)
        return found

    def _placed(self, index: IndexMap, base: int) -> RegionMap:
        """:func:`shard_map` of ``index``, from the map of a shard of the same form where one
        was built: boxes of one shape at the same relative places in a tensor of the same
        shape give the same regions, every id moved by the first box's id difference (the
        routed experts: 32 a rank, 64 ranks, 58 layers)."""
        pieces = index.pieces
        if not pieces or not all(isinstance(p, Box) for p in pieces):
            return shard_map(index, base)
        first = pieces[0].start
        places = tuple(tuple(a - b for a, b in zip(p.start, first, strict=True)) for p in pieces)
        kinds = tuple((p.order, p.extents) for p in pieces)
        form = (index.shape, index.global_shape, kinds, places)
        strides = row_major(index.global_shape)
        offset = base + sum(a * s for a, s in zip(first, strides, strict=True))
        known = self._shapes.get(form)
        if known is not None:
            region_map, was = known
            shift = offset - was
            return RegionMap(
                region_map.shape,
                [r._replace(offset=r.offset + shift) for r in region_map.regions],
                merge=False,
            )
        built = shard_map(index, base)
        if type(built) is RegionMap:  # a lazy reshaped map is built afresh each time
            self._shapes.setdefault(form, (built, offset))
        return built


def symbolic_state(
    plan: SyncPlan, world: int, shared: SharedShardMaps | None = None
) -> dict[str, torch.Tensor]:
    """A rank's tensors before the sync, as :class:`~syncviz.provenance.SymbolicTensor`:
    trainer shards hold their model-wide ids, vLLM tensors "unwritten" everywhere.
    ``shared`` (one per run) builds each shard's map once for all the ranks holding it."""
    role = plan.roles[world]
    if role.side == "dst":
        return {
            name: SymbolicTensor.from_map(RegionMap.constant(shape, UNWRITTEN_ID))
            for name, shape in plan.dst_shapes[world].items()
        }
    shared = shared or SharedShardMaps(plan)
    state: dict[str, torch.Tensor] = {}
    for param, shard in shared.held.get(world, ()):
        state[shard.name] = SymbolicTensor.from_map(shared.shard_map(param, shard))
    return state
