"""Faults during a run, through ``python -m syncviz check`` in a subprocess, on both executors.

A synchronizer written for the test (``fault_sync.Fault``) misbehaves on one rank
when it regroups: it stalls, stops its own process (SIGSTOP), or exits. The run
must end within ``--timeout`` plus a few seconds with exit 3 and the rank named;
SIGINT / SIGTERM must end it with 130 / 143, one line, and no process left behind
(every process the run started carries a tag in its environment, looked up in /proc).
On Ray, processes are also killed from outside (a rank actor while the world is set
up, the raylet while Ray starts, the GCS or the command itself mid-run): the command
names what failed in one line, and no process it started outlives it by more than
5 s. Every wait is on a condition (a marker file, a process title), never a sleep.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FAULT_SYNC = """\
import os, signal, threading, time
from pathlib import Path
from syncviz.sync.megatron_vllm import MegatronVllmLlamaSync


class Fault(MegatronVllmLlamaSync):
    def regroup_params_to_sync(self, *args, **kwargs):
        if self.collective.world_rank == int(os.environ.get("FAULT_RANK", "0")):
            marker = os.environ.get("FAULT_MARKER")
            if marker:
                Path(marker).write_text(str(os.getpid()))
            mode = os.environ.get("FAULT_MODE", "")
            if mode == "stall":
                threading.Event().wait()
            elif mode == "sigstop":
                os.kill(os.getpid(), signal.SIGSTOP)
            elif mode == "exit":
                os._exit(1)
        return super().regroup_params_to_sync(*args, **kwargs)
"""

# The set-up of a Ray world takes milliseconds once the actors exist, too short to catch
# by watching process titles on a loaded machine. In mode "stall-join" the rank
# FAULT_RANK stops inside torch.distributed.init_process_group (the rank's part of the
# set-up), after writing its pid to FAULT_MARKER + ".join". Installed through
# sitecustomize, which every Ray worker imports at start (PYTHONPATH travels with it),
# as a wrapper put on torch.distributed when that module is first imported.
JOIN_STALL = """\
import importlib.machinery, os, sys, threading
from pathlib import Path


class _WrapJoin:
    def find_spec(self, name, path, target=None):
        if name != "torch.distributed":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            join = module.init_process_group

            def stalled(*args, **kwargs):
                if kwargs.get("rank") == int(os.environ.get("FAULT_RANK", "0")):
                    Path(os.environ["FAULT_MARKER"] + ".join").write_text(str(os.getpid()))
                    threading.Event().wait()
                return join(*args, **kwargs)

            module.init_process_group = stalled

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("FAULT_MODE") == "stall-join":
    sys.meta_path.insert(0, _WrapJoin())
"""

# llama3-8b scaled, trainer tp 1 -> vLLM tp 2: world rank 0 is the only trainer rank.
CHECK = ["check", "--preset", "llama3-8b", "--src-tp", "1", "--dst-tp", "2", "--layers", "0"]
CHECK += ["--synchronizer", "fault_sync:Fault"]


def _tagged(tag: str) -> list[int]:
    """Live processes whose environment carries ``tag`` (zombies count as gone)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if tag.encode() not in (entry / "environ").read_bytes():
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            found.append(int(entry.name))
    return found


# No process a run started may outlive the command by more than this (issue 21).
OUTLIVE_S = 5.0


def _leftovers(tag: str, within: float = OUTLIVE_S) -> list[str]:
    """Tagged processes still alive ``within`` seconds from now (call it once the command
    ended), each as "pid: command line" so a failure says what was left."""
    end = time.monotonic() + within
    while (alive := _tagged(tag)) and time.monotonic() < end:
        time.sleep(0.25)
    return [f"{pid}: {_command(pid)}" for pid in alive]


def _command(pid: int) -> str:
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "(gone)"
    return b" ".join(words).decode(errors="replace").strip()[:200]


