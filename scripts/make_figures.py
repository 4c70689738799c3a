"""Write the example figures in docs/figures/ (run: ``python scripts/make_figures.py``).

Each figure runs the faithful ChatLearn synchronizer in process on a scaled
model (layout-preserving, small enough to draw element-exact).
"""

from __future__ import annotations

import sys
from pathlib import Path

from syncviz import Parallel, preset
from syncviz.check import check
from syncviz.diagram import layout_diagram, render, transfer_diagram
from syncviz.diagram.experts import expert_diagram
from syncviz.run.inprocess import run_sync

OUT = Path(__file__).resolve().parent.parent / "docs" / "figures"


def main() -> int:
    src, dst = Parallel(tp=2), Parallel(tp=4)
    spec = preset("llama3-8b").scaled(src, dst)
    result = run_sync(spec, src, dst, layers=[0])
    qkv = "model.model.layers.0.self_attn.qkv_proj.weight"
    written = [
        render(layout_diagram(result, qkv, check(result))).save(OUT / "llama3-8b-qkv-s2-d4.png"),
        render(transfer_diagram(result)).save(OUT / "llama3-8b-transfer-s2-d4.png"),
    ]
    src, dst = Parallel(tp=2, ep=2), Parallel(tp=4)
    spec = preset("qwen1.5-moe-a2.7b").scaled(src, dst)
    result = run_sync(spec, src, dst, layers=[0])
    w13 = next(p.key for p in result.plan.layout.params if p.kind == "experts_w13")
    written.append(render(expert_diagram(result, w13)).save(OUT / "qwen-moe-w13-s2ep2-d4.png"))
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
