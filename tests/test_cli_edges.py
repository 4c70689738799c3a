"""Hardened edges of the command line: text from files, the current directory, numbers out
of range, output rights, trace ranks and folders, rank and layer arguments."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from syncviz.cli import main
from syncviz.cli.output import terminal_safe
from syncviz.errors import SyncvizError
from syncviz.files import replacing, umask

ROOT = Path(__file__).resolve().parents[1]
LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "intermediate_size": 96,
    "vocab_size": 500,
}
FORGED = "\n<model>: src tp1 -> dst tp2, synchronizer chatlearn: OK (15 ok)\n\x1b[2J"


def _assert_nothing_forged(text: str) -> None:
    assert "\x1b" not in text and "\r" not in text
    assert not any(line.startswith("<model>:") for line in text.splitlines()), text[:600]


def test_terminal_safe_escapes_every_control_character():
    """Newline, CR, ESC, DEL, C1 and bidi overrides are shown escaped; plain text is kept."""
    assert terminal_safe("a\nb\rc\x1bd\x7fe\x9bf\u202eg\th") == (
        "a\\nb\\rc\\x1bd\\x7fe\\x9bf\\u202eg\\th"
    )
    assert terminal_safe("model.layers.0.mlp.gate_up_proj.weight ü") == (
        "model.layers.0.mlp.gate_up_proj.weight ü"
    )


def test_config_name_cannot_forge_a_line(tmp_path, capsys):
    """A `_name_or_path` holding a newline and ESC shows escaped in layout, check and errors."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**LLAMA, "_name_or_path": "evil" + FORGED}))
    assert main(["layout", "--config", str(config), "--dst-tp", "2"]) == 0
    out = capsys.readouterr().out
    _assert_nothing_forged(out)
    assert out.splitlines()[0].startswith("evil\\n<model>: src tp1 -> dst tp2")
    main(["check", "--config", str(config), "--dst-tp", "2"])
    out = capsys.readouterr().out
    _assert_nothing_forged(out)
    assert out.splitlines()[0].startswith("evil\\n<model>: src tp1")
    assert main(["layout", "--config", str(config), "--layers", "7"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "\x1b" not in err and "\\x1b[2J" in err


def test_tensor_name_in_a_dump_cannot_forge_a_line(tmp_path, capsys):
    """A dumped tensor named `...\\n<model>: ... OK\\n\\x1b[2J` is reported on its own line,
    escaped, and the verdict stays MISMATCH (exit 1)."""
    from safetensors.torch import load_file, save_file

    from syncviz.diagnose.fixtures import tiny_spec, write_checkpoint, write_dumps

    spec, ref, dump = tiny_spec("llama-mcore"), tmp_path / "ref", tmp_path / "dump"
    write_checkpoint(spec, ref)
    write_dumps(spec, ref, dump, tp=2)
    tensors = load_file(str(dump / "tp0.safetensors"))
    tensors["model.layers.0.evil" + FORGED + ".weight"] = torch.zeros(2)
    save_file(tensors, str(dump / "tp0.safetensors"))
    code = main(["diagnose", "--reference", str(ref), "--dump", str(dump), "--dst-tp", "2"])
    out = capsys.readouterr().out
    assert code == 1
    _assert_nothing_forged(out)
    assert "MISMATCH" in out.splitlines()[0]
    assert any("evil\\n<model>: src tp1" in line for line in out.splitlines())


@pytest.mark.parametrize("launcher", ["script", "-m"])
def test_current_directory_shadows_no_installed_module(tmp_path, launcher):
    """With ./matplotlib.py, ./ray.py and ./torch.py beside the --synchronizer module, only
    that module comes from the current directory (render draws, exit 0)."""
    for name in ("matplotlib", "ray", "torch"):
        (tmp_path / f"{name}.py").write_text(f"print('SHADOWED {name}')\nraise SystemExit(99)\n")
    (tmp_path / "cwd_sync.py").write_text(
        "from syncviz.sync.megatron_vllm import MegatronVllmLlamaSync\n"
        "class Good(MegatronVllmLlamaSync):\n    pass\n"
    )
    if launcher == "script":
        (tmp_path / "bin").mkdir()  # as an installed script: not in the current directory
        script = tmp_path / "bin" / "syncviz"
        script.write_text("import sys\nfrom syncviz.cli import main\nsys.exit(main())\n")
        cmd = [sys.executable, str(script)]
    else:
        cmd = [sys.executable, "-m", "syncviz"]
    argv = ["render", "--preset", "llama3-8b", "--src-tp", "1", "--dst-tp", "2", "--param"]
    argv += ["o_proj", "--synchronizer", "cwd_sync:Good", "-o", "o.png"]
    done = subprocess.run(
        [*cmd, *argv], cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert "SHADOWED" not in done.stdout + done.stderr
    assert done.returncode == 0, done.stderr[-800:]
    assert (tmp_path / "o.png").read_bytes()[:4] == b"\x89PNG"


CHECK = ["check", "--preset", "llama3-8b", "--src-tp", "1", "--dst-tp", "2"]


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--layers", "0", "--timeout", "1e10"], ("--timeout", "604800")),
        (["--layers", "0", "--timeout", "inf"], ("--timeout", "604800")),
        (["--layers", "0", "--src-vocab-divisible-by", "9" * 20], ("divisible", "16777216")),
        (["--layers", "0-100000"], ("--layers 32-100000", "llama3-8b has 32 layers")),
        (["--layers", "0-99999999999"], ("--layers 32-99999999999", "has 32 layers")),
        (["--layers", "5,40-41,90"], ("--layers 40-41,90 out of range",)),
    ],
)
def test_number_out_of_range_is_bad_input(extra, words, capsys):
    """An out-of-range number is exit 2, one line naming the flag and what is allowed."""
    assert main([*CHECK, *extra]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("syncviz: error: "), lines
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_output_file_gets_the_umask_rights(tmp_path):
    """A written file is 0666 less the umask (0644 under umask 022), not mkstemp's 0600."""
    old = os.umask(0o027)
    try:
        target = tmp_path / "out.json"
        with replacing(target) as tmp:
            tmp.write_text("{}")
        assert stat.S_IMODE(target.stat().st_mode) == 0o640
        assert umask() == 0o027
    finally:
        os.umask(old)


def test_read_only_output_is_refused(tmp_path, capsys):
    """A read-only -o target is exit 2 `permission denied` and keeps its bytes."""
    target = tmp_path / "keep.png"
    target.write_bytes(b"keep")
    target.chmod(0o444)
    argv = ["render", "--preset", "llama3-8b", "--dst-tp", "2", "--param", "o_proj"]
    assert main([*argv, "-o", str(target)]) == 2
    assert "permission denied" in capsys.readouterr().err
    assert target.read_bytes() == b"keep"
    with pytest.raises(PermissionError), replacing(target) as tmp:
        tmp.write_text("x")
    assert target.read_bytes() == b"keep"


def _trace_file(path: Path, rank: int) -> None:
    param = {
        "param": "model.model.layers.0.self_attn.o_proj.weight",
        "rank": rank,
        "phase": "regroup",
        "call": None,
        "ops": [],
        "collectives": [],
        "output_refs": [],
    }
    doc = {"schema": "syncviz.trace", "version": 1, "metadata": {}, "sources": [],
           "params": [param], "collectives": [], "warnings": []}  # fmt: skip
    path.write_text(json.dumps(doc))


def test_trace_rank_outside_the_run_is_refused(tmp_path):
    """Trace rank -5 is refused at load; rank 99 (or 2 for tp 2) by diagnose, naming the field."""
    from syncviz.diagnose import diagnose
    from syncviz.diagnose.fixtures import tiny_spec, write_checkpoint, write_dumps
    from syncviz.trace.model import SyncTrace

    _trace_file(tmp_path / "negative.json", -5)
    with pytest.raises(SyncvizError, match=r"params\[0\]\.rank must be a non-negative"):
        SyncTrace.load(tmp_path / "negative.json")
    spec, ref, dump = tiny_spec("llama-mcore"), tmp_path / "ref", tmp_path / "dump"
    write_checkpoint(spec, ref)
    write_dumps(spec, ref, dump, tp=2)
    for rank in (99, 2):
        traces = tmp_path / f"traces{rank}"
        traces.mkdir()
        _trace_file(traces / "rank0.json", rank)
        with pytest.raises(SyncvizError, match=rf"params\[0\]\.rank \({rank}\) is no rank"):
            diagnose(ref, dump, 2, trace=traces)
    ok = tmp_path / "traces1"
    ok.mkdir()
    _trace_file(ok / "rank0.json", 1)
    assert diagnose(ref, dump, 2, trace=ok).ok


def test_trace_folder_is_bounded_in_all(tmp_path):
    """Five 229 MiB traces, each under the per-file bound, are refused together (bound named)."""
    from syncviz.diagnose.result import load_traces

    for k in range(5):
        with open(tmp_path / f"rank{k}.json", "wb") as fh:
            fh.truncate(229 << 20)  # sparse: no disk spent
    with pytest.raises(SyncvizError, match=r"holds 1145 MiB of traces in 5 file\(s\).*512 MiB"):
        load_traces(tmp_path)


@pytest.mark.parametrize("value", [-1, True, 1.0, "0"])
def test_save_vllm_rank_refuses_what_is_no_rank(tmp_path, value):
    """tp_rank=-1 / True / 1.0 / "0" raise SyncvizError naming tp_rank; nothing is written."""
    from syncviz.dump import save_vllm_rank

    with pytest.raises(SyncvizError, match="tp_rank"):
        save_vllm_rank(torch.nn.Linear(2, 2), tmp_path / "out", tp_rank=value)
    assert not (tmp_path / "out").exists()


def test_diagnose_refuses_layers_that_are_no_numbers(tmp_path):
    """layers=[True] (or 1.0) is refused naming layers; numpy-like ints still work."""
    import syncviz
    from syncviz.diagnose.fixtures import tiny_spec, write_checkpoint, write_dumps

    spec, ref, dump = tiny_spec("llama-mcore"), tmp_path / "ref", tmp_path / "dump"
    write_checkpoint(spec, ref)
    write_dumps(spec, ref, dump, tp=2)
    for layers in ([True], [1.0]):
        with pytest.raises(SyncvizError, match="layers holds"):
            syncviz.diagnose(ref, dump, 2, layers=layers)
    assert syncviz.diagnose(ref, dump, 2, layers=[torch.tensor(1).item()]).ok