class Run:
    """One ``python -m syncviz`` child with a tag, a fault mode and a marker file."""

    def __init__(self, tmp: Path, mode: str, *extra: str) -> None:
        (tmp / "fault_sync.py").write_text(FAULT_SYNC)
        (tmp / "sitecustomize.py").write_text(JOIN_STALL)
        self.tag = f"SYNCVIZ_FAULT_TAG={uuid.uuid4().hex}"
        self.marker = tmp / f"marker-{uuid.uuid4().hex}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(
            PYTHONPATH=f"{ROOT}{os.pathsep}{tmp}",
            FAULT_MODE=mode,
            FAULT_MARKER=str(self.marker),
            SYNCVIZ_FAULT_TAG=self.tag.split("=", 1)[1],
        )
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "syncviz", *CHECK, *extra],
            cwd=tmp,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_for(self, what: str, limit: float = 180.0) -> None:
        """Wait until the fault rank reached the sync ("sync") or its join ("join", mode
        "stall-join"), Ray is starting ("ray"), or the command loaded torch ("torch")."""
        join = Path(f"{self.marker}.join")
        end = time.monotonic() + limit
        while time.monotonic() < end and self.proc.poll() is None:
            if what == "sync" and self.marker.exists():
                return
            if what == "join" and join.exists() and join.read_text():
                return
            if what == "ray" and _ray_starting(self.tag.split("=", 1)[1]):
                return
            if what == "torch" and _has_loaded(self.proc.pid, b"libtorch"):
                return
            time.sleep(0.05)
        raise AssertionError(f"never reached {what}: {self.finish(5)[2][-800:]}")

    def finish(self, limit: float) -> tuple[int, str, str]:
        try:
            out, err = self.proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError(f"did not end within {limit} s: {err[-800:]}") from None
        return self.proc.returncode, out, err

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


def _has_loaded(pid: int, library: bytes) -> bool:
    try:
        return library in Path(f"/proc/{pid}/maps").read_bytes()
    except OSError:
        return False


def _titled(tag: str, *titles: bytes) -> list[int]:
    """Tagged processes whose program (``argv[0]``: a Ray process title, or a binary's
    path) starts with one of ``titles``, or ends with one when it is a path."""
    found = []
    for pid in _tagged(tag):
        try:
            program = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if program.startswith(titles) or program.endswith(titles):
            found.append(pid)
    return found


def _wait_titled(run: Run, *titles: bytes, limit: float = 240.0) -> int:
    """The first process of ``run`` titled one of ``titles``, waited for (a condition, no sleep)."""
    tag = run.tag.split("=", 1)[1]
    end = time.monotonic() + limit
    while time.monotonic() < end and run.proc.poll() is None:
        found = _titled(tag, *titles)
        if found:
            return found[0]
        time.sleep(0.01)
    raise AssertionError(f"no process titled {titles}: {run.finish(5)[2][-800:]}")


# Ray's raylet gives its agents about 15 s to start and aborts otherwise, which a
# loaded 2-core machine can exceed: such a run is started again, as its subject is
# what happens after Ray started.
RAY_TRIES = 3


def _ray_run(tmp: Path, mode: str, reached, *extra: str) -> tuple[Run, object]:
    """A Ray run that got as far as ``reached(run)`` (which returns what it found)."""
    for attempt in range(RAY_TRIES):
        run = Run(tmp, mode, "--executor", "ray", *extra)
        try:
            return run, reached(run)
        except AssertionError as exc:
            if "Ray could not start" not in str(exc) or attempt == RAY_TRIES - 1:
                raise
            assert _leftovers(run.tag) == []
    raise AssertionError("unreachable")


def _finished(run: Run) -> tuple[int, str, str]:
    """``run.finish``, raising when Ray itself could not start (see :func:`_ray_run`)."""
    code, out, err = run.finish(240)
    if "Ray could not start" in err:
        raise AssertionError(err[-800:])
    return code, out, err


def _ray_starting(tag: str) -> bool:
    """True once a Ray process (gcs_server or raylet) of this run exists."""
    for pid in _tagged(tag):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"gcs_server" in cmd or b"raylet" in cmd:
            return True
    return False


def _one_line(err: str) -> str:
    """syncviz's one line on stderr (Ray's own lines about a dead worker may precede it)."""
    assert "Traceback" not in err, err[-1500:]
    ours = [line for line in err.splitlines() if line.startswith("syncviz:")]
    assert len(ours) == 1, err[-1500:]
    assert err.rstrip().endswith(ours[0]), err[-1500:]
    return ours[0]


# ------------------------------------------------------------------ in-process executor


