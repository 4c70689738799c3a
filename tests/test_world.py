"""The World protocol (syncviz/run/world.py): LocalWorld and RayWorld keep one contract."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol

import pytest

from syncviz.run.local_world import LocalWorld
from syncviz.run.world import RankCollective, World


class NoRun:
    """A world without run."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size

    def new_group(self, ranks: Sequence[int] | None = None, name: str | None = None) -> Any:
        return None


class OtherRun(NoRun):
    """A world whose run takes other parameters than the protocol's."""

    def run(self, fn: Callable[[Any], Any], timeout: float = 1.0) -> list[Any]:
        return []


def _members(protocol: type) -> dict[str, inspect.Signature | None]:
    """The protocol's members: a signature for each method, None for each data member."""
    out: dict[str, inspect.Signature | None] = {}
    for base in protocol.__mro__:
        if not getattr(base, "_is_protocol", False) or base in (Protocol, Generic):
            continue
        names = set(getattr(base, "__annotations__", {}))
        names |= {n for n, v in vars(base).items() if inspect.isfunction(v)}
        for name in names - {n for n in names if n.startswith("_")}:
            value = vars(base).get(name)
            out.setdefault(name, inspect.signature(value) if callable(value) else None)
    return dict(sorted(out.items()))


def _mismatches(cls: type, protocol: type = World) -> list[str]:
    """What keeps ``cls`` from satisfying ``protocol`` structurally: a missing member, or a
    method whose parameters (names, kinds, defaults) differ from the protocol's."""
    found = []
    own = [c for c in cls.__mro__ if c.__module__ not in ("builtins", "typing")]
    source = "".join(inspect.getsource(c) for c in own)
    for name, want in _members(protocol).items():
        if want is None:  # a data member: declared on the class or assigned on self
            declared = name in getattr(cls, "__annotations__", {})
            if not declared and not re.search(rf"self\.{name}\s*(:[^=\n]*)?=[^=]", source):
                found.append(f"{name}: not set")
            continue
        if not callable(getattr(cls, name, None)):
            found.append(f"{name}: missing")
            continue
        got = inspect.signature(getattr(cls, name)).parameters
        shape = [(p.name, p.kind, p.default) for p in want.parameters.values()]
        if [(p.name, p.kind, p.default) for p in got.values()] != shape:
            found.append(f"{name}{inspect.signature(getattr(cls, name))}: differs")
    return found


def test_local_world_satisfies_the_protocol() -> None:
    """LocalWorld has every member of World with the protocol's parameters, and an
    instance passes the runtime check."""
    assert _mismatches(LocalWorld) == []
    assert isinstance(LocalWorld(2), World)


def test_ray_world_satisfies_the_protocol() -> None:
    """RayWorld has every member of World with the protocol's parameters (checked on the
    class: no Ray is started)."""
    ray_world = pytest.importorskip("syncviz.run.ray_world")
    assert _mismatches(ray_world.RayWorld) == []
    assert _mismatches(ray_world.RankCollective, RankCollective) == []


def test_the_protocol_members_are_the_contract() -> None:
    """World asks for world_size, new_group and run, nothing else."""
    assert set(_members(World)) == {"world_size", "new_group", "run"}


def test_a_world_that_breaks_the_contract_is_found() -> None:
    """A class without run, or whose run takes other parameters, is reported."""

    assert _mismatches(NoRun) == ["run: missing"]
    assert _mismatches(NoRun, RankCollective)[:1] == ["all_gather: missing"]
    assert [m.split("(")[0] for m in _mismatches(OtherRun)] == ["run"]
    assert not isinstance(NoRun(1), World)


def test_a_local_rank_gets_what_the_protocol_promises() -> None:
    """The collective LocalWorld hands each rank is a RankCollective: rank, device, store."""
    results = LocalWorld(2).run(lambda c: (isinstance(c, RankCollective), c.world_rank))
    assert [r.value for r in results] == [(True, 0), (True, 1)]
