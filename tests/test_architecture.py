"""docs/architecture.md: its floors list exactly the modules scripts/import_graph.py places."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "architecture.md"
FLOOR = re.compile(r"^## Floor (\d+)\b")
MODULE = re.compile(r"^- `(syncviz(?:\.\w+)*)`: \S")


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts/import_graph.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["import_graph"] = module
    spec.loader.exec_module(module)
    return module


def page_floors(text: str) -> dict[int, list[str]]:
    """Floor number -> the modules listed under its heading, in page order."""
    floors: dict[int, list[str]] = {}
    current = None
    for line in text.splitlines():
        heading = FLOOR.match(line)
        if heading:
            current = int(heading.group(1))
            floors.setdefault(current, [])
        elif line.startswith("## "):
            current = None
        else:
            listed = MODULE.match(line)
            if listed and current is not None:
                floors[current].append(listed.group(1))
    return floors


def graph_floors(tool, root: Path) -> dict[int, list[str]]:
    """Floor number -> the package's modules on it, as the import graph places them."""
    floors: dict[int, list[str]] = {n: [] for n in range(len(tool.FLOORS))}
    for module in sorted(tool.build_graph(root).modules):
        floors[tool.floor_of(module)].append(module)
    return floors


def differences(tool, text: str, root: Path) -> list[str]:
    """Where the page ``text`` and the package under ``root`` disagree, one line each."""
    listed = page_floors(text)
    out = []
    for floor, modules in graph_floors(tool, root).items():
        on_page = listed.get(floor, [])
        out += [f"floor {floor}: add {m}" for m in sorted(set(modules) - set(on_page))]
        out += [f"floor {floor}: remove {m}" for m in sorted(set(on_page) - set(modules))]
        out += [f"floor {floor}: {m} twice" for m in sorted(set(on_page)) if on_page.count(m) > 1]
    return out


def test_the_page_lists_every_module_on_its_floor(tool) -> None:
    """Each floor of the page names exactly the modules the import graph puts on it."""
    assert differences(tool, PAGE.read_text(), ROOT) == []
    assert len(page_floors(PAGE.read_text())) == len(tool.FLOORS)


def test_an_added_or_moved_module_is_a_difference(tool, tmp_path: Path) -> None:
    """On a hand-made package: the page that matches it passes; a module added without the
    page, or listed on the wrong floor, is named."""
    pkg = tmp_path / "syncviz"
    pkg.mkdir()
    for name in ("__init__", "errors", "spec"):
        (pkg / f"{name}.py").write_text("")
    page = "## Floor 0: base\n\n- `syncviz.errors`: e\n\n## Floor 1: model\n\n- `syncviz.spec`: s\n"
    page += "\n## Floor 2: sizes\n\n- `syncviz`: the root\n"
    assert differences(tool, page, tmp_path) == []
    (pkg / "rules.py").write_text("")
    assert differences(tool, page, tmp_path) == ["floor 0: add syncviz.rules"]
    (pkg / "rules.py").unlink()
    moved = page.replace("- `syncviz.spec`: s\n", "").replace(
        "- `syncviz`: the root\n", "- `syncviz`: the root\n- `syncviz.spec`: s\n"
    )
    assert differences(tool, moved, tmp_path) == [
        "floor 1: add syncviz.spec",
        "floor 2: remove syncviz.spec",
    ]
