"""The local cluster's watchdog (``syncviz.run.ray_watchdog``), without Ray: it kills what
carries its mark once its owner is gone, even when a fork of the owner keeps its pipe open."""

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
# watchdog's pipe open (a fork without exec keeps every descriptor), says the three
# pids and dies.
OWNER = """\
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


def test_owner_gone_while_a_fork_holds_the_pipe_still_kills_the_marked():
    """Owner dead, its fork holding the pipe: the marked process and the watchdog end in 10 s."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER], env=env, stdout=subprocess.PIPE, text=True
    )
    assert owner.stdout is not None
    marked, watchdog, holder = (int(word) for word in owner.stdout.readline().split())
    owner.wait(60)
    try:
        assert _gone_within([marked, watchdog], 10.0), [p for p in (marked, watchdog) if _alive(p)]
    finally:
        for pid in (marked, watchdog, holder):
            with contextlib.suppress(OSError):  # gone: as it should be
                os.kill(pid, signal.SIGKILL)
        owner.stdout.close()
