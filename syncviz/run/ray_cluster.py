"""Connect to a Ray cluster, or start a local one, and leave it as it was found.

``RAY_ADDRESS`` set in the environment means "use that cluster": this module
connects and, on close, only disconnects. Otherwise it always starts a small local
Ray of its own, even when a ``ray start`` cluster runs on this machine, and stops
it on close. Either way one line on stderr says which.

A local cluster is a one-machine cluster: its node address is 127.0.0.1, so its
GCS, raylet, workers and agents listen on the loopback interface only (Ray binds
its servers to loopback exactly when the node address is loopback, and picks a
loopback node address only with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``). It has
no dashboard, and Ray's own output (start-up lines, its C++ log lines on stderr)
is kept off the terminal unless ``SYNCVIZ_RAY_OUTPUT=1``: it goes to
``/tmp/ray/syncviz-output.log``, beside Ray's logs in
``/tmp/ray/session_latest/logs``. A watchdog process
(:mod:`syncviz.run.ray_watchdog`) kills every process of that cluster as soon as
the process that started it is gone, however it went (SIGKILL included).

Ctrl-C or SIGTERM arriving while Ray starts is held until ``ray.init`` returns,
then raised, so the half-started cluster is shut down instead of being left
behind. A local cluster that fails to start is started once more (a line says
so); failing again, or failing to join ``RAY_ADDRESS``, is a
:class:`~syncviz.errors.RunFailed` that says so in one line. Ray is imported
inside the functions so importing this module stays light.

>>> RaySession(address="local", started=True).started
True
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syncviz.errors import RunFailed, SyncvizError

ADDRESS_VARIABLE = "RAY_ADDRESS"
OUTPUT_VARIABLE = "SYNCVIZ_RAY_OUTPUT"  # "1": let Ray print its own lines to the terminal
LOOPBACK = "127.0.0.1"
# A local cluster is started twice before giving up: Ray's raylet gives its agents
# about 15 s to come up and aborts otherwise, which a busy machine can exceed.
START_TRIES = 2
# Ray's switch for "this machine only" (its default on macOS and Windows): with it off,
# Ray's node address is loopback, and Ray binds its servers to loopback exactly then.
_ONE_MACHINE_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_WATCH_VARIABLE = "SYNCVIZ_RAY_WATCH"  # marks the processes of one local cluster
_WATCHDOG = Path(__file__).with_name("ray_watchdog.py")
# How long closing a session waits for the watchdog to kill what Ray left behind.
_WATCHDOG_WAIT_S = 30.0


class Watchdog:
    """A process that kills every process of a local cluster once its owner is gone.

    :meth:`marking` puts a mark in this process's environment while Ray starts, so
    every Ray process inherits it; :meth:`stop` (or this process dying) makes the
    watchdog kill whatever carries the mark, then exit. See
    :mod:`syncviz.run.ray_watchdog`.

    >>> dog = Watchdog()
    >>> with dog.marking():
    ...     os.environ[_WATCH_VARIABLE] == dog.mark.split("=", 1)[1]
    True
    >>> dog.stop(), _WATCH_VARIABLE in os.environ
    (0, False)
    """

    def __init__(self) -> None:
        self.mark = f"{_WATCH_VARIABLE}={uuid.uuid4().hex}"
        # Its own session: Ctrl-C at a terminal reaches the foreground group, not it.
        self.process = subprocess.Popen(
            [sys.executable, "-I", str(_WATCHDOG), self.mark, str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    @contextmanager
    def marking(self) -> Iterator[None]:
        """Within the block, processes started from here inherit the mark."""
        name, value = self.mark.split("=", 1)
        previous = os.environ.get(name)
        os.environ[name] = value
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = previous

    def stop(self, wait: float = _WATCHDOG_WAIT_S) -> int | None:
        """Let the watchdog kill what carries the mark; its exit status (None: still busy)."""
        if self.process.stdin is not None:
            with suppress(OSError):
                self.process.stdin.close()
        try:
            return self.process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            return None


@dataclass
class RaySession:
    """A Ray connection this process opened (``started``: it also started the cluster).

    ``close()`` shuts Ray down only when this session opened the connection; a
    session that found Ray already initialised leaves it alone. A session that
    started the cluster also stops its watchdog, which kills whatever Ray left.

    >>> RaySession(address="10.0.0.5:6379", started=False, owns_connection=False).close()
    """

    address: str
    started: bool
    owns_connection: bool = True
    closed: bool = False
    watchdog: Watchdog | None = None
    restore: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        """Disconnect (and stop the local cluster when this session started it)."""
        if self.closed or not self.owns_connection:
            self.closed = True
            return
        import ray

        try:
            with _ray_output_hidden():
                ray.shutdown()
        finally:
            self.closed = True
            for undo in self.restore:
                undo()
            if self.watchdog is not None:
                self.watchdog.stop()


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
    address = os.environ.get(ADDRESS_VARIABLE)
    if address and num_cpus is not None:
        raise SyncvizError(
            f"num_cpus ({num_cpus}) cannot resize the existing cluster at {address}",
            fix=f"unset {ADDRESS_VARIABLE} to start a local cluster, or leave num_cpus out",
        )
    import ray

    if ray.is_initialized():
        return RaySession(address=_current_address(), started=False, owns_connection=False)
    if address:
        _say(f"ray: joining the existing cluster at {address} (from ${ADDRESS_VARIABLE})")
        _init(address=address)
        return RaySession(address=address, started=False, restore=_ray_messages_hidden())
    _say(f"ray: starting a local cluster for this run (set ${ADDRESS_VARIABLE} to join one)")
    for attempt in range(1, START_TRIES + 1):
        watchdog = Watchdog()
        try:
            with watchdog.marking(), _one_machine():
                # "local": never attach silently to a `ray start` cluster found on this machine.
                _init(
                    address="local",
                    num_cpus=num_cpus,
                    include_dashboard=False,
                    _node_ip_address=LOOPBACK,
                )
        except RunFailed as failed:
            watchdog.stop()
            if attempt == START_TRIES:
                raise
            _say(f"ray: the local cluster did not start ({failed.message}); starting it again")
            continue
        except BaseException:
            watchdog.stop()
            raise
        break
    return RaySession(
        address=_current_address(),
        started=True,
        watchdog=watchdog,
        restore=_ray_messages_hidden(),
    )


@contextmanager
def _one_machine() -> Iterator[None]:
    """Within the block, Ray takes 127.0.0.1 for this node's address (see the module doc).

    Ray reads the switch from the environment when first imported, and its
    children read it from theirs; when Ray was imported earlier, its constant is
    set for the block too.
    """
    previous = os.environ.get(_ONE_MACHINE_VARIABLE)
    os.environ[_ONE_MACHINE_VARIABLE] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    had = getattr(constants, "ENABLE_RAY_CLUSTER", None)
    if had is not None:
        constants.ENABLE_RAY_CLUSTER = False  # type: ignore[union-attr]
    try:
        yield
    finally:
        if had is not None:
            constants.ENABLE_RAY_CLUSTER = had  # type: ignore[union-attr]
        if previous is None:
            os.environ.pop(_ONE_MACHINE_VARIABLE, None)
        else:
            os.environ[_ONE_MACHINE_VARIABLE] = previous


def _init(**options: object) -> None:
    """``ray.init`` with the driver kept quiet, uninterruptible until it returns."""
    import ray

    held: list[int] = []
    joining = options.get("address") != "local"
    try:
        with _signals_held(held), _start_failure(joining), _ray_output_hidden():
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
    except BaseException:
        if ray.is_initialized():  # failed or interrupted half-way: stop what started
            with suppress(Exception), _ray_output_hidden():
                ray.shutdown()
        _deliver(held)  # asked to stop while Ray failed to start: the interrupt wins
        raise
    finally:
        if held and ray.is_initialized():  # interrupted while starting: stop what started
            with _ray_output_hidden():
                ray.shutdown()
    _deliver(held)


@contextmanager
def _start_failure(joining: bool) -> Iterator[None]:
    """Ray failing to start or connect (a process dying, too slow, a bad address) is a
    failed run, told in one line; so is Ray ending the process (it exits when its
    raylet or GCS dies during ``ray.init``)."""
    try:
        yield
    except (KeyboardInterrupt, SyncvizError):
        raise
    except (Exception, SystemExit) as exc:
        lines = str(exc).strip().splitlines()
        if isinstance(exc, SystemExit):
            why = f"it ended the process with status {exc.code}"
        else:
            why = f"{type(exc).__name__}: {lines[0] if lines else ''}"
        what = "connect" if joining else "start"
        raise RunFailed(
            f"Ray could not {what}: {why}",
            fix="see /tmp/ray/session_latest/logs (or set "
            f"{OUTPUT_VARIABLE}=1 to see Ray's output); on a busy machine retry, "
            "or use --executor inprocess",
        ) from exc


@contextmanager
def _ray_output_hidden() -> Iterator[None]:
    """Within the block, what Ray writes to this process's stdout and stderr (its
    start-up lines, its C++ log lines) goes to a log file instead, unless
    ``SYNCVIZ_RAY_OUTPUT=1``. The file descriptors are redirected, since Ray's C++
    side writes to them directly."""
    if os.environ.get(OUTPUT_VARIABLE, "") not in ("", "0"):
        yield
        return
    for stream in (sys.stdout, sys.stderr):
        with suppress(Exception):
            stream.flush()
    log = _output_log()
    saved = []
    try:
        for fd in (1, 2):
            saved.append((fd, os.dup(fd)))
            os.dup2(log, fd)
    except OSError:  # no such descriptor (embedded interpreters): leave output as it is
        pass
    finally:
        os.close(log)
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with suppress(Exception):
                stream.flush()
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)


def _ray_messages_hidden() -> list[Callable[[], None]]:
    """Send the messages Ray's driver prints while it runs ("(raylet) A worker died
    ...": syncviz names the rank itself) to the output log, unless
    ``SYNCVIZ_RAY_OUTPUT=1``; returns what undoes it.

    Ray prints them from a thread of its own through a function of its worker
    module, replaced here while the session lasts (left alone if Ray has none).
    """
    if os.environ.get(OUTPUT_VARIABLE, "") not in ("", "0"):
        return []
    worker = sys.modules.get("ray._private.worker")
    printer = getattr(worker, "print_to_stdstream", None)
    if printer is None:
        return []

    def to_log(data: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        with suppress(Exception), os.fdopen(_output_log(), "a") as log:
            log.writelines(f"({data.get('pid', 'ray')}) {line}\n" for line in data["lines"])

    worker.print_to_stdstream = to_log  # type: ignore[union-attr]

    def undo() -> None:
        if getattr(worker, "print_to_stdstream", None) is to_log:
            worker.print_to_stdstream = printer  # type: ignore[union-attr]

    return [undo]


def _output_log() -> int:
    """A file for Ray's output: ``/tmp/ray/syncviz-output.log`` (append), else /dev/null."""
    folder = Path("/tmp/ray")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return os.open(folder / "syncviz-output.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError:
        return os.open(os.devnull, os.O_WRONLY)


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
