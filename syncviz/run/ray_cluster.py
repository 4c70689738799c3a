"""Connect to a Ray cluster, or start a local one, and leave it as it was found.

``RAY_ADDRESS`` set in the environment means "use that cluster": this module
connects and, on close, only disconnects. Otherwise it starts a small local Ray
(no dashboard, worker logs kept out of the driver's output) and stops it on close.
Ray is imported inside the functions so importing this module stays light.

>>> RaySession(address="local", started=True).started
True
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from syncviz.errors import SyncvizError

ADDRESS_VARIABLE = "RAY_ADDRESS"


@dataclass
class RaySession:
    """A Ray connection this process opened (``started``: it also started the cluster).

    ``close()`` shuts Ray down only when this session opened the connection; a
    session that found Ray already initialised leaves it alone.

    >>> RaySession(address="10.0.0.5:6379", started=False, owns_connection=False).close()
    """

    address: str
    started: bool
    owns_connection: bool = True
    closed: bool = False

    def close(self) -> None:
        """Disconnect (and stop the local cluster when this session started it)."""
        if self.closed or not self.owns_connection:
            self.closed = True
            return
        import ray

        ray.shutdown()
        self.closed = True


def open_session(num_cpus: int | None = None) -> RaySession:
    """Connect to ``$RAY_ADDRESS``, reuse an initialised Ray, or start a local one.

    ``num_cpus`` sizes a local cluster (default: what Ray detects for this
    machine); it must be left out when connecting, since a running cluster
    already has its size.

    >>> open_session(num_cpus=0)
    Traceback (most recent call last):
    ...
    syncviz.errors.SyncvizError: num_cpus (0) must be at least 1: omit it to fit this machine
    """
    if num_cpus is not None and num_cpus < 1:
        raise SyncvizError(
            f"num_cpus ({num_cpus}) must be at least 1",
            fix="omit it to fit this machine",
        )
    import ray

    if ray.is_initialized():
        return RaySession(address=_current_address(), started=False, owns_connection=False)
    address = os.environ.get(ADDRESS_VARIABLE)
    if address:
        if num_cpus is not None:
            raise SyncvizError(
                f"num_cpus ({num_cpus}) cannot resize the existing cluster at {address}",
                fix=f"unset {ADDRESS_VARIABLE} to start a local cluster, or leave num_cpus out",
            )
        ray.init(address=address, log_to_driver=False, ignore_reinit_error=True)
        return RaySession(address=address, started=False)
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        ignore_reinit_error=True,
        # Quiet start-up: the driver's log line about the new instance is noise here.
        logging_level="warning",
    )
    return RaySession(address=_current_address(), started=True)


@contextmanager
def ray_session(num_cpus: int | None = None) -> Iterator[RaySession]:
    """``open_session`` as a context manager that closes the session on exit.

    Typical use is ``with ray_session() as session: ...``; bad sizes fail before
    Ray is touched:

    >>> with ray_session(num_cpus=-2):
    ...     pass
    Traceback (most recent call last):
    ...
    syncviz.errors.SyncvizError: num_cpus (-2) must be at least 1: omit it to fit this machine
    """
    session = open_session(num_cpus)
    try:
        yield session
    finally:
        session.close()


def _current_address() -> str:
    import ray

    context = ray.get_runtime_context()
    return str(getattr(context, "gcs_address", "") or "local")
