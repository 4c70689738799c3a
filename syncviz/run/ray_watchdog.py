"""Kill every process of a local Ray cluster once the process that started it is gone.

Run as ``python -I ray_watchdog.py NAME=VALUE OWNER_PID`` with a pipe on stdin
whose other end the starting process (``OWNER_PID``) holds (see
:mod:`syncviz.run.ray_cluster`). Reading stdin returns at end of file: the owner
closed the pipe (its Ray session ended) or died, however it died (SIGKILL
included); as a fork of the owner would keep the pipe open, the watchdog also
looks every half second whether the owner is still its parent. The watchdog then
SIGKILLs every process whose environment holds ``NAME=VALUE``, the mark the owner
put in its environment while Ray started (the GCS, the raylet and everything they
start: workers, agents, monitors inherit it), and exits once none is seen on
several scans in a row. Ray's own clean-up takes seconds to minutes after its
driver dies (workers and agents notice a dead raylet late), hence this. Standard
library only, so it starts fast
under ``-I``.

>>> marked(b"SYNCVIZ_RAY_WATCH=none-such", skip=set())
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
# Scans in a row (0.05 s apart) that must find no marked process before the watchdog ends.
QUIET_SCANS = 3
# How often the watchdog looks whether its owner still lives, while the pipe stays open.
OWNER_POLL_S = 0.5


def marked(mark: bytes, skip: set[int]) -> list[int]:
    """Live processes (zombies are gone) whose environment holds ``mark`` exactly."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in skip:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as env:
                if mark not in env.read().split(b"\0"):
                    continue
            with open(f"/proc/{name}/stat", "rb") as stat:
                if stat.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue
        except (OSError, IndexError):  # gone meanwhile, or not ours to read
            continue
        found.append(int(name))
    return found


def kill_marked(mark: bytes, limit: float = KILL_FOR_S) -> list[int]:
    """SIGKILL the marked processes until none is left (or ``limit`` s); returns survivors.

    "None left" must be seen on :data:`QUIET_SCANS` scans in a row: a process that
    one scan could not read (being started, or exiting) is looked for again.
    """
    skip = {os.getpid()}
    end = time.monotonic() + limit
    quiet = 0
    while quiet < QUIET_SCANS and time.monotonic() < end:
        alive = marked(mark, skip)
        quiet = 0 if alive else quiet + 1
        for pid in alive:
            with contextlib.suppress(OSError):  # gone meanwhile
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    return marked(mark, skip)


def wait_for_owner(owner: int) -> None:
    """Return once the pipe on stdin reaches its end or the owner process is gone.

    The end of the pipe alone is not enough: a process forked from the owner
    without exec holds the pipe's other end too, and would keep it open.
    """
    while os.getppid() == owner:
        ready, _, _ = select.select([sys.stdin.buffer], [], [], OWNER_POLL_S)
        if ready and not os.read(sys.stdin.fileno(), 65536):
            return


def main(argv: list[str]) -> int:
    if len(argv) != 3 or "=" not in argv[1] or not argv[2].isdigit():
        print("usage: ray_watchdog.py NAME=VALUE OWNER_PID < pipe", file=sys.stderr)
        return 2
    # Ctrl-C reaches the whole foreground group: the watchdog must outlast its owner.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    wait_for_owner(int(argv[2]))
    return 1 if kill_marked(argv[1].encode()) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
