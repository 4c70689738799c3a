"""Simulated ranks in one process: :class:`LocalWorld`, the twin of :class:`RayWorld`.

``LocalWorld(n).run(fn)`` calls ``fn(collective)`` once per rank, each in its own
thread, so blocking collectives meet exactly as they would across processes; each
rank's :class:`LocalCollective` implements :class:`syncviz.sync.collective.Collective`.

>>> import torch
>>> world = LocalWorld(2)
>>> def gather(coll):
...     outs = [torch.empty(1) for _ in range(coll.world_size())]
...     coll.all_gather(outs, torch.tensor([10.0 * coll.rank()]))
...     return [t.item() for t in outs]
>>> [r.value for r in world.run(gather)]
[[0.0, 10.0], [0.0, 10.0]]
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch.overrides import has_torch_function_unary

from syncviz.errors import RunFailed, SyncvizError
from syncviz.provenance import copy_whole
from syncviz.run.world import RankResult, World, check_world_size, group_ranks

if TYPE_CHECKING:
    from syncviz.run.world import Describe, RankFn

# How long ranks released from their collectives get to leave before being named stuck.
_RELEASE_S = 1.0
# A plain tensor never asks for __torch_function__ itself, so torch's public
# has_torch_function_unary(_PLAIN) is true exactly while a torch-function mode (a
# tracer's) is on in this thread.
_PLAIN = torch.empty(0)

T = TypeVar("T")


class LocalGroup:
    """A group of simulated ranks: member ``i`` of the group is world rank ``ranks[i]``.

    Every collective is an exchange: each member posts an item for its n-th call
    and waits until all members posted for their n-th call, then reads every item.
    A member that already has all items never blocks, so one rank failing after a
    collective cannot break the others' copy of it.

    >>> LocalWorld(4).new_group([1, 3]).ranks
    (1, 3)
    """

    def __init__(self, ranks: Sequence[int], name: str | None, timeout: float) -> None:
        self.ranks = tuple(ranks)
        self.name = name
        self._timeout = timeout
        self._cond = threading.Condition()
        self.reset()

    @property
    def size(self) -> int:
        return len(self.ranks)

    def group_rank(self, world_rank: int) -> int:
        """This world rank's position in the group."""
        if world_rank not in self.ranks:
            raise SyncvizError(
                f"rank {world_rank} is not a member of group {self.name or self.ranks}",
                fix=f"call collectives on this group only from ranks {list(self.ranks)}",
            )
        return self.ranks.index(world_rank)

    def exchange(self, member: int, item: Any) -> list[Any]:
        """Post ``item`` as ``member`` and return every member's item, in member order."""
        with self._cond:
            call = self._calls[member]
            self._calls[member] += 1
            posted = self._posted.setdefault(call, {})
            posted[member] = item
            # Waiters wait for a full call: waking them on every post would wake a group of
            # n members n^2 times per collective (seconds at 64 members), for nothing.
            if len(posted) == self.size:
                self._cond.notify_all()
            self._cond.wait_for(
                lambda: len(posted) == self.size or self._aborted, timeout=self._timeout
            )
            if len(posted) < self.size:
                raise SyncvizError(
                    f"a collective on group {self.name or list(self.ranks)} was abandoned"
                    f" ({len(posted)} of {self.size} members joined)",
                    fix="another rank failed or never joined; see that rank's error",
                )
            items = [posted[m] for m in range(self.size)]
            self._reads[call] = self._reads.get(call, 0) + 1
            if self._reads[call] == self.size:  # everyone has read: free the slots
                del self._posted[call], self._reads[call]
            return items

    def _mailbox(self, src: int, dst: int) -> queue.Queue[torch.Tensor]:
        # Made on first use: a group of 64 members would otherwise make 4096 queues per run.
        if not (0 <= src < self.size and 0 <= dst < self.size):
            raise KeyError((src, dst))  # as a missing mailbox did: no such member
        with self._cond:
            box = self._mailboxes.get((src, dst))
            if box is None:
                box = self._mailboxes[(src, dst)] = queue.Queue()
            return box

    def post(self, src: int, dst: int, tensor: torch.Tensor) -> None:
        self._mailbox(src, dst).put(tensor.detach().clone())

    def take(self, src: int, dst: int) -> torch.Tensor:
        try:
            return self._mailbox(src, dst).get(timeout=self._timeout)
        except queue.Empty:
            raise SyncvizError(
                f"recv on member {dst} waited {self._timeout} s for member {src}",
                fix="make sure every recv has a matching send",
            ) from None

    def abort(self) -> None:
        """Release members blocked in a collective that can no longer complete."""
        with self._cond:
            self._aborted = True
            self._cond.notify_all()

    def reset(self) -> None:
        """Forget every pending exchange and message (a fresh group for the next run)."""
        with self._cond:
            self._aborted = False
            self._calls = [0] * len(self.ranks)
            self._posted: dict[int, dict[int, Any]] = {}
            self._reads: dict[int, int] = {}
            self._mailboxes: dict[tuple[int, int], queue.Queue[torch.Tensor]] = {}


