"""``syncviz layout``: the words it prints, and one clear line for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from syncviz.cli import main

TINY_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "num_hidden_layers": 4,
    "hidden_size": 8,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 4,
    "vocab_size": 70,
}


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_layout_llama3_8b_words(capsys: pytest.CaptureFixture[str]) -> None:
    """llama3-8b, s=2, d=4, layer 5: 32 heads of 128 rows, 8 K/V heads, 2 per vLLM rank."""
    code, out, err = run(
        ["layout", "--preset", "llama3-8b", "--src-tp", "2", "--dst-tp", "4", "--layer", "5"],
        capsys,
    )
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "llama3-8b (llama-mcore), layer 5: trainer tp=2 pp=1 ep=1 -> vLLM tp=4 pp=1"
    qkv = lines.index("model.model.layers.5.self_attn.qkv_proj.weight  (qkv, global [6144, 4096])")
    name = "module.module.decoder.layers.5.self_attention.linear_qkv.weight"
    assert lines[qkv + 1] == f"  src pp0 tp0 {name} [3072, 4096]:"
    assert lines[qkv + 2].startswith("      rows 0-511: Q heads 0-3; rows 512-639: K head 0;")
    assert (
        "      rows 0-1023: Q heads 8-15; rows 1024-1279: K heads 2-3; rows 1280-1535: V heads 2-3"
        in lines
    )
    assert "      rows 0-4095: heads 24-31" in lines  # o_proj on vLLM rank 3
    assert "  dst pp0 tp0-3 (each) model.model.layers.5.input_layernorm.weight [4096]:" in lines
    assert "      rows 0-7167: gate rows 7168-14335; rows 7168-14335: up rows 7168-14335" in lines


def test_layout_from_config_with_pipeline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tiny config.json, src pp=2, d=4 > 2 K/V heads: stage-local trainer names, K/V replicated."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(TINY_CONFIG))
    code, out, _ = run(
        ["layout", "--config", str(path), "--src-pp", "2", "--dst-tp", "4", "--layer", "3"], capsys
    )
    assert code == 0
    assert "trainer stage 1 holds it as its local layer 1" in out
    assert (
        "  src pp1 tp0 module.module.decoder.layers.1.self_attention.linear_qkv.weight [16, 8]:"
        in out
    )
    assert "rows 0-1: Q head 1; rows 2-3: K head 0; rows 4-5: V head 0" in out
    assert "rows 0-1: Q head 2; rows 2-3: K head 1; rows 4-5: V head 1" in out


def test_layout_scaled_is_a_small_copy(capsys: pytest.CaptureFixture[str]) -> None:
    """Real sizes by default; --scaled describes the layout-preserving small copy instead."""
    argv = ["layout", "--preset", "llama3-8b", "--src-tp", "2", "--dst-tp", "4", "--layer", "0"]
    _, exact, _ = run([*argv, "--exact"], capsys)
    assert run(argv, capsys)[1] == exact
    assert "(qkv, global [6144, 4096])" in exact
    code, scaled, _ = run([*argv, "--scaled"], capsys)
    assert code == 0 and "(qkv, global [6144, 4096])" not in scaled
    # The same blocks on the same ranks, in rows of 4 instead of 128.
    assert "rows 0-15: Q heads 0-3; rows 16-19: K head 0; rows 20-23: V head 0;" in scaled
    assert "rows 0-511: Q heads 0-3; rows 512-639: K head 0; rows 640-767: V head 0;" in exact


def test_layout_globals_show_padding(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--globals adds the embedding: vocab 70 padded to 128 over 4 vLLM ranks."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(TINY_CONFIG))
    code, out, _ = run(["layout", "--config", str(path), "--dst-tp", "4", "--globals"], capsys)
    assert code == 0
    assert "rows 0-5: vocab rows 64-69; rows 6-31: padding" in out
    assert "rows 0-31: padding" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["layout", "--preset", "nope"], "unknown preset 'nope'"),
        (["layout", "--preset", "llama3-8b", "--dst-tp", "3"], "dst tp (3) must divide"),
        (["layout", "--preset", "llama3-8b", "--src-tp", "0"], "tp (0) must be a positive integer"),
        (["layout", "--preset", "llama3-8b", "--layer", "32"], "--layers 32 out of range"),
        (["layout", "--config", "/nonexistent/config.json"], "does not exist"),
        (["layout"], "one of the arguments --preset --config is required"),
        (["layout", "--preset", "llama3-8b", "--src-tp", "two"], "invalid int value"),
        (["nothing"], "invalid choice"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad input: status 2, nothing on stdout, one line on stderr naming the problem."""
    code, out, err = run(argv, capsys)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("syncviz: error: ")
    assert message in err


def test_malformed_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config.json that is not JSON: status 2, one line."""
    path = tmp_path / "config.json"
    path.write_text('{"architectures": [')
    code, _, err = run(["layout", "--config", str(path)], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "not valid JSON" in err


def test_python_dash_m_has_no_traceback() -> None:
    """``python -m syncviz`` with a bad preset: exit 2, one stderr line, no traceback."""
    done = subprocess.run(
        [sys.executable, "-m", "syncviz", "layout", "--preset", "nope"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[1],
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("syncviz: error: unknown preset")
    assert done.stderr.count("\n") == 1
