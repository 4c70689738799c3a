"""What a sync run produced, and the ids its destination tensors hold.

>>> from syncviz import Parallel, preset
>>> from syncviz.run.inprocess import run_sync
>>> result = run_sync(preset("qwen2-7b").scaled(), Parallel(tp=1), Parallel(tp=2), layers=[0])
>>> result.local_ids(1, "model.model.layers.0.input_layernorm.weight")[:3].tolist()
[0.0, 1.0, 2.0]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from syncviz.provenance import as_symbolic
from syncviz.run.flow import Finding, RankOutcome
from syncviz.run.plan import SyncPlan
from syncviz.run.values import owners, to_local_ids
from syncviz.trace.model import SyncTrace


@dataclass
class SyncResult:
    """What a sync run produced: every rank's tensors (maps of model-wide ids,
    :class:`~syncviz.provenance.SymbolicTensor`), the findings, the trace.

    ``plan.options`` says how it ran (the synchronizer's name included). A rank's
    tensors are any mapping by name (a diagnosis builds each map only when read).
    """

    plan: SyncPlan
    src_tensors: dict[int, dict[str, torch.Tensor]]
    dst_tensors: dict[int, Mapping[str, torch.Tensor]]
    outcomes: list[RankOutcome]
    trace: SyncTrace | None

    @property
    def findings(self) -> list[Finding]:
        return [f for o in self.outcomes for f in o.findings]

    def writes(self, world: int) -> dict[str, int]:
        return self.outcomes[world].writes

    def local_ids(self, world: int, key: str) -> torch.Tensor:
        """Destination tensor ``key`` of rank ``world`` as ids of that parameter, materialized
        from its map (float64): the reference tests and small pictures read.

        -1 is padding, -2 never written, and -3 an element that is not from this
        parameter (another parameter's data, or a value the sync made up).
        """
        param = self.plan.layout.param(key)
        name = self.name_on(param, world)
        return to_local_ids(self.plan, param, self._held(world, name))

    def foreign_keys(self, world: int, key: str) -> list[str]:
        """Parameters whose elements landed in ``key`` on rank ``world`` (ids mode)."""
        if self.plan.values != "ids":
            return []
        param = self.plan.layout.param(key)
        name = self.name_on(param, world)
        return owners(self.plan, self._held(world, name), exclude=key)

    def _held(self, world: int, name: str) -> torch.Tensor:
        """A destination tensor's model-wide ids, materialized."""
        return as_symbolic(self.dst_tensors[world][name]).materialize()

    def name_on(self, param, world: int) -> str:
        """The name ``param`` has in the tensors of vLLM world rank ``world``."""
        role = self.plan.roles[world]
        return next(t.name for t in param.dst if (t.pp, t.tp) == (role.pp, role.tp))
