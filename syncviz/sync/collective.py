"""Collectives the synchronizer uses, behind one small interface.

ChatLearn called ``ray.util.collective`` and ``torch.distributed`` directly. Here the
synchronizer calls a :class:`Collective` instead, so the same code runs on simulated
ranks in one process (:class:`syncviz.run.local_world.LocalWorld`, one thread per
rank) and on a real process group (:class:`TorchCollective`, used by
:class:`syncviz.run.ray_world.RayWorld`). Semantics follow ``torch.distributed``:
outputs are preallocated tensors filled in place, and ranks passed as ``src`` or
``dst`` are ranks *within* the group.

>>> from syncviz.run.local_world import LocalWorld
>>> isinstance(LocalWorld(1).collective(0), Collective)
True
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from syncviz.errors import SyncvizError


@runtime_checkable
class Collective(Protocol):
    """What the synchronizer needs from a communication backend.

    ``group`` is whatever the backend uses to name a group (a group object, a
    name, or ``None`` for the default group).

    >>> from syncviz.run.local_world import LocalWorld
    >>> isinstance(LocalWorld(1).collective(0), Collective)
    True
    """

    def rank(self, group: Any = None) -> int: ...

    def world_size(self, group: Any = None) -> int: ...

    def all_gather(
        self, outputs: list[torch.Tensor], tensor: torch.Tensor, group: Any = None
    ) -> None: ...

    def all_to_all(
        self, outputs: list[torch.Tensor], inputs: list[torch.Tensor], group: Any = None
    ) -> None: ...

    def broadcast(self, tensor: torch.Tensor, src: int, group: Any = None) -> None: ...

    def broadcast_object(self, box: list[Any], src: int, group: Any = None) -> None: ...

    def send(self, tensor: torch.Tensor, dst: int, group: Any = None) -> None: ...

    def recv(self, tensor: torch.Tensor, src: int, group: Any = None) -> None: ...


class TorchCollective:
    """:class:`Collective` over an initialised ``torch.distributed`` process group.

    ``group`` may be a ``ProcessGroup``, ``None`` (the default group), or a name
    listed in ``groups`` (ChatLearn addressed its all-gather group by name).

    >>> TorchCollective(groups={"g": None}).groups
    {'g': None}
    """

    def __init__(self, groups: dict[str, Any] | None = None) -> None:
        self.groups = dict(groups or {})

    def _resolve(self, group: Any) -> Any:
        if isinstance(group, str):
            if group not in self.groups:
                raise SyncvizError(
                    f"group name {group!r} has no process group",
                    fix="pass TorchCollective(groups={name: process_group})",
                )
            return self.groups[group]
        return group

    def _global(self, group: Any, group_rank: int) -> int:
        pg = self._resolve(group)
        if pg is None:
            return group_rank
        return torch.distributed.get_global_rank(pg, group_rank)

    def rank(self, group: Any = None) -> int:
        return torch.distributed.get_rank(self._resolve(group))

    def world_size(self, group: Any = None) -> int:
        return torch.distributed.get_world_size(self._resolve(group))

    def all_gather(
        self, outputs: list[torch.Tensor], tensor: torch.Tensor, group: Any = None
    ) -> None:
        torch.distributed.all_gather(outputs, tensor, group=self._resolve(group))

    def all_to_all(
        self, outputs: list[torch.Tensor], inputs: list[torch.Tensor], group: Any = None
    ) -> None:
        torch.distributed.all_to_all(outputs, inputs, group=self._resolve(group))

    def broadcast(self, tensor: torch.Tensor, src: int, group: Any = None) -> None:
        torch.distributed.broadcast(tensor, self._global(group, src), group=self._resolve(group))

    def broadcast_object(self, box: list[Any], src: int, group: Any = None) -> None:
        """``box[0]`` of group member ``src`` replaces ``box[0]`` on every member."""
        torch.distributed.broadcast_object_list(
            box, self._global(group, src), group=self._resolve(group)
        )

    def send(self, tensor: torch.Tensor, dst: int, group: Any = None) -> None:
        torch.distributed.send(tensor, self._global(group, dst), group=self._resolve(group))

    def recv(self, tensor: torch.Tensor, src: int, group: Any = None) -> None:
        torch.distributed.recv(tensor, self._global(group, src), group=self._resolve(group))
