"""The local cluster's watchdog (``syncviz.run.ray_watchdog``), without Ray: once its owner
is gone it kills what carries its mark and what descends from that, even when a fork of the
owner keeps its pipe open or a child cannot be told by its environment."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The owner starts a watchdog and a marked `sleep`, forks a child that holds the
# watchdog's pipe open (a fork without exec keeps every descriptor), says the pids
# to kill at the end and dies.
FORK_HOLDS_THE_PIPE = """\
import os, subprocess, time
from syncviz.run.ray_cluster import Watchdog
dog = Watchdog()
with dog.marking():
    marked = subprocess.Popen(["sleep", "300"])
holder = os.fork()
if holder == 0:
    time.sleep(300)
    os._exit(0)
print(marked.pid, dog.process.pid, holder, flush=True)
os._exit(0)
"""

# The owner starts a watchdog and a marked shell whose child runs with an empty
# environment (as a Ray agent whose title overwrote its mark), lets the watchdog see
# them, kills the shell (the child outlives it, as agents outlive a killed raylet),
# says the pids and dies.
CHILD_WITHOUT_MARK = """\
import os, subprocess, sys, time
from syncviz.run.ray_cluster import Watchdog
dog = Watchdog()
with dog.marking():
    shell = subprocess.Popen(
        ["sh", "-c", "env -i sleep 300 & echo $!; wait"], stdout=subprocess.PIPE, text=True
    )
child = int(shell.stdout.readline())
time.sleep(1.5)  # three of the watchdog's scans while the shell lives
# The case's premise, read while the owner (so the child) surely lives: no mark.
assert b"SYNCVIZ_RAY_WATCH" not in open(f"/proc/{child}/environ", "rb").read()
shell.kill()
shell.wait()
print(child, dog.process.pid, flush=True)
os._exit(0)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _gone_within(pids: list[int], limit: float) -> bool:
    end = time.monotonic() + limit
    while any(_alive(pid) for pid in pids):
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def _owner_dies(script: str) -> list[int]:
    """Run ``script`` as the owner; the pids it printed (it has exited)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    owner = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE)
    assert owner.stdout is not None
    pids = [int(word) for word in owner.stdout.readline().split()]
    owner.stdout.close()
    owner.wait(60)
    return pids


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):  # gone: as it should be
            os.kill(pid, signal.SIGKILL)


def test_owner_gone_while_a_fork_holds_the_pipe_still_kills_the_marked():
    """Owner dead, its fork holding the pipe: the marked process and the watchdog end in 10 s."""
    marked, watchdog, holder = _owner_dies(FORK_HOLDS_THE_PIPE)
    try:
        assert _gone_within([marked, watchdog], 10.0), [p for p in (marked, watchdog) if _alive(p)]
    finally:
        _kill([marked, watchdog, holder])


def test_a_child_without_the_mark_that_outlived_its_marked_parent_is_killed():
    """An unmarked child of a marked process, orphaned before the owner dies, ends in 10 s."""
    child, watchdog = _owner_dies(CHILD_WITHOUT_MARK)
    try:
        assert _gone_within([child, watchdog], 10.0), [p for p in (child, watchdog) if _alive(p)]
    finally:
        _kill([child, watchdog])
