"""What a local Ray run listens on: every listening TCP socket of every process it started.

The processes are the driver (this process), its descendants, and every process
carrying the session's watchdog mark (Ray's GCS, raylet, agents, monitors and the
rank actors inherit it). Their sockets are found through ``/proc/PID/fd`` and
looked up in ``/proc/net/tcp`` and ``/proc/net/tcp6``; none may listen outside
127.0.0.0/8 or ::1. The same holds through the command line, where every process
of the command carries the tag that tests/test_faults.py gives it.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

LISTEN = "0A"


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as /proc/net/tcp{,6} writes it (32-bit words in host byte order).

    >>> str(_address("0100007F")), str(_address("00000000000000000000000001000000"))
    ('127.0.0.1', '::1')
    """
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(words)


def _listening() -> dict[str, tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    """{socket inode: (address, port)} of every TCP socket in LISTEN state."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == LISTEN:
                host, port = fields[1].rsplit(":", 1)
                found[fields[9]] = (_address(host), int(port, 16))
    return found


def _processes(mark: str) -> dict[int, str]:
    """{pid: command line} of this process, its descendants, and the processes marked."""
    parent, title = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        pid = int(entry.name)
        parent[pid] = int(stat.rsplit(")", 1)[1].split()[1])
        if mark.encode() in env:
            title[pid] = cmd
    ours = {os.getpid()}
    grew = True
    while grew:
        more = {pid for pid, ppid in parent.items() if ppid in ours} - ours
        ours |= more
        grew = bool(more)
    for pid in ours - set(title):
        try:
            title[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:  # ended meanwhile
            continue
    return title


def _sockets_of(pids) -> dict[int, set[str]]:
    """{pid: socket inodes it holds}."""
    held = {}
    for pid in pids:
        inodes = set()
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    link = os.readlink(fd)
                except OSError:
                    continue
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
        held[pid] = inodes
    return held


def _on_loopback(address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def test_local_ray_run_listens_on_loopback_only():
    """During a local Ray run, no listening socket of a process it started is off loopback."""
    from ray import cloudpickle

    from syncviz.run.ray_cluster import ray_session
    from syncviz.run.ray_world import RayWorld

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    saved = os.environ.pop("RAY_ADDRESS", None)
    try:
        with ray_session(num_cpus=2) as session, RayWorld(2, timeout=120.0) as world:
            assert world.run(lambda coll: coll.world_rank)[1].value == 1  # a run, sockets open
            titles = _processes(session.watchdog.mark)
            held = _sockets_of(titles)
            listening = _listening()
            actors = list(world.pids)
    finally:
        if saved is not None:
            os.environ["RAY_ADDRESS"] = saved
    ours = {
        (pid, str(listening[inode][0]), listening[inode][1])
        for pid, inodes in held.items()
        for inode in inodes
        if inode in listening
    }
    outside = sorted(
        (titles[pid][:80], address, port)
        for pid, address, port in ours
        if not _on_loopback(ipaddress.ip_address(address))
    )
    assert outside == [], outside
    # Not vacuous: the GCS, the raylet, the driver and each rank actor were seen listening.
    listeners = {pid for pid, _, _ in ours}
    kinds = {name for pid in listeners for name in ("gcs_server", "raylet") if name in titles[pid]}
    assert kinds == {"gcs_server", "raylet"}, sorted(titles[pid][:80] for pid in listeners)
    assert os.getpid() in listeners
    assert set(actors) <= listeners


def test_cli_ray_run_listens_on_loopback_only(tmp_path):
    """During `syncviz check --executor ray`, no process of the command listens off loopback."""
    from tests.test_faults import _leftovers, _ray_run, _tagged

    run, _ = _ray_run(
        tmp_path, "stall", lambda r: r.wait_for("sync"), "--timeout", "300", "--scaled"
    )
    try:
        tag = run.tag.split("=", 1)[1]
        pids = _tagged(tag)  # the command and every process it started carry the tag
        titles = {}
        for pid in pids:
            try:
                titles[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
        held = _sockets_of(titles)
        listening = _listening()
    finally:
        run.proc.terminate()
        code, _out, err = run.finish(120)
    ours = {(pid, listening[i]) for pid, inodes in held.items() for i in inodes if i in listening}
    outside = sorted(
        (titles[pid].replace("\0", " ")[:80], str(address), port)
        for pid, (address, port) in ours
        if not _on_loopback(address)
    )
    assert outside == [], outside
    listeners = {pid for pid, _ in ours}
    seen = {
        n
        for pid in listeners
        for n in ("gcs_server", "raylet", "ray::RankActor")
        if n in titles[pid]
    }
    assert seen == {"gcs_server", "raylet", "ray::RankActor"}, sorted(
        titles[p][:60] for p in listeners
    )
    assert run.proc.pid in listeners  # the driver's own server
    assert code == 143, err[-800:]
    assert _leftovers(run.tag) == []
