"""The import graph of the syncviz package: modules, cycles and upward imports.

Floors follow DESIGN.md ("Layers and their direction"), bottom up; a module may
import only from its own floor or the floors below it. Imports under
``if TYPE_CHECKING:`` are for type hints only and are not counted. Imports inside
functions (lazy ones) count like any other, for the direction and for cycles: a lazy
import still ties two modules together, and a cycle held apart only by placing an
import inside a function is still a cycle (what both sides need belongs in a module
below both).

    python scripts/import_graph.py            # a summary, then every cycle and upward import
    python scripts/import_graph.py --json     # the same, as JSON
    python scripts/import_graph.py --root DIR # the package under DIR (default: this checkout)

>>> graph = build_graph(ROOT)
>>> "syncviz.rules" in graph.modules and floor_of("syncviz.oracle.layout")
3
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "syncviz"

# Bottom up. A name is a module or a package (then every module in it); the package
# root (``syncviz``) sits on the floor of what it re-exports, so ``import syncviz``
# stays light.
FLOORS: tuple[tuple[str, ...], ...] = (
    (
        "errors",
        "files",
        "constants",
        "families",
        "rules",
        "progress",
        "trace",
        "provenance",
        "idset",
        "ragged",
        "fingerprint",
    ),
    ("spec",),
    ("parallel", "presets", ""),
    ("oracle", "sync"),
    ("run", "check", "check_maps", "diagnose", "dump", "fingerprint_dump", "record", "journey"),
    ("diagram",),
    ("widgets", "cli", "__main__"),
)


@dataclass
class Graph:
    """Modules and the imports between them (``edges[a]``: what ``a`` imports, with lines)."""

    modules: set[str] = field(default_factory=set)
    edges: dict[str, dict[str, int]] = field(default_factory=dict)
    lazy: dict[str, set[str]] = field(default_factory=dict)  # targets imported in functions only

    def cycles(self, *, lazy: bool = True) -> list[list[str]]:
        """Strongly connected groups of two or more modules, sorted: over every import, lazy
        ones included, or (``lazy=False``) over module-level imports only."""
        edges = {
            source: {t for t in targets if lazy or t not in self.lazy.get(source, set())}
            for source, targets in self.edges.items()
        }
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on_stack: set[str] = set()
        found: list[list[str]] = []
        counter = [0]

        def visit(node: str) -> None:  # Tarjan, iterative enough for a package this size
            index[node] = low[node] = counter[0]
            counter[0] += 1
            stack.append(node)
            on_stack.add(node)
            for target in sorted(edges.get(node, ())):
                if target not in index:
                    visit(target)
                    low[node] = min(low[node], low[target])
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
            if low[node] == index[node]:
                group = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    group.append(top)
                    if top == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))

        sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
        for module in sorted(self.modules):
            if module not in index:
                visit(module)
        return sorted(found)

    def upward(self) -> list[tuple[str, str, int]]:
        """(importer, imported, line) for every import from a lower floor to a higher one."""
        found = []
        for source, targets in sorted(self.edges.items()):
            for target, line in sorted(targets.items()):
                if floor_of(target) > floor_of(source):
                    found.append((source, target, line))
        return found

    def edge_count(self) -> int:
        return sum(len(t) for t in self.edges.values())


def floor_of(module: str) -> int:
    """The floor of a syncviz module (its first name after ``syncviz.``).

    >>> floor_of("syncviz"), floor_of("syncviz.errors"), floor_of("syncviz.cli.check")
    (2, 0, 6)
    """
    first = module.split(".")[1] if "." in module else ""
    for number, names in enumerate(FLOORS):
        if first in names:
            return number
    raise KeyError(f"{module} is on no floor: add its first name to FLOORS in {__file__}")


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module, module: str, is_package: bool) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every runtime import in ``tree``."""
    found: list[tuple[str, int, bool]] = []

    def walk(node: ast.AST, lazy: bool = False) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking_only(child):
                for other in child.orelse:
                    walk(other, lazy)
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, lazy) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    package = module if is_package else module.rpartition(".")[0]
                    for _ in range(child.level - 1):
                        package = package.rpartition(".")[0]
                    base = f"{package}.{base}" if base else package
                # ``from a import b``: the module a.b when b is one, else a itself.
                found.extend((f"{base}.{alias.name}", child.lineno, lazy) for alias in child.names)
            inner = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            walk(child, lazy or inner)

    walk(tree)
    return found


def build_graph(root: Path) -> Graph:
    """The graph of the package under ``root`` (imports of other packages are left out)."""
    graph = Graph()
    files = sorted((root / PACKAGE).rglob("*.py"))
    names = {_module_name(root, path): path for path in files}
    graph.modules = set(names)
    for module, path in names.items():
        tree = ast.parse(path.read_text(), str(path))
        targets: dict[str, int] = {}
        eager: set[str] = set()
        for imported, line, lazy in _imports(tree, module, path.name == "__init__.py"):
            # ``from syncviz.oracle import layout`` names a module; ``import X`` of a
            # name that is no module (a function, a class) counts as its module.
            while imported and imported not in names:
                imported = imported.rpartition(".")[0]
            if imported and imported != module:
                targets.setdefault(imported, line)
                if not lazy:
                    eager.add(imported)
        graph.edges[module] = targets
        graph.lazy[module] = set(targets) - eager
    return graph


def summary(graph: Graph) -> dict[str, object]:
    """Counts and lists, as printed."""
    return {
        "modules": len(graph.modules),
        "imports": graph.edge_count(),
        "cycles": graph.cycles(),
        "import_time_cycles": graph.cycles(lazy=False),
        "upward": [f"{a} -> {b} (line {line})" for a, b, line in graph.upward()],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--root", type=Path, default=ROOT, help="the checkout (default: %(default)s)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    data = summary(build_graph(args.root))
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        cycles, upward = data["cycles"], data["upward"]
        print(
            f"modules: {data['modules']}  imports: {data['imports']}"
            f"  cycles: {len(cycles)}  upward imports: {len(upward)}"  # type: ignore[arg-type]
        )
        eager = data["import_time_cycles"]
        for group in cycles:  # type: ignore[union-attr]
            kind = "cycle" if group in eager else "cycle (closed by a lazy import)"  # type: ignore[operator]
            print(f"{kind}: " + " <-> ".join(group))
        for line in upward:  # type: ignore[union-attr]
            print("upward: " + line)
    return 0 if not data["cycles"] and not data["upward"] else 1


if __name__ == "__main__":
    sys.exit(main())
