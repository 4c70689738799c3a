"""Write the notebooks in notebooks/ (run: ``python scripts/make_notebooks.py``).

One function per notebook returns its cells; :func:`main` writes them all,
without outputs, so the files stay small and reproducible.
"""

from __future__ import annotations

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
                "src, dst = Parallel(tp=2), Parallel(tp=4)\n"
                'spec = preset("llama3-8b").scaled(src, dst)\n'
                'result = run_sync(spec, src, dst, synchronizer="chatlearn", layers=[0])\n'
                'report = check(result, "chatlearn")\n'
                "report"
            ),
            new_markdown_cell(
                "The report lists every parameter of layer 0 and, for the wrong ones, which\n"
                "rows each vLLM rank holds and which it should hold. One picture says it faster:"
            ),
            new_code_cell(
                "from syncviz.diagram import layout_diagram, render\n"
                "\n"
                'qkv = "model.model.layers.0.self_attn.qkv_proj.weight"\n'
                "render(layout_diagram(result, qkv, report))"
            ),
            new_markdown_cell(
                "## The explorer\n\n"
                "Pick a model, sizes, a synchronizer and a parameter; walk the regroup op by op\n"
                "with the step slider; pick a block to read its journey."
            ),
            new_code_cell(
                'from syncviz.widgets import Explorer\n\nExplorer("llama3-8b", src, dst)'
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


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for name, build in NOTEBOOKS.items():
        notebook = build()
        for i, cell in enumerate(notebook.cells):  # fixed ids: the same file every run
            cell.id = f"{Path(name).stem[:2]}-{i:02d}"
        nbformat.validate(notebook)
        path = OUT / name
        nbformat.write(notebook, path)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
