"""The import graph of the syncviz package: modules, cycles and upward imports.

Floors follow DESIGN.md ("Layers and their direction"), bottom up; a module may
import only from its own floor or the floors below it. Imports under
``if TYPE_CHECKING:`` are for type hints only and are not counted. Imports inside
functions (lazy ones) count like any other, for the direction and for cycles: a lazy
import still ties two modules together, and a cycle held apart only by placing an
import inside a function is still a cycle (what both sides need belongs in a module
below both). No module takes another module's underscore names, by ``from x import _y``
or by ``x._y`` on an imported module: what two modules share is a public name of the
module that owns it.

    python scripts/import_graph.py            # a summary, then every cycle, upward import
                                              # and import of another module's private name
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
        "geometry",
        "files",
        "constants",
        "families",
        "engines",
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
    ("oracle", "sync", "family_file"),
    (
        "run",
        "compare",
        "findings",
        "check",
        "diagnose",
        "dump",
        "fingerprint_dump",
        "record",
        "journey",
    ),
    ("diagram",),
    ("widgets", "explorer_session", "cli", "__main__"),
)


@dataclass
class Graph:
    """Modules and the imports between them (``edges[a]``: what ``a`` imports, with lines)."""

    modules: set[str] = field(default_factory=set)
    edges: dict[str, dict[str, int]] = field(default_factory=dict)
    lazy: dict[str, set[str]] = field(default_factory=dict)  # targets imported in functions only
    private_uses: list[tuple[str, str, int]] = field(default_factory=list)

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

    def private(self) -> list[tuple[str, str, int]]:
        """(importer, ``module._name``, line) for every use of another module's private name."""
        return sorted(self.private_uses)

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
                base = _absolute(child, module, is_package)
                # ``from a import b``: the module a.b when b is one, else a itself.
                found.extend((f"{base}.{alias.name}", child.lineno, lazy) for alias in child.names)
            inner = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            walk(child, lazy or inner)

    walk(tree)
    return found


def _is_private(name: str) -> bool:
    """``_x`` is private; ``__x__`` (a dunder) and ``_`` alone are not.

    >>> _is_private("_cells"), _is_private("__version__"), _is_private("cells")
    (True, False, False)
    """
    return name.startswith("_") and not name.endswith("__") and name != "_"


def _private_uses(
    tree: ast.Module, module: str, is_package: bool, names: set[str]
) -> list[tuple[str, int]]:
    """(``module._name``, line) for each underscore name ``tree`` takes from another syncviz
    module: ``from m import _y`` and ``m._y`` on a name bound to a module by an import."""
    found: list[tuple[str, int]] = []
    bound: dict[str, str] = {}  # local name -> the syncviz module it is
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in names and alias.asname:
                    bound[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, is_package)
            for alias in node.names:
                target = f"{base}.{alias.name}"
                if target in names:
                    bound[alias.asname or alias.name] = target
                elif _is_private(alias.name) and base in names and base != module:
                    found.append((target, node.lineno))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in bound
            and bound[node.value.id] != module
            and _is_private(node.attr)
        ):
            found.append((f"{bound[node.value.id]}.{node.attr}", node.lineno))
    return found


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module name of ``from <base> import ...``, relative bases resolved."""
    base = node.module or ""
    if node.level:
        package = module if is_package else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    return base


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
        graph.private_uses += [
            (module, name, line)
            for name, line in _private_uses(tree, module, path.name == "__init__.py", set(names))
        ]
    return graph


def summary(graph: Graph) -> dict[str, object]:
    """Counts and lists, as printed."""
    return {
        "modules": len(graph.modules),
        "imports": graph.edge_count(),
        "cycles": graph.cycles(),
        "import_time_cycles": graph.cycles(lazy=False),
        "upward": [f"{a} -> {b} (line {line})" for a, b, line in graph.upward()],
        "private": [f"{a} takes {b} (line {line})" for a, b, line in graph.private()],
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
        cycles, upward, private = data["cycles"], data["upward"], data["private"]
        print(
            f"modules: {data['modules']}  imports: {data['imports']}"
            f"  cycles: {len(cycles)}  upward imports: {len(upward)}"  # type: ignore[arg-type]
            f"  private names taken: {len(private)}"  # type: ignore[arg-type]
        )
        eager = data["import_time_cycles"]
        for group in cycles:  # type: ignore[union-attr]
            kind = "cycle" if group in eager else "cycle (closed by a lazy import)"  # type: ignore[operator]
            print(f"{kind}: " + " <-> ".join(group))
        for line in upward:  # type: ignore[union-attr]
            print("upward: " + line)
        for line in private:  # type: ignore[union-attr]
            print("private: " + line)
    return 0 if not data["cycles"] and not data["upward"] and not data["private"] else 1


if __name__ == "__main__":
    sys.exit(main())
