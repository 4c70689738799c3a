"""Kill every process of a local Ray cluster once the process that started it is gone.

Run as ``python -I ray_watchdog.py NAME=VALUE OWNER_PID`` with a pipe on stdin
whose other end the starting process (``OWNER_PID``) holds (see
:mod:`syncviz.run.ray_cluster`). The owner puts the mark ``NAME=VALUE`` in its
environment while Ray starts, so the GCS and the raylet inherit it. Their
children are not always readable by it: Ray's agents write their process title
over the start of their environment block, the mark sometimes with it. So while
it waits, the watchdog keeps learning the cluster every half second: a process
is the cluster's when it carries the mark or its parent is the cluster's
(remembered by pid and start time, so a process that outlived its parent, or a
reused pid, is told right).

The wait ends when reading stdin reaches end of file (the owner closed the pipe
at the end of its Ray session, or died, however it died, SIGKILL included) or
the owner is no longer the watchdog's parent (a fork of the owner would keep the
pipe open). The watchdog then SIGKILLs every process of the cluster until none
is seen on several scans in a row, and exits. Ray's own clean-up takes seconds
to minutes after its driver dies (workers and agents notice a dead raylet
late), hence this. Standard library only, so it starts fast under ``-I``.

>>> Cluster(b"SYNCVIZ_RAY_WATCH=none-such", skip=set()).alive()
[]
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time

# How long the watchdog keeps killing before it gives up on a process that will not die.
KILL_FOR_S = 10.0
# Scans in a row (0.05 s apart) that must find no process of the cluster before it ends.
QUIET_SCANS = 3
# How often the watchdog learns the cluster and looks whether its owner still lives.
POLL_S = 0.5


def processes() -> dict[int, tuple[int, str]]:
    """Every live process (zombies are gone): pid -> (parent pid, start time)."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):  # gone meanwhile
            continue
        if fields[0] != b"Z":
            # After the name: state, ppid, ... ; start time is field 22 of stat (19 here).
            table[int(name)] = (int(fields[1]), fields[19].decode())
    return table


def _carries(pid: int, mark: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as env:
            return mark in env.read().split(b"\0")
    except OSError:  # gone meanwhile, or not ours to read
        return False


class Cluster:
    """The processes of one cluster, learned scan by scan (see the module doc)."""

    def __init__(self, mark: bytes, skip: set[int]) -> None:
        self.mark = mark
        self.skip = skip
        self.known: dict[int, str] = {}  # pid -> start time

    def learn(self) -> dict[int, tuple[int, str]]:
        """Add the marked processes and every descendant of a known one; the scan's table."""
        table = processes()
        for pid, (_, start) in table.items():
            if pid not in self.skip and self.known.get(pid) != start and _carries(pid, self.mark):
                self.known[pid] = start
        grew = True
        while grew:
            grew = False
            for pid, (parent, start) in table.items():
                mine = parent in table and self.known.get(parent) == table[parent][1]
                if mine and pid not in self.skip and self.known.get(pid) != start:
                    self.known[pid] = start
                    grew = True
        return table

    def alive(self) -> list[int]:
        """Known processes still running (the same start time: not a reused pid)."""
        table = self.learn()
        return [pid for pid, start in self.known.items() if table.get(pid, (0, ""))[1] == start]

    def kill(self, limit: float = KILL_FOR_S) -> list[int]:
        """SIGKILL the cluster until none is left on :data:`QUIET_SCANS` scans in a row (or
        ``limit`` s); returns the survivors."""
        end = time.monotonic() + limit
        quiet = 0
        while quiet < QUIET_SCANS and time.monotonic() < end:
            alive = self.alive()
            quiet = 0 if alive else quiet + 1
            for pid in alive:
                with contextlib.suppress(OSError):  # gone meanwhile
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        return self.alive()


def wait_for_owner(owner: int, cluster: Cluster) -> None:
    """Learn the cluster until the pipe on stdin ends or the owner is no longer the parent."""
    while os.getppid() == owner:
        cluster.learn()
        ready, _, _ = select.select([sys.stdin.buffer], [], [], POLL_S)
        if ready and not os.read(sys.stdin.fileno(), 65536):
            return


def main(argv: list[str]) -> int:
    if len(argv) != 3 or "=" not in argv[1] or not argv[2].isdigit():
        print("usage: ray_watchdog.py NAME=VALUE OWNER_PID < pipe", file=sys.stderr)
        return 2
    # Ctrl-C reaches the whole foreground group: the watchdog must outlast its owner.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    cluster = Cluster(argv[1].encode(), skip={os.getpid()})
    wait_for_owner(int(argv[2]), cluster)
    return 1 if cluster.kill() else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
