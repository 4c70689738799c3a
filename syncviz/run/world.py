"""The contract every executor's world keeps (:class:`World`): ranks ``0 .. world_size-1``
that run one function each, with named groups for the synchronizer's collectives.
:class:`~syncviz.run.local_world.LocalWorld` (threads in one process) and
:class:`~syncviz.run.ray_world.RayWorld` (Ray actors joined by ``torch.distributed``)
both satisfy it, so :func:`syncviz.run.inprocess.run_sync` drives either the same way.

>>> from syncviz.run.local_world import LocalWorld
>>> world = LocalWorld(2)
>>> isinstance(world, World), [r.value for r in world.run(lambda c: c.world_rank)]
(True, [0, 1])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch

from syncviz.run.local_world import RankResult
from syncviz.sync.collective import Collective

T = TypeVar("T")


@runtime_checkable
class RankCollective(Collective, Protocol):
    """What the function a world runs gets on each rank: the collectives, and the rank's
    own number, device (where its tensors must live) and store (a dict kept between runs).
    """

    world_rank: int
    device: torch.device
    store: dict[str, Any]


@runtime_checkable
class World(Protocol):
    """Ranks ``0 .. world_size-1`` that run a function each, concurrently.

    ``new_group(ranks, name)`` makes a group over ``ranks`` (every rank when omitted)
    that collectives find by the returned object or by ``name``. ``run(fn)`` calls
    ``fn(collective)`` once per rank and returns one :class:`RankResult` per rank, in
    rank order; a rank that raises never hangs the others; ``timeout`` (seconds) bounds
    the whole run and ``describe(rank)`` words a rank that stopped answering.
    """

    world_size: int

    def new_group(self, ranks: Sequence[int] | None = None, name: str | None = None) -> Any:
        """A group over ``ranks`` (all when omitted), findable by ``name``."""
        ...

    def run(
        self,
        fn: Callable[[RankCollective], T],
        *,
        timeout: float | None = None,
        describe: Callable[[int], str] | None = None,
    ) -> list[RankResult[T]]:
        """Run ``fn`` on every rank; one result per rank, in rank order."""
        ...
