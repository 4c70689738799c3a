"""How a sync runs (all but the model and the sizes): one frozen object, defaults once.

Light on purpose (no torch): the command line reads its defaults to build ``--help``.

>>> SyncOptions().synchronizer, SyncOptions(seed=2).changed()
('chatlearn', {'seed': 2})
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from syncviz.errors import SyncvizError

ExpertComm = Literal["allgather", "alltoall"]
Comm = Literal["broadcast", "p2p"]
Values = Literal["ids", "random"]


@dataclass(frozen=True)
class SyncOptions:
    """How a sync runs, all but the model and the sizes; the defaults are written here once.

    ``synchronizer`` names it (``"chatlearn"``, ``"corrected"`` or ``"module:Class"``).
    ``expert_comm`` regroups routed experts by all-gather or all-to-all. ``comm`` moves
    each pair's buckets by ``"broadcast"`` (the original's default) or ``"p2p"``;
    ``bucket_size_mb`` caps a bucket, as the original's ``coalesced_buffer_mb`` does.
    ``values``: the trainer shards hold ``"ids"`` (float64 provenance ids) or
    ``"random"`` float32 weights drawn from ``seed`` (compared bit for bit).
    ``src_vocab_divisible_by`` is the trainer's ``--make-vocab-size-divisible-by``
    (None: it pads like vLLM, see :class:`~syncviz.oracle.Conventions`).

    >>> SyncOptions(comm="p2p").changed()
    {'comm': 'p2p'}
    >>> SyncOptions(values="zeros")
    Traceback (most recent call last):
    ...
    syncviz.errors.SyncvizError: values ('zeros') is not one of the choices: use 'ids' or 'random'
    """

    synchronizer: str = "chatlearn"
    expert_comm: ExpertComm = "allgather"
    comm: Comm = "broadcast"
    bucket_size_mb: float = 64.0
    values: Values = "ids"
    seed: int = 0
    src_vocab_divisible_by: int | None = None

    def __post_init__(self) -> None:
        one_of("comm", self.comm, ("broadcast", "p2p"))
        one_of("values", self.values, ("ids", "random"))
        one_of("expert_comm", self.expert_comm, ("allgather", "alltoall"))
        if not self.bucket_size_mb > 0:
            raise SyncvizError(
                f"bucket_size_mb ({self.bucket_size_mb}) must be positive",
                fix="use e.g. 64 (megabytes)",
            )

    def changed(self) -> dict[str, object]:
        """The options that differ from their defaults, by name (for headers)."""
        default = SyncOptions()
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        }


def one_of(field: str, value: object, options: tuple[str, ...]) -> None:
    """Refuse ``value`` unless it is one of ``options``, naming them."""
    if value not in options:
        raise SyncvizError(
            f"{field} ({value!r}) is not one of the choices",
            fix="use " + " or ".join(repr(o) for o in options),
        )
