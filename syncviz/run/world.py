"""The contract every executor's world keeps (:class:`World`): ranks ``0 .. world_size-1``
that run one function each, with named groups for the synchronizer's collectives.
:class:`~syncviz.run.local_world.LocalWorld` (threads in one process) and
:class:`~syncviz.run.ray_world.RayWorld` (Ray actors joined by ``torch.distributed``)
both subclass it, so :func:`syncviz.run.inprocess.run_sync` drives either the same way;
what they do alike is written here once: ``run`` (each world supplies ``_run``), the
checks of a world's size and of a group's ranks, and the words for a stuck rank.

>>> from syncviz.run.local_world import LocalWorld
>>> world = LocalWorld(2)
>>> isinstance(world, World), [r.value for r in world.run(lambda c: c.world_rank)]
(True, [0, 1])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

import torch

from syncviz.errors import SyncvizError
from syncviz.sync.collective import Collective

T = TypeVar("T")


@dataclass(frozen=True)
class RankResult(Generic[T]):
    """What one rank returned, or the exception it raised.

    >>> RankResult(rank=0, value=3).ok
    True
    """

    rank: int
    value: T | None = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@runtime_checkable
class RankCollective(Collective, Protocol):
    """What the function a world runs gets on each rank: the collectives, and the rank's
    own number, device (where its tensors must live) and store (a dict kept between runs).
    """

    world_rank: int
    device: torch.device
    store: dict[str, Any]


# What a world runs on every rank, and how a rank that stopped answering is worded.
RankFn = Callable[[RankCollective], T]
Describe = Callable[[int], str]


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
        fn: RankFn[T],
        *,
        timeout: float | None = None,
        describe: Describe | None = None,
    ) -> list[RankResult[T]]:
        """Run ``fn`` on every rank; one result per rank, in rank order (the world's own
        ``_run``, with :func:`stopped_answering` as the words when none are given)."""
        return self._run(fn, timeout, describe or stopped_answering)

    def _run(self, fn: RankFn[T], timeout: float | None, describe: Describe) -> list[RankResult[T]]:
        """How this world runs ``fn`` on its ranks."""
        raise NotImplementedError


def stopped_answering(rank: int) -> str:
    """The words for a rank that stopped answering, when the caller gives none.

    >>> stopped_answering(3)
    'rank 3 stopped answering'
    """
    return f"rank {rank} stopped answering"


def check_world_size(world_size: int) -> None:
    """A world has one rank or more.

    >>> check_world_size(0)
    Traceback (most recent call last):
    ...
    syncviz.errors.SyncvizError: world_size (0) must be at least 1: use 1 or more
    """
    if world_size < 1:
        raise SyncvizError(f"world_size ({world_size}) must be at least 1", fix="use 1 or more")


def group_ranks(ranks: Sequence[int] | None, world_size: int) -> list[int]:
    """The members of a new group: ``ranks`` (every rank when None), each a rank of the
    world, once.

    >>> group_ranks(None, 3), group_ranks((2, 0), 3)
    ([0, 1, 2], [2, 0])
    >>> try:
    ...     group_ranks([1, 1], 2)
    ... except SyncvizError as err:
    ...     print(err)
    group ranks [1, 1] must be distinct ranks of 0..1: list each member rank once
    """
    ranks = list(range(world_size)) if ranks is None else list(ranks)
    bad = [r for r in ranks if not 0 <= r < world_size]
    if bad or len(set(ranks)) != len(ranks) or not ranks:
        raise SyncvizError(
            f"group ranks {ranks} must be distinct ranks of 0..{world_size - 1}",
            fix="list each member rank once",
        )
    return ranks
