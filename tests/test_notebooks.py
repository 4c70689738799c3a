"""Every notebook in notebooks/ runs on CPU without an error, and is committed with its outputs
exactly as ``scripts/make_notebooks.py`` writes and runs it.

The kernel is ``python3`` from the ipykernel installed in this environment; it
runs in notebooks/ with the repository root on PYTHONPATH.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 180  # per cell; a Ray start on a busy 2-core runner is the slowest cell


def _param(path: Path):
    marks = [pytest.mark.ray] if "ray" in path.stem else []
    return pytest.param(path, id=path.name, marks=marks)


@pytest.mark.parametrize("path", [_param(p) for p in NOTEBOOKS])
def test_notebook_runs(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Executing every cell of the notebook raises no error (asserts inside it included)."""
    pythonpath = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(ROOT), pythonpath) if p))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


MAX_NOTEBOOK_BYTES = 1_500_000  # pictures kept small (palette PNGs), no widget state


def _script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_notebook_is_fresh(path: Path) -> None:
    """The committed notebook's cells are what make_notebooks.py writes, every code cell
    was run (numbered in order) without an error, and it is small with no widget state."""
    make = _script("make_notebooks")
    on_disk = nbformat.read(path, as_version=4)
    built = make.build(path.name)
    assert [(c.cell_type, c.source) for c in on_disk.cells] == [
        (c.cell_type, c.source) for c in built.cells
    ], f"{path.name} is stale: run python scripts/make_notebooks.py {path.name}"
    code = [c for c in on_disk.cells if c.cell_type == "code"]
    assert code, "a notebook without code cells"
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), (
        f"{path.name} was not run: python scripts/make_notebooks.py {path.name}"
    )
    outputs = [o for c in code for o in c.outputs]
    assert outputs and not [o for o in outputs if o.output_type == "error"]
    assert "widgets" not in on_disk.metadata
    assert not [o for o in outputs if make.WIDGET_VIEW in o.get("data", {})]
    assert path.stat().st_size <= MAX_NOTEBOOK_BYTES


def test_the_notebooks_show_pictures() -> None:
    """Every committed notebook carries at least one PNG picture in its outputs."""
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        pngs = [
            o for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if "image/png" in o.get("data", {})
        ]  # fmt: skip
        assert pngs, path.name


def test_teaching_notebooks_are_in_sync_with_their_generator() -> None:
    """notebooks/02-05 are exactly what scripts/notebooks_teaching.py writes."""
    module = _script("notebooks_teaching")
    for filename, build in module.TEACHING_NOTEBOOKS.items():
        on_disk = nbformat.read(NOTEBOOK_DIR / filename, as_version=4)
        built = build()
        assert [c.source for c in on_disk.cells] == [c.source for c in built.cells], filename
