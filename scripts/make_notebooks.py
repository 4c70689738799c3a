"""Write and run the notebooks in notebooks/ (run: ``python scripts/make_notebooks.py``).

One function per notebook returns its cells; :func:`main` writes them all and
executes each one (kernel ``python3``, the repository root on PYTHONPATH), so the
committed files carry their outputs and the repository shows the pictures.
Outputs stay small: PNGs are re-encoded with a 256-colour palette (an SVG
twin of a PNG is dropped) and no widget state is stored (a live widget's output
keeps its plain-text form only; run the cell to get the widget). ``--no-execute``
writes the cells only.
``tests/test_notebooks.py`` fails when the committed files are stale.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

OUT = Path(__file__).resolve().parent.parent / "notebooks"


def quickstart() -> nbformat.NotebookNode:
    """01: check a preset with the faithful synchronizer, draw one diagram, open the explorer."""
    return new_notebook(
        cells=[
            new_markdown_cell(
                "# syncviz quickstart\n\n"
                "Move the weights of a Megatron trainer (tensor parallel size *s*) into vLLM\n"
                "ranks (tensor parallel size *d*), check every destination tensor against an\n"
                "independent oracle, and look at where each block went. Everything runs on\n"
                "CPU in seconds on a *layout-preserving downscale* of the model."
            ),
            new_code_cell(
                "from syncviz import Parallel, preset\n"
                "from syncviz.check import check\n"
                "from syncviz.run.inprocess import run_sync\n"
                "\n"
                "src, dst = Parallel(tp=2), Parallel(tp=2)\n"
                'spec = preset("llama3-8b").scaled(src, dst)\n'
                'result = run_sync(spec, src, dst, synchronizer="chatlearn", layers=[0])\n'
                'report = check(result, "chatlearn")\n'
                "report"
            ),
            new_markdown_cell(
                "The report lists every parameter of layer 0 and, for the wrong ones, which\n"
                "rows each vLLM rank holds and which it should hold. One picture says it faster:\n"
                "each trainer shard on the left, what each vLLM rank holds in the middle and\n"
                "what it must hold on the right; bands show where rows go, magenta where wrong."
            ),
            new_code_cell(
                "from syncviz.diagram import layout_diagram, render\n"
                "\n"
                'qkv = "model.model.layers.0.self_attn.qkv_proj.weight"\n'
                "render(layout_diagram(result, qkv, report))"
            ),
            new_markdown_cell(
                "The faithful port hands each vLLM rank the trainer's interleaved\n"
                "[Q heads of a group; K; V] rows as they are. The corrected synchronizer\n"
                "regroups them into vLLM's [all Q; all K; all V] order:"
            ),
            new_code_cell(
                'fixed = run_sync(spec, src, dst, synchronizer="corrected", layers=[0])\n'
                'render(layout_diagram(fixed, qkv, check(fixed, "corrected")))'
            ),
            new_markdown_cell(
                "A row-parallel weight split by rows instead of columns: o_proj from one\n"
                "trainer rank to two vLLM ranks. Labels run along the columns, the axis that\n"
                "carries the heads; each vLLM row holds half of two trainer rows."
            ),
            new_code_cell(
                "one, two = Parallel(tp=1), Parallel(tp=2)\n"
                'small = preset("llama3-8b").scaled(one, two)\n'
                "flat = run_sync(small, one, two, layers=[0])\n"
                'render(layout_diagram(flat, "model.model.layers.0.self_attn.o_proj.weight"))'
            ),
            new_markdown_cell(
                "## The explorer\n\n"
                "It opens on the first wrong parameter; the list marks each OK, WRONG or\n"
                "ERROR. Point at a cell of the picture to read what it holds, what it should\n"
                "hold and where it came from; click it to follow that block's journey; walk\n"
                "the recorded steps with the slider."
            ),
            new_code_cell(
                "from syncviz.widgets import Explorer\n\n"
                'Explorer("llama3-8b", Parallel(tp=2), Parallel(tp=4))'
            ),
        ],
        metadata={
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
    )


sys.path.insert(0, str(Path(__file__).parent))
from notebooks_teaching import TEACHING_NOTEBOOKS  # noqa: E402  (sibling script)

NOTEBOOKS = {"01_quickstart.ipynb": quickstart, **TEACHING_NOTEBOOKS}


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
CELL_TIMEOUT_S = 600


def build(name: str) -> nbformat.NotebookNode:
    """The notebook ``name`` as written before it runs: its cells with fixed ids."""
    notebook = NOTEBOOKS[name]()
    for i, cell in enumerate(notebook.cells):  # fixed ids: the same file every run
        cell.id = f"{Path(name).stem[:2]}-{i:02d}"
    nbformat.validate(notebook)
    return notebook


def execute(notebook: nbformat.NotebookNode) -> None:
    """Run every cell in notebooks/ (raises on the first error), then shrink the outputs."""
    import nbclient

    root = str(OUT.parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    os.environ.setdefault("MPLBACKEND", "Agg")
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        store_widget_state=False,
        resources={"metadata": {"path": str(OUT)}},
    )
    client.execute()
    notebook.metadata.pop("widgets", None)
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            data.pop(WIDGET_VIEW, None)  # no stored state: the view would name a lost model
            if "image/png" in data:
                data.pop("image/svg+xml", None)  # the same picture again, several times larger
                data["image/png"] = small_png(data["image/png"])


def small_png(encoded: str) -> str:
    """A base64 PNG re-encoded with a 256-colour palette (the pictures use few colours)."""
    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(encoded))).convert("RGB")
    out = io.BytesIO()
    image.quantize(256, method=Image.Quantize.MEDIANCUT).save(out, format="PNG", optimize=True)
    smaller = out.getvalue()
    raw = base64.b64decode(encoded)
    return base64.b64encode(smaller if len(smaller) < len(raw) else raw).decode("ascii")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-execute", action="store_true", help="write the cells only")
    parser.add_argument("names", nargs="*", help="notebooks to write (default: all)")
    args = parser.parse_args(argv)
    OUT.mkdir(exist_ok=True)
    for name in args.names or NOTEBOOKS:
        notebook = build(name)
        if not args.no_execute:
            execute(notebook)
        path = OUT / name
        nbformat.write(notebook, path)
        print(path, f"{path.stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
