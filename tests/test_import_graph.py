"""The import graph (scripts/import_graph.py): floors point one way and nothing runs in a cycle."""

from __future__ import annotations

import importlib.util
import os
import subprocess
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


def test_no_cycles_lazy_imports_included(tool) -> None:
    """No group of modules imports itself, whether at import time or through an import
    placed inside a function."""
    assert tool.build_graph(tool.ROOT).cycles() == []


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
    assert graph.cycles(lazy=False) == [["syncviz.errors", "syncviz.spec"]]
    assert graph.cycles() == [
        ["syncviz.errors", "syncviz.spec"],
        ["syncviz.oracle.a", "syncviz.oracle.b"],
    ]
    assert tool.main(["--root", str(tmp_path)]) == 1
    assert graph.edges["syncviz.parallel"] == {}


def test_a_cycle_closed_by_a_lazy_import_fails_the_tool(tool, tmp_path: Path) -> None:
    """A package whose only fault is a cycle closed inside a function makes the tool exit 1."""
    pkg = tmp_path / "syncviz" / "oracle"
    pkg.mkdir(parents=True)
    (tmp_path / "syncviz" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from syncviz.oracle import b\n")
    (pkg / "b.py").write_text("def f():\n    from syncviz.oracle import a\n")
    assert tool.build_graph(tmp_path).upward() == []
    assert tool.main(["--root", str(tmp_path)]) == 1
    (pkg / "b.py").write_text("def f():\n    return 1\n")
    assert tool.main(["--root", str(tmp_path)]) == 0


def test_no_module_takes_another_modules_private_names(tool) -> None:
    """No syncviz module imports an underscore name of another (from x import _y, or x._y)."""
    assert tool.build_graph(tool.ROOT).private() == []


def test_the_tool_finds_private_names_taken(tool, tmp_path: Path) -> None:
    """On a hand-made package: ``from m import _y`` and ``m._z`` on an imported module are
    found; a dunder, a module's own private name and a public name are not."""
    pkg = tmp_path / "syncviz"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("_y = 1\n_z = 2\n__all__ = []\nok = 3\n")
    (pkg / "spec.py").write_text(
        "from syncviz.errors import _y, __all__, ok\n"
        "from syncviz import errors\n"
        "_own = 1\n"
        "def f():\n"
        "    return errors._z + errors.ok + _own\n"
    )
    (pkg / "check.py").write_text("import syncviz.errors as e\nX = e._y\n")
    graph = tool.build_graph(tmp_path)
    assert graph.private() == [
        ("syncviz.check", "syncviz.errors._y", 2),
        ("syncviz.spec", "syncviz.errors._y", 1),
        ("syncviz.spec", "syncviz.errors._z", 5),
    ]
    assert tool.main(["--root", str(tmp_path)]) == 1


def test_drawing_with_pil_never_loads_matplotlib() -> None:
    """The Explorer's drawing path (layout view and step frame with PIL, hover words) runs
    in a fresh interpreter without importing matplotlib."""
    code = (
        "import sys\n"
        "from syncviz import Parallel\n"
        "from syncviz.spec import ModelSpec\n"
        "from syncviz.run.inprocess import run_sync\n"
        "from syncviz.diagram.model import layout_diagram\n"
        "from syncviz.diagram.pil_layout import layout_png\n"
        "from syncviz.diagram.pil import frame_png\n"
        "from syncviz.diagram.hover import cell_words\n"
        "spec = ModelSpec('tiny', 'llama-mcore', 1, 8, 4, 2, 8, 64, head_dim=2)\n"
        "result = run_sync(spec, Parallel(tp=1), Parallel(tp=2), layers=[0])\n"
        "d = layout_diagram(result, 'model.model.layers.0.self_attn.qkv_proj.weight', step=2)\n"
        "png, panels = layout_png(d)\n"
        "assert png[:4] == b'\\x89PNG' and len(panels) == 5, panels\n"
        "assert frame_png(d.frame)[:4] == b'\\x89PNG'\n"
        "assert cell_words(result, d, 'vLLM holds', 1, 0, 0)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))\n"
    )
    root = SCRIPT.parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
