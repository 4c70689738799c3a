"""Parallel sizes of one side (trainer or inference engine).

>>> from syncviz.parallel import Parallel
>>> Parallel(tp=2, pp=2)
Parallel(tp=2, pp=2, ep=1, dp=1)
>>> Parallel(tp=2).world_size
2
"""

from __future__ import annotations

from dataclasses import dataclass

from syncviz.errors import SyncvizError


@dataclass(frozen=True)
class Parallel:
    """Tensor, pipeline, expert and data parallel sizes of one side.

    Only the sizes' own sanity is checked here; how they must fit a model is
    checked by :func:`validate` (dst tp must divide the
    heads, and so on), where every rule names the field, value and fix.
    """

    tp: int
    pp: int = 1
    ep: int = 1
    dp: int = 1

    def __post_init__(self) -> None:
        for name in ("tp", "pp", "ep", "dp"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SyncvizError(f"{name} ({value!r}) must be a positive integer",
                                   fix=f"use {name}=1 or more")

    @property
    def world_size(self) -> int:
        """Ranks of one model replica times data-parallel replicas."""
        return self.tp * self.pp * self.dp