def test_stuck_inprocess_rank_ends_within_timeout_naming_it(tmp_path):
    """A rank that never returns: exit 3 within --timeout + a few s, naming trainer rank 0."""
    run = Run(tmp_path, "stall", "--timeout", "6")
    run.wait_for("sync")  # the run (and its 6 s) started before the rank got stuck
    stuck = time.monotonic()
    code, _out, err = run.finish(60)
    assert code == 3, err[-800:]
    line = _one_line(err)
    assert "trainer tp 0 (rank 0) stopped answering during regroup of model.model.layers.0" in line
    assert time.monotonic() - stuck < 6 + 5
    assert _leftovers(run.tag) == []


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_inprocess_sync_exits_cleanly(tmp_path, sig, code):
    """SIGINT / SIGTERM while a rank is stuck in the sync: 130 / 143 at once, one line."""
    run = Run(tmp_path, "stall")
    run.wait_for("sync")
    sent = time.monotonic()
    run.proc.send_signal(sig)
    rc, _out, err = run.finish(30)
    assert rc == code, err[-800:]
    assert _one_line(err) == f"syncviz: {'interrupted' if code == 130 else 'terminated'}"
    assert time.monotonic() - sent < 10
    assert _leftovers(run.tag) == []


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_inprocess_setup_exits_cleanly(tmp_path, sig, code):
    """SIGINT / SIGTERM while the command is still starting (imports, plan): 130 / 143."""
    run = Run(tmp_path, "stall")
    run.wait_for("torch")  # syncviz's handlers are in place; torch, plan, world: setting up
    assert not run.marker.exists()
    run.proc.send_signal(sig)
    rc, _out, err = run.finish(30)
    assert rc == code, err[-800:]
    assert _one_line(err).startswith(f"syncviz: {'interrupted' if code == 130 else 'terminated'}")
    assert _leftovers(run.tag) == []


# ------------------------------------------------------------------ Ray executor


@pytest.mark.ray
def test_stuck_ray_rank_sigstop_ends_within_timeout_naming_it(tmp_path):
    """A Ray rank that SIGSTOPs itself in the sync: exit 3 after --timeout, naming it, no orphan.

    Deterministic under load: the stop is waited for (the rank's marker file), the
    timeout leaves set-up room on a busy machine, and the bound is generous.
    """
    timeout = 120
    # Set-up done and the rank stopped, within the run.
    run, _ = _ray_run(
        tmp_path,
        "sigstop",
        lambda r: r.wait_for("sync", limit=timeout),
        "--timeout",
        str(timeout),
        "--scaled",
    )
    code, _out, err = run.finish(timeout + 120)
    assert code == 3, err[-800:]
    line = _one_line(err)
    assert "trainer tp 0 (rank 0) stopped answering" in line, line
    # What was left of --timeout when the run began (set-up took the rest).
    assert re.search(r"still running after the [\d.]+ s run timeout", line), line
    # The deadline counts from the run's start; the slack covers start-up and shutdown.
    assert run.elapsed < timeout + 90
    assert _leftovers(run.tag) == []


@pytest.mark.ray
def test_dead_ray_actor_exits_3(tmp_path):
    """A Ray rank whose process exits mid-sync: exit 3 (the run failed), naming the rank."""
    run, (code, _out, err) = _ray_run(tmp_path, "exit", _finished, "--timeout", "150", "--scaled")
    assert code == 3, err[-800:]
    line = _one_line(err)
    assert "rank(s) [0] of 3 died" in line, line
    assert _leftovers(run.tag) == []


