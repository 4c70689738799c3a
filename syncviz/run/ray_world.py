"""Real ranks for the synchronizer: one Ray actor per rank, torch.distributed between them.

:class:`RayWorld` has the shape of :class:`~syncviz.run.local_world.LocalWorld`:
``new_group(ranks, name)`` and ``run(fn) -> list[RankResult]``, where ``fn`` gets
a :class:`RankCollective` (a :class:`~syncviz.sync.collective.TorchCollective`
that also knows its ``world_rank``, its ``device`` and keeps a ``store`` dict
across runs). The same per-rank function therefore runs on simulated ranks and
on real processes (gloo on CPU, NCCL when every actor has its own GPU).

Failures come back in bounded time:

- ``fn`` raises on a rank: that rank's :class:`RankResult` carries the error. The
  failing rank tears down its process groups at once, so ranks waiting on it in a
  collective fail quickly (gloo: "Connection closed by peer") instead of waiting
  for the collective timeout; ranks still running ``timeout`` seconds after the
  first failure are stopped (error result) and the world is shut down. If every
  rank returned, the process groups are rebuilt so the next ``run`` starts clean.
- An actor dies (process exit, out of memory, node loss): ``run`` raises a
  :class:`~syncviz.errors.RunFailed` naming the dead rank(s) as soon as Ray
  reports the death, after killing every other actor; the world is shut down.
- ``run(fn, timeout=...)`` passes (a rank stalled outside any collective, even
  stopped with SIGSTOP, while its peers finished): ``run`` raises RunFailed,
  naming the ranks still running, and the world is shut down.
- ``fn`` cannot be unpickled on a rank (its synchronizer class lives in a module
  the workers cannot import): that rank's result carries a RunFailed saying so.
- While the world is set up (actors starting, the rendezvous, groups), each
  rank's call is watched on its own: a rank that dies or raises is named at once
  (with Ray's reason and its pid), not its peers left waiting for it.
- Ray's own GCS or raylet dies (a local cluster this driver started): the next
  wait, within a second, raises a RunFailed naming it.

The rendezvous store listens on 127.0.0.1 when every rank is on this machine (on
rank 0's node address otherwise), never on all interfaces; gloo's own sockets then
use the loopback interface too (unless GLOO_SOCKET_IFNAME says otherwise).

Ray is imported inside methods, so importing this module does not load it.

>>> RayGroup(ranks=(0, 2), name="tp").size
2
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from syncviz.errors import RunFailed, SyncvizError
from syncviz.run.world import RankResult, World, check_world_size, group_ranks, stopped_answering

if TYPE_CHECKING:
    from syncviz.run.world import Describe, RankFn
from syncviz.sync.collective import TorchCollective

T = TypeVar("T")

BACKENDS = ("gloo", "nccl")
LOOPBACK = "127.0.0.1"  # where a one-machine world listens, store and gloo pairs alike
# How long shutdown waits for Ray to confirm each actor is gone.
_SHUTDOWN_WAIT_S = 15.0


@dataclass(frozen=True)
class RayGroup:
    """A named group of world ranks; collectives accept it or its ``name``.

    Member ``i`` of the group is world rank ``ranks[i]``, as in ``LocalGroup``.

    >>> RayGroup(ranks=(1, 3), name="pair").ranks
    (1, 3)
    """

    ranks: tuple[int, ...]
    name: str

    @property
    def size(self) -> int:
        return len(self.ranks)


class _NotAMember:
    """Stands in for a group this rank is not in, so using it names the real problem."""

    def __init__(self, group: RayGroup) -> None:
        self.group = group


class RankCollective(TorchCollective):
    """One actor's :class:`TorchCollective`, plus what a per-rank function needs to know.

    ``world_rank`` is this actor's rank in the default group, ``device`` is where
    its tensors must live for the backend (``cuda`` for NCCL), and ``store`` is a
    plain dict that stays in the actor between ``RayWorld.run`` calls. Groups are
    named by string or by :class:`RayGroup`.

    >>> coll = RankCollective(world_rank=1)
    >>> coll.store["weights"] = 3
    >>> coll.world_rank, coll.store, coll.device
    (1, {'weights': 3}, device(type='cpu'))
    """

    def __init__(
        self,
        world_rank: int,
        groups: dict[str, Any] | None = None,
        device: torch.device | None = None,
    ) -> None:
        super().__init__(groups)
        self.world_rank = world_rank
        self.device = device or torch.device("cpu")
        self.store: dict[Any, Any] = {}

    def _resolve(self, group: Any) -> Any:
        if isinstance(group, RayGroup):
            group = group.name
        resolved = super()._resolve(group)
        if isinstance(resolved, _NotAMember):
            members = list(resolved.group.ranks)
            raise SyncvizError(
                f"rank {self.world_rank} is not a member of group {resolved.group.name}",
                fix=f"call collectives on this group only from ranks {members}",
            )
        return resolved


def _knowing_own_families(fn: Callable[[RankCollective], T]) -> Callable[[RankCollective], T]:
    """``fn``, first registering in the rank's process the families this process registered
    from a file or a record (a rank is another process: it knows only the built-in ones)."""
    from syncviz.families.registry import own_families

    families = own_families()
    if not families:
        return fn

    def run(coll: RankCollective) -> T:
        from syncviz.families.registry import register

        for info, origin in families:
            register(info, origin=origin)
        return fn(coll)

    return run


class RankActor:
    """The body of one rank's actor (wrapped with ``ray.remote`` by :class:`RayWorld`).

    Usable without Ray, which keeps it easy to reason about:

    >>> actor = RankActor(rank=0, world_size=1, backend="gloo", timeout=5.0)
    >>> actor.rank, actor.world_size
    (0, 1)
    """

    def __init__(self, rank: int, world_size: int, backend: str, timeout: float) -> None:
        self.rank = rank
        self.world_size = world_size
        self.backend = backend
        self.timeout = datetime.timedelta(seconds=timeout)
        device = torch.device("cuda", 0) if backend == "nccl" else torch.device("cpu")
        self.collective = RankCollective(world_rank=rank, device=device)
        self._listen_fd: int | None = None

    def describe(self) -> tuple[str, int]:
        """(node IP, process id) for the world's set-up."""
        import ray

        return ray.util.get_node_ip_address(), os.getpid()

    def open_store(self, host: str) -> int:
        """Rank 0: listen for the rendezvous on ``host`` only; returns the port.

        torch's TCPStore would listen on every interface; handing it a socket
        bound here keeps a local run's store on loopback.
        """
        self._close_listener()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, 0))
            sock.listen(128)
            self._listen_fd = os.dup(sock.fileno())
            return int(sock.getsockname()[1])

    def init_process_groups(
        self, host: str, port: int, groups: Sequence[tuple[tuple[int, ...], str]]
    ) -> None:
        """Join the default group, then create every named group in the given order."""
        self.destroy_process_groups(keep_listener=True)
        if self.backend == "nccl":
            torch.cuda.set_device(self.collective.device)
        if self.backend == "gloo" and host == LOOPBACK:
            _gloo_on_loopback()
        master = self.rank == 0
        store = torch.distributed.TCPStore(
            host,
            port,
            self.world_size,
            master,
            self.timeout,
            master_listen_fd=self._listen_fd if master else None,
        )
        torch.distributed.init_process_group(
            self.backend,
            store=store,
            rank=self.rank,
            world_size=self.world_size,
            timeout=self.timeout,
        )
        for ranks, name in groups:
            self.new_group(ranks, name)

    def new_group(self, ranks: tuple[int, ...], name: str) -> None:
        """Create a group; torch needs every rank to call this, members or not."""
        pg = torch.distributed.new_group(list(ranks), timeout=self.timeout)
        member = self.rank in ranks
        self.collective.groups[name] = pg if member else _NotAMember(RayGroup(ranks, name))

    def run(self, fn: bytes | Callable[[RankCollective], Any]) -> RankResult[Any]:
        """Call ``fn`` with this rank's collective; an exception becomes the result's error.

        ``fn`` may come pickled (bytes), so that a function this process cannot
        unpickle is reported as that rather than as a dead rank.
        """
        if isinstance(fn, bytes):
            try:
                from ray import cloudpickle

                fn = cloudpickle.loads(fn)
            except Exception as exc:
                return RankResult(rank=self.rank, error=_unloadable(exc, self.rank))
        try:
            return RankResult(rank=self.rank, value=fn(self.collective))
        except BaseException as exc:  # reported in the result, never lost
            # Closing our connections wakes peers blocked on us in a collective
            # (gloo fails them at once) instead of leaving them to the timeout.
            with contextlib.suppress(Exception):  # the rank's own error matters more
                self.destroy_process_groups()
            return RankResult(rank=self.rank, error=_portable(exc, self.rank))

    def destroy_process_groups(self, keep_listener: bool = False) -> None:
        """Leave every process group (no-op when none is initialised)."""
        self.collective.groups.clear()
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        if not keep_listener:
            self._close_listener()

    def _close_listener(self) -> None:
        if self._listen_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._listen_fd)
            self._listen_fd = None


