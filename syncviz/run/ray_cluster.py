"""Connect to a Ray cluster, or start a local one, and leave it as it was found.

``RAY_ADDRESS`` set in the environment means "use that cluster": this module
connects and, on close, only disconnects. Otherwise it always starts a small local
Ray of its own (no dashboard, worker logs kept out of the driver's output), even
when a ``ray start`` cluster runs on this machine, and stops it on close. Either
way one line on stderr says which. Ctrl-C or SIGTERM arriving while Ray starts is
held until ``ray.init`` returns, then raised, so the half-started cluster is shut
down instead of being left behind. Ray is imported inside the functions so
importing this module stays light.

>>> RaySession(address="local", started=True).started
True
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from syncviz.errors import RunFailed, SyncvizError

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
        _say(f"ray: joining the existing cluster at {address} (from ${ADDRESS_VARIABLE})")
        _init(address=address)
        return RaySession(address=address, started=False)
    _say(f"ray: starting a local cluster for this run (set ${ADDRESS_VARIABLE} to join one)")
    # "local": never attach silently to a `ray start` cluster found on this machine.
    _init(address="local", num_cpus=num_cpus, include_dashboard=False)
    return RaySession(address=_current_address(), started=True)


def _init(**options: object) -> None:
    """``ray.init`` with the driver kept quiet, uninterruptible until it returns."""
    import ray

    held: list[int] = []
    try:
        with _signals_held(held), _start_failure():
            # Quiet start-up: the driver's info and warning lines are noise on a command line.
            try:
                ray.init(
                    log_to_driver=False, ignore_reinit_error=True, logging_level="error", **options
                )
            except SystemExit as stop:
                # ray.init installs a SIGTERM handler of its own that calls sys.exit(15):
                # a SIGTERM while it starts is held like any other.
                if stop.code != signal.SIGTERM:
                    raise
                held.append(signal.SIGTERM)
    finally:
        if held and ray.is_initialized():  # interrupted while starting: stop what started
            ray.shutdown()
    _deliver(held)


@contextmanager
def _start_failure() -> Iterator[None]:
    """Ray failing to start (its raylet or GCS too slow, a bad address) is a failed run."""
    try:
        yield
    except (KeyboardInterrupt, SyncvizError):
        raise
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        raise RunFailed(
            f"Ray could not start or connect ({type(exc).__name__}: {lines[0] if lines else ''})",
            fix="see /tmp/ray/session_latest/logs; on a busy machine retry, "
            "or use --executor inprocess",
        ) from exc


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@contextmanager
def _signals_held(held: list[int]) -> Iterator[None]:
    """Hold SIGINT/SIGTERM (appended to ``held``) while Ray starts its processes.

    Interrupting ``ray.init`` midway has crashed the driver and left Ray's
    processes running; once it returns, the held signal is delivered (see
    :func:`_deliver`) and the caller's clean-up stops them.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda number, frame: held.append(number))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _deliver(held: list[int]) -> None:
    """Act on the first held signal as its restored handler would."""
    if held:
        signal.raise_signal(held[0])


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
