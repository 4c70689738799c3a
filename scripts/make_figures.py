"""Write the example figures in docs/figures/ (run: ``python scripts/make_figures.py``).

Each teaching figure runs a synchronizer in process on a scaled model
(layout-preserving: the same heads, groups and experts, smaller rows), so every
element is drawn; the ``-real`` figures run the model at its real sizes on
symbolic ids (what ``syncviz render`` draws by default), downsampled into cells.
The faithful ChatLearn port shows the scrambles; the corrected one their fix.
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
QKV = "model.model.layers.0.self_attn.qkv_proj.weight"
O_PROJ = "model.model.layers.0.self_attn.o_proj.weight"

LAYOUTS = [
    # (file stem, preset, src tp, dst tp, parameter)
    ("llama3-8b-qkv-s2-d2", "llama3-8b", 2, 2, QKV),
    ("llama3-8b-o_proj-s1-d2", "llama3-8b", 1, 2, O_PROJ),
    ("llama3-70b-qkv-s4-d8", "llama3-70b", 4, 8, QKV),
]


def _layout(stem: str, name: str, s: int, d: int, key: str) -> list[Path]:
    src, dst = Parallel(tp=s), Parallel(tp=d)
    spec = preset(name).scaled(src, dst)
    out = []
    for synchronizer, suffix in (("chatlearn", ""), ("corrected", "-corrected")):
        result = run_sync(spec, src, dst, synchronizer=synchronizer, layers=[0])
        figure = render(layout_diagram(result, key, check(result, synchronizer)))
        out.append(figure.save(OUT / f"{stem}{suffix}.png"))
        if not suffix and key == O_PROJ:  # one SVG sample: its text stays text
            out.append(figure.save(OUT / f"{stem}.svg"))
    return out


def _real(stem: str, name: str, s: int, d: int, key: str, step: int | None = None) -> Path:
    """The faithful port's picture of ``key`` at the model's real sizes."""
    src, dst = Parallel(tp=s), Parallel(tp=d)
    result = run_sync(preset(name), src, dst, layers=[0], provenance="symbolic")
    return render(layout_diagram(result, key, step=step)).save(OUT / f"{stem}.png")


def main() -> int:
    written = []
    for row in LAYOUTS:
        written += _layout(*row)
    written.append(_real("llama3-8b-o_proj-s1-d2-real", "llama3-8b", 1, 2, O_PROJ))
    written.append(_real("llama3-70b-qkv-s4-d8-real", "llama3-70b", 4, 8, QKV))
    written.append(_real("llama3-8b-qkv-s2-d2-step2-real", "llama3-8b", 2, 2, QKV, step=2))
    src, dst = Parallel(tp=2), Parallel(tp=4)
    result = run_sync(preset("llama3-8b").scaled(src, dst), src, dst, layers=[0])
    written.append(render(transfer_diagram(result)).save(OUT / "llama3-8b-transfer-s2-d4.png"))
    src, dst = Parallel(tp=2, ep=2), Parallel(tp=4)
    result = run_sync(preset("qwen2-57b-a14b").scaled(src, dst), src, dst, layers=[0])
    w13 = next(p.key for p in result.plan.layout.params if p.kind == "experts_w13")
    written.append(render(expert_diagram(result, w13)).save(OUT / "qwen2-57b-64-experts-w13.png"))
    result = run_sync(preset("qwen2-57b-a14b"), src, dst, layers=[0], provenance="symbolic")
    figure = render(expert_diagram(result, w13))
    written.append(figure.save(OUT / "qwen2-57b-64-experts-w13-real.png"))
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