@pytest.mark.ray
@pytest.mark.parametrize(
    "sig, code",
    [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
)
@pytest.mark.parametrize("when", ["ray", "sync"])
def test_signal_during_ray_run_exits_cleanly(tmp_path, sig, code, when):
    """SIGINT / SIGTERM while Ray starts or while a rank is in the sync: 130 / 143, no orphans."""
    run, _ = _ray_run(tmp_path, "stall", lambda r: r.wait_for(when), "--timeout", "170", "--scaled")
    run.proc.send_signal(sig)
    rc, _out, err = run.finish(90)
    assert rc == code, err[-800:]
    assert _one_line(err) == f"syncviz: {'interrupted' if code == 130 else 'terminated'}"
    assert _leftovers(run.tag) == []


@pytest.mark.ray
def test_ray_rank_killed_during_setup_is_named_within_seconds(tmp_path):
    """A rank actor SIGKILLed while the world is set up: exit 3 naming it (its pid), at once."""
    run, _ = _ray_run(
        tmp_path, "stall-join", lambda r: r.wait_for("join"), "--timeout", "400", "--scaled"
    )
    victim = int(Path(f"{run.marker}.join").read_text())
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    code, _out, err = run.finish(300)
    assert code == 3, err[-800:]
    line = _one_line(err)
    assert re.search(r"rank\(s\) \[0\] of 3 died while trying to join torch\.distributed ", line), (
        line
    )
    assert f"(pid {victim})" in line, line
    assert not run.marker.exists()  # it never reached the sync
    # The old wait took the whole --timeout (400 s) and blamed the ranks still alive.
    assert time.monotonic() - killed < 120
    assert _leftovers(run.tag) == []


@pytest.mark.ray
def test_raylet_killed_while_ray_starts_is_one_line_exit_3(tmp_path):
    """Every raylet SIGKILLed as it starts: exit 3, `Ray could not start`, none of Ray's output."""
    run = Run(tmp_path, "stall", "--executor", "ray", "--timeout", "400", "--scaled")
    tag = run.tag.split("=", 1)[1]
    killed = set()
    while run.proc.poll() is None:  # the local cluster is started twice before giving up
        for raylet in set(_titled(tag, b"/raylet/raylet")) - killed:
            os.kill(raylet, signal.SIGKILL)
            killed.add(raylet)
        time.sleep(0.01)
    code, out, err = run.finish(30)
    assert code == 3, err[-800:]
    assert out == ""
    lines = err.splitlines()
    assert len(killed) == 2, (killed, err[-1500:])
    assert lines[0] == "ray: starting a local cluster for this run (set $RAY_ADDRESS to join one)"
    assert lines[1].startswith("ray: the local cluster did not start (Ray could not start: ")
    assert lines[1].endswith("); starting it again")
    assert len(lines) == 3, err[-1500:]  # nothing of Ray's own
    assert _one_line(err).startswith("syncviz: error: Ray could not start: "), err[-800:]
    assert _leftovers(run.tag) == []


@pytest.mark.ray
@pytest.mark.parametrize("victim", ["cli", "gcs"])
def test_nothing_outlives_a_killed_ray_run(tmp_path, victim):
    """SIGKILL of the command, or of Ray's GCS, mid-sync: no process of the run lives 5 s on.

    A dead GCS is named as such at once (not blamed on the ranks at --timeout).
    """
    run, _ = _ray_run(
        tmp_path, "stall", lambda r: r.wait_for("sync"), "--timeout", "400", "--scaled"
    )
    if victim == "cli":
        run.proc.kill()
    else:
        gcs = _wait_titled(run, b"/gcs/gcs_server")
        os.kill(gcs, signal.SIGKILL)
    killed = time.monotonic()
    code, _out, err = run.finish(300)
    if victim == "cli":
        assert code == -signal.SIGKILL
    else:  # the run ends as a failed run, in one line naming the GCS, long before 400 s
        assert code == 3, err[-800:]
        line = _one_line(err)
        assert line.startswith("syncviz: error: Ray's gcs_server "), line
        assert f"gcs_server (pid {gcs})" in line and "died while the ranks tried to run" in line
        assert time.monotonic() - killed < 120
    assert _leftovers(run.tag) == []


@pytest.mark.ray
def test_rendezvous_store_listens_on_loopback_only():
    """The rank-0 TCPStore of a local RayWorld listens on 127.0.0.1, on no other address."""
    from syncviz.run.ray_cluster import ray_session
    from syncviz.run.ray_world import RayWorld

    with ray_session(num_cpus=2), RayWorld(2, timeout=60.0) as world:
        port = int(world.init_method.rsplit(":", 1)[1])
        listening = []
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    listening.append(local.rsplit(":", 1)[0])
        assert world.run(lambda coll: coll.world_rank)[1].value == 1
    assert listening == ["0100007F"], listening


@pytest.mark.ray
def test_gloo_sockets_of_a_local_world_listen_on_loopback_only():
    """Every socket torch.distributed opens on a local RayWorld's ranks listens on 127.0.0.1.

    Ray's own worker sockets are not ours: the sockets counted are those that go away
    when the ranks leave their process groups (the store and gloo's pairs).
    """
    from syncviz.run.ray_cluster import ray_session
    from syncviz.run.ray_world import RayWorld

    def listening(pids) -> set[tuple[str, str]]:
        inodes = set()
        for pid in pids:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    link = os.readlink(fd)
                    if link.startswith("socket:["):
                        inodes.add(link[8:-1])
        found = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:
                    found.add((fields[9], fields[1].rsplit(":", 1)[0]))
        return found

    with ray_session(num_cpus=2), RayWorld(2, timeout=60.0) as world:
        env = world.run(lambda coll: os.environ.get("GLOO_SOCKET_IFNAME"))
        up = listening(world.pids)
        world._call_all("destroy_process_groups", what="leave torch.distributed")
        ours = up - listening(world.pids)
    assert [r.value for r in env] == ["lo", "lo"]
    assert ours and {address for _, address in ours} == {"0100007F"}, ours