class LocalWorld(World):
    """Simulated ranks ``0 .. world_size-1`` in one process.

    ``run(fn)`` calls ``fn(collective)`` once per rank, each in its own thread,
    so blocking collectives meet exactly as they would across processes. Named
    groups (``new_group(ranks, name="g")``) may be passed to collectives either as
    the group object or by name.

    >>> world = LocalWorld(3)
    >>> [r.value for r in world.run(lambda c: c.rank())]
    [0, 1, 2]
    """

    def __init__(self, world_size: int, timeout: float = 60.0) -> None:
        check_world_size(world_size)
        self.world_size = world_size
        self.timeout = timeout
        self.default_group = LocalGroup(range(world_size), None, timeout)
        self._groups: dict[str, LocalGroup] = {}
        self.stores: list[dict[str, Any]] = [{} for _ in range(world_size)]
        self._all_groups: list[LocalGroup] = [self.default_group]

    def new_group(self, ranks: Sequence[int] | None = None, name: str | None = None) -> LocalGroup:
        """A group over ``ranks`` (all ranks when omitted), findable by ``name``."""
        group = LocalGroup(group_ranks(ranks, self.world_size), name, self.timeout)
        if name is not None:
            self._groups[name] = group
        self._all_groups.append(group)
        return group

    def resolve(self, group: Any) -> LocalGroup:
        """The group object for ``None`` (everyone), a name, or a group."""
        if group is None:
            return self.default_group
        if isinstance(group, LocalGroup):
            return group
        if isinstance(group, str) and group in self._groups:
            return self._groups[group]
        raise SyncvizError(
            f"group {group!r} is not known to this LocalWorld",
            fix="create it first with world.new_group(ranks, name=...)",
        )

    def collective(self, rank: int) -> LocalCollective:
        """The :class:`Collective` that world rank ``rank`` uses."""
        return LocalCollective(self, rank)

    def _run(self, fn: RankFn[T], timeout: float | None, describe: Describe) -> list[RankResult[T]]:
        """:meth:`World.run`: ``fn`` on every rank concurrently, one thread each.

        When a rank raises, collectives that the others are blocked in are
        abandoned, so a failure never hangs the run. ``timeout`` (seconds) bounds
        the whole run: ranks still running then are released from their
        collectives and :class:`~syncviz.errors.RunFailed` names the ones that
        stopped answering (``describe(rank)`` words that, e.g. with the rank's role).
        Ctrl-C releases every rank too. Rank threads are daemons, so a rank stuck
        outside any collective never keeps the process alive.

        >>> import time
        >>> LocalWorld(2).run(lambda c: time.sleep(5 * c.rank()), timeout=0.5)
        Traceback (most recent call last):
        ...
        syncviz.errors.RunFailed: rank 1 stopped answering: still running after the 0.5 s ...
        """
        results: list[RankResult[T]] = [RankResult(rank=r) for r in range(self.world_size)]

        def body(rank: int) -> None:
            try:
                results[rank] = RankResult(rank=rank, value=fn(self.collective(rank)))
            except BaseException as exc:  # reported per rank, never lost
                results[rank] = RankResult(rank=rank, error=exc)
                self._abort_all()

        threads = [
            threading.Thread(target=body, args=(r,), name=f"syncviz-rank-{r}", daemon=True)
            for r in range(self.world_size)
        ]
        for thread in threads:
            thread.start()
        end = None if timeout is None else time.monotonic() + timeout
        try:
            for thread in threads:
                thread.join(None if end is None else max(0.0, end - time.monotonic()))
        except BaseException:  # Ctrl-C or SIGTERM: let blocked ranks go, then stop
            self._abort_all()
            raise
        late = [r for r, thread in enumerate(threads) if thread.is_alive()]
        if late:
            self._stop_late(late, threads, timeout, describe)
        for group in self._all_groups:
            group.reset()
        return results

    def _abort_all(self) -> None:
        for group in self._all_groups:
            group.abort()

    def _stop_late(self, late, threads, timeout, describe) -> None:
        # Ranks blocked in a collective on a stalled peer leave once released; the
        # ones still running after that are the ones that stopped answering.
        words = {r: describe(r) for r in late}
        self._abort_all()
        grace_end = time.monotonic() + _RELEASE_S
        for r in late:
            threads[r].join(max(0.0, grace_end - time.monotonic()))
        stuck = [r for r in late if threads[r].is_alive()] or late
        names = ", ".join(words[r] for r in stuck)
        others = [r for r in late if r not in stuck]
        released = f"; rank(s) {others} were waiting on it and were released" if others else ""
        raise RunFailed(
            f"{names}: still running after the {timeout:.3g} s run timeout{released}",
            fix="look for a rank stuck outside a collective (a loop, a sleep, a lock), "
            "or raise --timeout / run(timeout=...)",
        )


