"""What a sync run produced, and the ids its destination tensors hold.

>>> from syncviz import Parallel, preset
>>> from syncviz.run.inprocess import run_sync
>>> result = run_sync(preset("qwen2-7b").scaled(), Parallel(tp=1), Parallel(tp=2), layers=[0])
>>> result.local_ids(1, "model.model.layers.0.input_layernorm.weight")[:3].tolist()
[0.0, 1.0, 2.0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from syncviz.provenance import is_symbolic
from syncviz.run.flow import Finding, RankOutcome
from syncviz.run.plan import SyncPlan
from syncviz.run.values import FOREIGN_ID, global_weights, ids_of_values
from syncviz.trace.model import SyncTrace


@dataclass
class SyncResult:
    """What a sync run produced: every rank's tensors, the findings, the trace."""

    plan: SyncPlan
    src_tensors: dict[int, dict[str, torch.Tensor]]
    dst_tensors: dict[int, dict[str, torch.Tensor]]
    outcomes: list[RankOutcome]
    trace: SyncTrace | None

    @property
    def findings(self) -> list[Finding]:
        return [f for o in self.outcomes for f in o.findings]

    def writes(self, world: int) -> dict[str, int]:
        return self.outcomes[world].writes

    def local_ids(self, world: int, key: str) -> torch.Tensor:
        """Destination tensor ``key`` of rank ``world`` as ids of that parameter (float64).

        -1 is padding, -2 never written, and -3 an element that is not from this
        parameter (another parameter's data, or a value the sync made up).
        """
        param = self.plan.layout.param(key)
        name = next(t.name for t in param.dst if self._world_of(t) == world)
        return to_local_ids(self.plan, param, self.dst_tensors[world][name])

    def foreign_keys(self, world: int, key: str) -> list[str]:
        """Parameters whose elements landed in ``key`` on rank ``world`` (ids mode)."""
        if self.plan.values != "ids":
            return []
        param = self.plan.layout.param(key)
        name = next(t.name for t in param.dst if self._world_of(t) == world)
        return owners(self.plan, self.dst_tensors[world][name], exclude=key)

    def _world_of(self, tensor) -> int:
        return next(
            r.world
            for r in self.plan.roles
            if r.side == "dst" and (r.pp, r.tp) == (tensor.pp, tensor.tp)
        )


def to_local_ids(plan: SyncPlan, param, values: torch.Tensor) -> torch.Tensor:
    """Received values as ids local to ``param`` (see :meth:`SyncResult.local_ids`)."""
    if is_symbolic(values):  # a symbolic tensor read element by element (small ones)
        values = values.materialize()
    if plan.values == "random":
        return ids_of_values(global_weights(param.key, param.global_shape, plan.seed), values)
    base, numel = plan.id_base[param.key], math.prod(param.global_shape)
    local = values - base
    inside = (local >= 0) & (local < numel)
    out = torch.where(inside, local, torch.full_like(values, FOREIGN_ID))
    return torch.where(values < 0, values, out)


def owners(plan: SyncPlan, values: torch.Tensor, exclude: str = "") -> list[str]:
    """The parameters (keys) whose ids occur in ``values``, except ``exclude``."""
    if is_symbolic(values):
        values = values.materialize()
    ids = values[values >= 0]
    if not ids.numel():
        return []
    keys = list(plan.id_base)
    starts = torch.tensor([plan.id_base[k] for k in keys], dtype=torch.float64)
    found = torch.unique(torch.searchsorted(starts, ids.unique(), right=True) - 1).tolist()
    return [keys[i] for i in found if keys[i] != exclude]
