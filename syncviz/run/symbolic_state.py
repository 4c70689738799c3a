"""Trainer shards and vLLM tensors as symbolic provenance tensors (no element stored).

The oracle's map of a shard (its parameter's ids, padding -1) becomes a map of
model-wide ids, every id moved by the parameter's first id
(:meth:`~syncviz.provenance.RegionMap.shifted`): the same numbers the float64 flow
stores, kept compact.
"""

from __future__ import annotations

from typing import Any

import torch

from syncviz.oracle.layout import ParamLayout
from syncviz.provenance import RegionMap, SymbolicTensor
from syncviz.run.plan import SyncPlan, held_shards
from syncviz.run.values import UNWRITTEN_ID


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

    def shard_map(self, param: ParamLayout, shard: Any) -> RegionMap:
        """``shard``'s map of model-wide ids (built once: shards live in the plan)."""
        found = self._maps.get(id(shard))
        if found is None:
            found = shard.index.shifted(self.plan.id_base[param.key])
            found = self._maps.setdefault(id(shard), found)
        return found


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
