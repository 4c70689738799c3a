"""Write the example figures in docs/figures/ (run: ``python scripts/make_figures.py``).

Each teaching figure runs a synchronizer in process on a scaled model
(layout-preserving: the same heads, groups and experts, smaller rows), so every
element is drawn; the ``-real`` figures run the model at its real sizes on
symbolic ids (what ``syncviz render`` draws by default), downsampled into cells.
The faithful ChatLearn port shows the scrambles; the corrected one their fix.
"""

from __future__ import annotations

import sys
import time
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


def _mla(stem: str, name: str, param: str, real: bool = False) -> Path:
    """MLA's per-head up projection ``param`` (nope/rope rows of Q, k_nope/v rows of kv_b),
    trainer tp 2 -> vLLM tp 4, corrected synchronizer: the faithful port has no class for
    the family (it stops on every rank, as it does for Mixtral)."""
    src, dst = Parallel(tp=2), Parallel(tp=4)
    spec = preset(name) if real else preset(name).scaled(src, dst)
    provenance = "symbolic" if real else "materialized"
    result = run_sync(spec, src, dst, synchronizer="corrected", layers=[0], provenance=provenance)
    key = f"model.model.layers.0.self_attn.{param}.weight"
    return render(layout_diagram(result, key, check(result, "corrected"))).save(OUT / f"{stem}.png")


def _experts(stem: str, name: str, src: Parallel, dst: Parallel, real: bool = False) -> Path:
    """The experts view of layer 0's w13 (corrected synchronizer; scaled unless ``real``)."""
    spec = preset(name) if real else preset(name).scaled(src, dst)
    provenance = "symbolic" if real else "materialized"
    result = run_sync(spec, src, dst, synchronizer="corrected", layers=[0], provenance=provenance)
    w13 = next(p.key for p in result.plan.layout.params if p.kind == "experts_w13")
    return render(expert_diagram(result, w13)).save(OUT / f"{stem}.png")


def _timed(make, *args, **kwargs) -> Path:
    """``make(*args)``, its path printed with the seconds it took."""
    start = time.perf_counter()
    path = make(*args, **kwargs)
    print(f"{path} ({time.perf_counter() - start:.1f} s)")
    return path


def families_of_2026() -> list[Path]:
    """MLA (DeepSeek-V3, Moonlight), gpt-oss's interleaved experts, Qwen3-MoE under
    destination expert parallelism."""
    return [
        _timed(_mla, "moonlight-16b-q_proj-s2-d4-corrected", "moonlight-16b-a3b", "q_proj"),
        _timed(_mla, "moonlight-16b-kv_b_proj-s2-d4-corrected", "moonlight-16b-a3b", "kv_b_proj"),
        _timed(_mla, "deepseek-v3-q_b_proj-s2-d4-corrected-real", "deepseek-v3", "q_b_proj", True),
        _timed(
            _mla, "deepseek-v3-kv_b_proj-s2-d4-corrected-real", "deepseek-v3", "kv_b_proj", True
        ),
        _timed(
            _experts,
            "gpt-oss-20b-32-experts-w13-interleaved",
            "gpt-oss-20b",
            Parallel(tp=2, ep=2),
            Parallel(tp=2),
        ),
        _timed(
            _experts,
            "qwen3-30b-a3b-128-experts-w13-dst-ep4",
            "qwen3-30b-a3b",
            Parallel(tp=1, ep=2),
            Parallel(tp=4, ep=4),
        ),
        _timed(
            _experts,
            "qwen3-30b-a3b-128-experts-w13-dst-ep4-real",
            "qwen3-30b-a3b",
            Parallel(tp=1, ep=2),
            Parallel(tp=4, ep=4),
            real=True,
        ),
    ]


def main() -> int:
    if sys.argv[1:] == ["--new-families"]:  # only the figures of the families of 2026
        families_of_2026()
        return 0
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
    families_of_2026()
    return 0


if __name__ == "__main__":
    sys.exit(main())