class RayWorld(World):
    """Ranks ``0 .. world_size-1`` as Ray actors joined by ``torch.distributed``.

    Needs an initialised Ray (see :func:`syncviz.run.ray_cluster.ray_session`).
    ``timeout`` bounds each collective, the set-up of process groups, and how
    long other ranks may keep running after one fails; ``start_timeout`` bounds
    placing the actors and starting their processes (which import torch).
    ``backend="nccl"`` needs ``num_gpus_per_actor >= 1``; each actor then uses
    its own GPU (``cuda:0`` inside the actor). See the module docstring for
    failure handling.

    >>> RayWorld(0)
    Traceback (most recent call last):
    ...
    syncviz.errors.SyncvizError: world_size (0) must be at least 1: use 1 or more

    With Ray running::

        with RayWorld(4) as world:
            world.new_group([0, 2], name="even")
            results = world.run(lambda coll: coll.rank("even") if coll.world_rank % 2 == 0 else -1)

    ``actor_body`` is the class each actor runs: :class:`RankActor`, or a subclass
    of it set on a subclass of the world.
    """

    actor_body: type[RankActor] = RankActor

    def __init__(
        self,
        world_size: int,
        *,
        timeout: float = 60.0,
        start_timeout: float = 120.0,
        backend: str = "gloo",
        num_cpus_per_actor: float = 0,
        num_gpus_per_actor: float = 0,
    ) -> None:
        _check_arguments(world_size, timeout, backend, num_cpus_per_actor, num_gpus_per_actor)
        if start_timeout <= 0:
            raise SyncvizError(
                f"start_timeout ({start_timeout}) must be positive", fix="give seconds, e.g. 120"
            )
        self.world_size = world_size
        self.timeout = timeout
        self.start_timeout = start_timeout
        self.backend = backend
        self.pids: list[int] = []
        self.node_ips: list[str] = []
        self.init_method = ""
        self.closed = False
        self._groups: list[RayGroup] = []
        self._actors: list[Any] = []
        self._failure: str | None = None
        self._describe: Describe = stopped_answering
        import ray

        if not ray.is_initialized():
            # Creating an actor would silently start a cluster that nobody stops.
            raise SyncvizError(
                "Ray is not initialised",
                fix="create the world inside `with syncviz.run.ray_cluster.ray_session():`",
            )
        actor_class = ray.remote(self.actor_body).options(
            num_cpus=num_cpus_per_actor, num_gpus=num_gpus_per_actor, max_restarts=0
        )
        self._actors = [
            actor_class.remote(rank, world_size, backend, timeout) for rank in range(world_size)
        ]
        try:
            self._start()
        except BaseException:
            self._kill_all()
            raise

    # -- set-up ---------------------------------------------------------------------------

    def _start(self) -> None:
        described = self._call_all(
            "describe", what="start the rank actors", limit=self.start_timeout
        )
        self.node_ips = [ip for ip, _ in described]
        self.pids = [pid for _, pid in described]
        self._init_process_groups()

    def _init_process_groups(self) -> None:
        # One node: loopback needs no routable interface. Several: rank 0's address.
        host = LOOPBACK if len(set(self.node_ips)) == 1 else self.node_ips[0]
        (port,) = self._call_all("open_store", host, what="open the rendezvous store", ranks=[0])
        self.init_method = f"tcp://{host}:{port}"
        groups = [(g.ranks, g.name) for g in self._groups]
        self._call_all("init_process_groups", host, port, groups, what="join torch.distributed")

    def new_group(self, ranks: Sequence[int] | None = None, name: str | None = None) -> RayGroup:
        """A group over ``ranks`` (all when omitted), created in every actor, findable by name.

        Unnamed groups get the name ``group<k>``; ``fn`` may pass the returned
        :class:`RayGroup` or its name to collectives.
        """
        self._check_open()
        ranks = group_ranks(ranks, self.world_size)
        group = RayGroup(ranks=tuple(ranks), name=name or f"group{len(self._groups) + 1}")
        try:
            self._call_all("new_group", group.ranks, group.name, what=f"create group {group.name}")
        except SyncvizError:
            # Some ranks may hold the group and others not: collectives would mismatch.
            self._failure = f"creating group {group.name} failed"
            self.shutdown()
            raise
        self._groups.append(group)
        return group

    # -- running --------------------------------------------------------------------------

    def _run(self, fn: RankFn[T], timeout: float | None, describe: Describe) -> list[RankResult[T]]:
        """:meth:`World.run` on the actors. ``timeout`` (seconds, default none) bounds the
        whole run; ``describe(rank)`` words a rank in the error that names a stuck one.
        ``fn`` is sent with cloudpickle, so it may be a closure; what it returns must pickle.
        """
        self._check_open()
        import ray
        from ray import cloudpickle

        self._describe = describe
        fn_ref = ray.put(cloudpickle.dumps(_knowing_own_families(fn)))
        rank_of = {actor.run.remote(fn_ref): r for r, actor in enumerate(self._actors)}
        results: list[RankResult[T] | None] = [None] * self.world_size
        try:
            self._wait_for_ranks(rank_of, results, timeout)
        except KeyboardInterrupt:
            # An interrupted notebook cell must not leave ranks blocked in collectives.
            self._failure = "run was interrupted"
            self.shutdown()
            raise
        final = [r if r is not None else RankResult(rank=i) for i, r in enumerate(results)]
        if not self.closed and any(not r.ok for r in final):
            self._rebuild_after_failure()
        return final

    def _wait_for_ranks(
        self,
        rank_of: dict[Any, int],
        results: list[RankResult[Any] | None],
        timeout: float | None,
    ) -> None:
        """Fill ``results`` as ranks finish; stop the world on death, deadline or grace end."""
        import ray

        pending = list(rank_of)
        deadline = None if timeout is None else time.monotonic() + timeout
        first_error_at: float | None = None
        while pending:
            grace_end = None if first_error_at is None else first_error_at + self.timeout
            limit = _earliest(deadline, grace_end)
            ready, pending = ray.wait(pending, num_returns=1, timeout=_poll(limit))
            if not ready:
                self._check_ray_alive("run")
                if _remaining(limit) == 0.0:
                    self._abandon_run(pending, rank_of, results, stopped_by_timeout=timeout)
                    return
                continue
            if pending:  # whatever else already finished, so simultaneous deaths are all named
                more, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
                ready += more
            dead = self._collect(ready, rank_of, results)
            if dead:
                self._fail_dead(dead, results)
            if first_error_at is None and any(r is not None and not r.ok for r in results):
                first_error_at = time.monotonic()

    def _collect(
        self,
        refs: list[Any],
        rank_of: dict[Any, int],
        results: list[RankResult[Any] | None],
    ) -> dict[int, str]:
        """Store finished ranks' results; return {rank: reason} for actors that died."""
        import ray

        dead: dict[int, str] = {}
        for ref in refs:
            rank = rank_of[ref]
            try:
                results[rank] = ray.get(ref)
            except ray.exceptions.RayError as exc:
                dead[rank] = _first_line(exc)
        return dead

    def _fail_dead(self, dead: dict[int, str], results: list[RankResult[Any] | None]) -> None:
        ranks = sorted(dead)
        reasons = "; ".join(f"rank {r}: {dead[r]}" for r in ranks)
        # A rank's own error may be why the others died (e.g. an NCCL watchdog abort).
        earlier = [f"rank {r.rank}: {_first_line(r.error)}" for r in results if r and r.error]
        if earlier:
            reasons += "; before that " + "; ".join(earlier)
        self._failure = f"rank(s) {ranks} died"
        self.shutdown()
        raise RunFailed(
            f"rank(s) {ranks} of {self.world_size} died during run ({reasons})",
            fix="see the dead ranks' worker logs (out of memory, crash, lost node); "
            "the world was shut down, create a new RayWorld",
            dead_ranks=ranks,
        )

    def _abandon_run(
        self,
        pending: list[Any],
        rank_of: dict[Any, int],
        results: list[RankResult[Any] | None],
        stopped_by_timeout: float | None,
    ) -> None:
        stuck = sorted(rank_of[ref] for ref in pending)
        failed = [r.rank for r in results if r is not None and not r.ok]
        self._failure = f"rank(s) {stuck} were stopped"
        self.shutdown()
        if not failed:
            names = ", ".join(self._describe(rank) for rank in stuck)
            raise RunFailed(
                f"{names}: still running after the {stopped_by_timeout:.3g} s run timeout"
                f" ({len(stuck)} of {self.world_size} ranks)",
                fix="look for a rank stuck outside a collective (a loop, a sleep, a stopped "
                "process), or raise --timeout / run(timeout=...); the world was shut down",
                stuck_ranks=stuck,
            )
        for rank in stuck:
            results[rank] = RankResult(
                rank=rank,
                error=SyncvizError(
                    f"rank {rank} was stopped: still running after rank(s) {failed} failed",
                    fix="see the failed ranks' errors; the world was shut down",
                ),
            )

    def _rebuild_after_failure(self) -> None:
        """Fresh process groups in every actor, so the next run cannot see stale traffic."""
        try:
            self._init_process_groups()
        except SyncvizError:
            self._failure = "its process groups could not be rebuilt after a failed run"
            self.shutdown()
            raise

    def _call_all(
        self,
        method: str,
        *args: Any,
        what: str,
        limit: float | None = None,
        ranks: Sequence[int] | None = None,
    ) -> list[Any]:
        """Call ``method`` on every actor (or on ``ranks``), return their values in order;
        wait at most ``limit`` (default ``timeout``) s.

        Each call is watched on its own, so a rank that dies or raises is named as
        soon as Ray reports it, instead of its peers (blocked waiting for it, e.g. in
        the rendezvous) being blamed when the limit passes.
        """
        import ray

        limit = self.timeout if limit is None else limit
        called = list(range(self.world_size)) if ranks is None else list(ranks)
        refs = [getattr(self._actors[rank], method).remote(*args) for rank in called]
        rank_of = dict(zip(refs, called, strict=True))
        values: list[Any] = [None] * len(refs)
        pending = list(refs)
        end = time.monotonic() + limit
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=_poll(end))
            if not ready:
                self._check_ray_alive(what)
                if _remaining(end):
                    continue
                late = sorted(rank_of[ref] for ref in pending)
                raise RunFailed(
                    f"rank(s) {late} could not {what} within {limit:.3g} s",
                    fix="check the cluster has the resources each actor asks for "
                    "(num_cpus_per_actor, num_gpus_per_actor) and that ranks can reach "
                    "each other",
                    ranks=late,
                )
            if pending:  # whatever else already finished, so simultaneous deaths are all named
                more, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
                ready += more
            dead: dict[int, str] = {}
            failed: dict[int, str] = {}
            for ref in ready:
                rank = rank_of[ref]
                try:
                    values[refs.index(ref)] = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    dead[rank] = _death_reason(exc)
                except ray.exceptions.RayError as exc:
                    failed[rank] = _first_line(getattr(exc, "cause", None) or exc)
            if dead or failed:
                self._fail_setup(what, dead, failed)
        return values

    def _check_ray_alive(self, what: str) -> None:
        """Raise RunFailed naming Ray's own process (GCS, raylet) that died, if one did.

        Without them actors neither answer nor die in Ray's eyes, so a wait would
        last until its timeout and then blame the ranks.
        """
        dead = _dead_ray_processes()
        if not dead:
            return
        self._failure = f"{dead[0]} died"
        self.closed = True  # Ray cannot kill the actors any more: their processes are ended here
        if self._is_local():
            for pid in self.pids:
                with contextlib.suppress(OSError):  # gone already
                    os.kill(pid, signal.SIGKILL)
            _wait_for_exit(self.pids, _SHUTDOWN_WAIT_S)
        raise RunFailed(
            f"Ray's {', '.join(dead)} died while the ranks tried to {what}",
            fix="see /tmp/ray/session_latest/logs (killed, out of memory, crash); "
            "the run was abandoned",
        )

    def _fail_setup(self, what: str, dead: dict[int, str], failed: dict[int, str]) -> None:
        """Raise the RunFailed for ranks that died or raised while the world was set up."""
        self._failure = f"rank(s) {sorted(dead or failed)} failed to {what}"
        if dead:
            ranks = sorted(dead)
            reasons = "; ".join(f"rank {r}: {dead[r]}" for r in ranks)
            raise RunFailed(
                f"rank(s) {ranks} of {self.world_size} died while trying to {what} ({reasons})",
                fix="see the dead ranks' worker logs under /tmp/ray/session_latest/logs "
                "(killed, out of memory, crash); the world was shut down",
                dead_ranks=ranks,
            )
        ranks = sorted(failed)
        reasons = "; ".join(f"rank {r}: {failed[r]}" for r in ranks)
        raise RunFailed(
            f"rank(s) {ranks} of {self.world_size} failed to {what} ({reasons})",
            fix="see the error; the world was shut down",
            ranks=ranks,
        )

    # -- shutting down --------------------------------------------------------------------

    def shutdown(self) -> None:
        """Leave the process groups where possible, then kill every actor and wait for it.

        Safe to call twice. Waits (bounded) until Ray reports each actor dead and,
        for actors on this machine, until their processes are gone.
        """
        if self.closed:
            return
        self.closed = True
        import ray

        if not ray.is_initialized():  # Ray already stopped, and the actors with it
            return
        if self._failure is None and self._actors:
            refs = [actor.destroy_process_groups.remote() for actor in self._actors]
            ray.wait(refs, num_returns=len(refs), timeout=min(self.timeout, 5.0))
        self._kill_all()

    def _kill_all(self) -> None:
        import ray

        for actor in self._actors:
            ray.kill(actor, no_restart=True)
        # A call on a killed actor fails once Ray has marked it dead: wait for that.
        probes = [actor.describe.remote() for actor in self._actors]
        ray.wait(probes, num_returns=len(probes), timeout=_SHUTDOWN_WAIT_S)
        _wait_for_exit(self.pids if self._is_local() else [], _SHUTDOWN_WAIT_S)
        self.closed = True

    def _is_local(self) -> bool:
        import ray

        here = ray.util.get_node_ip_address()
        return bool(self.node_ips) and all(ip == here for ip in self.node_ips)

    def _check_open(self) -> None:
        if self.closed:
            why = f" after {self._failure}" if self._failure else ""
            raise SyncvizError(
                f"this RayWorld was shut down{why}",
                fix="create a new RayWorld",
            )

    def __enter__(self) -> RayWorld:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()