class LocalCollective:
    """One simulated rank's view of a :class:`LocalWorld` (see :class:`Collective`).

    >>> LocalWorld(2).collective(1).rank()
    1
    """

    def __init__(self, world: LocalWorld, world_rank: int) -> None:
        self.world = world
        self.world_rank = world_rank
        # Per-rank data kept across ``run`` calls (as a Ray actor keeps its own).
        self.store: dict[str, Any] = world.stores[world_rank]
        self.device = torch.device("cpu")

    def _member(self, group: Any) -> tuple[LocalGroup, int]:
        resolved = self.world.resolve(group)
        return resolved, resolved.group_rank(self.world_rank)

    def rank(self, group: Any = None) -> int:
        return self._member(group)[1]

    def world_size(self, group: Any = None) -> int:
        return self.world.resolve(group).size

    def all_gather(
        self, outputs: list[torch.Tensor], tensor: torch.Tensor, group: Any = None
    ) -> None:
        local, me = self._member(group)
        _check_count("all_gather", "output", len(outputs), local.size)
        items = local.exchange(me, tensor.detach().clone())
        for out, item in zip(outputs, items, strict=True):
            _copy_into(out, item, "all_gather")

    def all_to_all(
        self, outputs: list[torch.Tensor], inputs: list[torch.Tensor], group: Any = None
    ) -> None:
        local, me = self._member(group)
        _check_count("all_to_all", "input", len(inputs), local.size)
        _check_count("all_to_all", "output", len(outputs), local.size)
        posted = local.exchange(me, [t.detach().clone() for t in inputs])
        # Member j's inputs[me] is what this member receives in outputs[j].
        for out, from_member in zip(outputs, posted, strict=True):
            _copy_into(out, from_member[me], "all_to_all")

    def broadcast(self, tensor: torch.Tensor, src: int, group: Any = None) -> None:
        local, me = self._member(group)
        items = local.exchange(me, tensor.detach().clone() if me == src else None)
        if me != src:
            _copy_into(tensor, items[src], "broadcast")

    def broadcast_object(self, box: list[Any], src: int, group: Any = None) -> None:
        """``box[0]`` of member ``src`` replaces ``box[0]`` on every member (small data)."""
        local, me = self._member(group)
        items = local.exchange(me, box[0] if me == src else None)
        box[0] = items[src]

    def send(self, tensor: torch.Tensor, dst: int, group: Any = None) -> None:
        local, me = self._member(group)
        local.post(me, dst, tensor)

    def recv(self, tensor: torch.Tensor, src: int, group: Any = None) -> None:
        local, me = self._member(group)
        _copy_into(tensor, local.take(src, me), "recv")


def _check_count(op: str, what: str, count: int, group_size: int) -> None:
    if count != group_size:
        raise SyncvizError(
            f"{op} got {count} {what} tensors for a group of {group_size} ranks",
            fix=f"pass exactly one {what} tensor per group member",
        )


def _copy_into(out: torch.Tensor, item: torch.Tensor, op: str) -> None:
    if out.shape != item.shape:
        raise SyncvizError(
            f"{op}: received shape {list(item.shape)} into a buffer of shape {list(out.shape)}",
            fix="allocate each output with the shape its sender sends",
        )
    # Symbolic ids are handed over as the sender's map, shared (an all-gather of experts
    # over 64 ranks makes 64^2 of these copies a tensor); torch's copy_ when a tracer's
    # mode would see the copy, or when torch must judge it.
    if has_torch_function_unary(_PLAIN) or not copy_whole(out, item):
        out.copy_(item)
