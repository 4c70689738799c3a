"""Every notebook in notebooks/ runs on CPU without an error, and is kept without outputs.

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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_has_no_outputs(path: Path) -> None:
    """The committed notebook carries no outputs or execution counts."""
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "a notebook without code cells"
    assert all(not c.outputs and c.execution_count is None for c in code)


def test_teaching_notebooks_are_in_sync_with_their_generator() -> None:
    """notebooks/02-05 are exactly what scripts/notebooks_teaching.py writes."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "notebooks_teaching", ROOT / "scripts" / "notebooks_teaching.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for filename, build in module.TEACHING_NOTEBOOKS.items():
        on_disk = nbformat.read(NOTEBOOK_DIR / filename, as_version=4)
        built = build()
        assert [c.source for c in on_disk.cells] == [c.source for c in built.cells], filename
