"""The import graph (scripts/import_graph.py): floors point one way and nothing runs in a cycle."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "import_graph.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["import_graph"] = module
    spec.loader.exec_module(module)
    return module


def test_no_upward_imports(tool) -> None:
    """No module imports from a floor above its own (lazy imports included)."""
    assert tool.build_graph(tool.ROOT).upward() == []


def test_no_import_time_cycles(tool) -> None:
    """No group of modules imports itself at import time."""
    assert tool.build_graph(tool.ROOT).cycles() == []


def test_lazy_cycles_stay_inside_one_package(tool) -> None:
    """A cycle closed by a lazy import is allowed only within one package (a method that
    delegates to a sibling module); across packages it is a design cycle."""
    for group in tool.build_graph(tool.ROOT).cycles(lazy=True):
        assert len({m.rpartition(".")[0] for m in group}) == 1, group


def test_every_module_has_a_floor(tool) -> None:
    """Every module is placed on a floor (a new top-level name must be added to FLOORS)."""
    graph = tool.build_graph(tool.ROOT)
    assert len(graph.modules) > 40
    for module in graph.modules:
        tool.floor_of(module)


def test_the_tool_finds_what_it_should(tool, tmp_path: Path) -> None:
    """On a hand-made package: an upward import, a cycle, a lazy cycle, and a TYPE_CHECKING
    import that is not counted."""
    pkg = tmp_path / "syncviz"
    (pkg / "oracle").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "oracle" / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("from syncviz.spec import X\n")  # floor 0 -> 1: upward
    (pkg / "spec.py").write_text("from syncviz import errors\nX = 1\n")
    (pkg / "oracle" / "a.py").write_text("from syncviz.oracle import b\n")
    (pkg / "oracle" / "b.py").write_text("def f():\n    from syncviz.oracle import a\n")
    (pkg / "parallel.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from syncviz.check import C\n"
    )
    (pkg / "check.py").write_text("")
    graph = tool.build_graph(tmp_path)
    assert graph.upward() == [("syncviz.errors", "syncviz.spec", 1)]
    assert graph.cycles() == [["syncviz.errors", "syncviz.spec"]]
    assert graph.cycles(lazy=True) == [
        ["syncviz.errors", "syncviz.spec"],
        ["syncviz.oracle.a", "syncviz.oracle.b"],
    ]
    assert graph.edges["syncviz.parallel"] == {}