def _check_arguments(
    world_size: int, timeout: float, backend: str, num_cpus: float, num_gpus: float
) -> None:
    check_world_size(world_size)
    if timeout <= 0:
        raise SyncvizError(f"timeout ({timeout}) must be positive", fix="give seconds, e.g. 60")
    if backend not in BACKENDS:
        raise SyncvizError(
            f"backend {backend!r} is not supported", fix="use 'gloo' (CPU) or 'nccl' (GPU)"
        )
    if num_cpus < 0 or num_gpus < 0:
        raise SyncvizError(
            f"num_cpus_per_actor ({num_cpus}) and num_gpus_per_actor ({num_gpus}) "
            "must not be negative",
            fix="use 0 or more",
        )
    if backend == "nccl" and num_gpus < 1:
        raise SyncvizError(
            f"backend 'nccl' needs a whole GPU per actor, got num_gpus_per_actor={num_gpus}",
            fix="pass num_gpus_per_actor=1, or use backend='gloo'",
        )


def _portable(exc: BaseException, rank: int) -> BaseException:
    """The exception itself if it survives pickling, else a SyncvizError that tells it."""
    from ray import cloudpickle  # what Ray will use to send the result back

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        cloudpickle.loads(cloudpickle.dumps(exc))
    except Exception:
        return SyncvizError(
            f"rank {rank} raised {type(exc).__name__}: {exc}",
            fix="the original exception could not be sent back; see its traceback",
            traceback=text,
        )
    if hasattr(exc, "add_note"):  # Python 3.11+: keep where in the rank it failed
        exc.add_note(f"raised on rank {rank}:\n{text}")
    return exc


def _unloadable(exc: BaseException, rank: int) -> RunFailed:
    """The error for a function (or the synchronizer class it holds) a rank cannot unpickle."""
    missing = getattr(exc, "name", None) if isinstance(exc, ImportError) else None
    what = f"module {missing!r} is not importable there" if missing else _first_line(exc)
    return RunFailed(
        f"rank {rank} could not deserialize the code it was sent ({what})",
        fix="a --synchronizer class must live in a module every Ray worker can import: "
        "install it, or put its folder on PYTHONPATH before Ray starts",
    )


def _gloo_on_loopback() -> None:
    """Point gloo at the loopback interface; it otherwise binds to whatever address the
    host name resolves to, which on many machines is reachable from the network."""
    if "GLOO_SOCKET_IFNAME" in os.environ:  # the user's choice wins
        return
    names = [name for _, name in socket.if_nameindex()]
    loopback = next((n for n in names if n == "lo" or n.startswith("lo")), None)
    if loopback is not None:
        os.environ["GLOO_SOCKET_IFNAME"] = loopback


def _wait_for_exit(pids: Sequence[int], limit: float) -> None:
    end = time.monotonic() + limit
    while any(_process_alive(pid) for pid in pids) and time.monotonic() < end:
        time.sleep(0.05)


def _process_alive(pid: int) -> bool:
    """True while ``pid`` runs on this machine (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    except OSError:  # no /proc: fall back to signal 0
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True


# How often a wait on the ranks looks whether Ray's own processes still run.
_POLL_S = 1.0


def _dead_ray_processes() -> list[str]:
    """Ray's GCS and raylet processes this driver started that have ended ("raylet (pid 7)").

    Only a driver that started its cluster holds them (read from Ray's node
    object; empty when Ray keeps no such record).
    """
    node = getattr(sys.modules.get("ray._private.worker"), "_global_node", None)
    processes = getattr(node, "all_processes", None) or {}
    dead = []
    for kind in ("gcs_server", "raylet"):
        for info in processes.get(kind, ()):
            process = getattr(info, "process", None)
            if process is not None and process.poll() is not None:
                dead.append(f"{kind} (pid {process.pid})")
    return dead


def _poll(moment: float | None) -> float:
    """How long one wait may last: until ``moment``, at most :data:`_POLL_S`."""
    left = _remaining(moment)
    return _POLL_S if left is None else min(left, _POLL_S)


def _earliest(*moments: float | None) -> float | None:
    known = [m for m in moments if m is not None]
    return min(known) if known else None


def _remaining(moment: float | None) -> float | None:
    return None if moment is None else max(0.0, moment - time.monotonic())


def _death_reason(exc: BaseException) -> str:
    """Why Ray says an actor died, in a few words: the first sentence of its exit
    detail (else of the error), and the process id when Ray tells it.

    >>> _death_reason(RuntimeError("The actor died.\\n\\tpid: 7\\nWorker exit type: "
    ...     "SYSTEM_ERROR Worker exit detail: Worker unexpectedly exits. Some causes: ..."))
    'Worker unexpectedly exits (pid 7)'
    """
    text = str(exc)
    detail = re.search(r"exit detail:\s*(.+)", text, re.S)
    words = " ".join((detail.group(1) if detail else text).split())
    reason = re.split(r"(?<=[^.\s]{2})\. ", words, maxsplit=1)[0].rstrip(".")
    pid = re.search(r"\b(?:pid|PID)[:=]?\s*(\d+)", text)
    return f"{reason} (pid {pid.group(1)})" if pid else reason or type(exc).__name__


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"
