"""`syncviz check`, `presets` and `render` from the command line: exit codes and words."""

from __future__ import annotations

import json

import pytest

from syncviz.cli import main
from syncviz.presets import PRESETS


def test_faithful_mismatch_exits_1_and_names_parameter_and_blocks(capsys):
    """llama3-8b s=1 -> d=2: the faithful port splits o_proj flat, so check exits 1 and says so,
    by vLLM tp 0's columns (heads 0-15, 128 columns each) and the flat half they hold."""
    code = main(
        ["check", "--preset", "llama3-8b", "--src-tp", "1", "--dst-tp", "2", "--layers", "0"]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "MISMATCH" in out
    assert "WRONG model.model.layers.0.self_attn.o_proj.weight" in out
    assert (
        "vLLM tp 0 (rank 1): columns 0-2047 (heads 0-15): hold heads 0-31 rows 0-2047,"
        " expected heads 0-15\n" in out
    )


def test_matching_sync_exits_0(capsys):
    """Equal tp on llama2-7b is a plain copy: every tensor matches and check exits 0."""
    assert (
        main(["check", "--preset", "llama2-7b", "--src-tp", "2", "--dst-tp", "2", "--layers", "0"])
        == 0
    )
    assert "OK" in capsys.readouterr().out


def test_json_report(capsys):
    """--json prints the report as JSON with one entry per parameter."""
    main(
        [
            "check",
            "--preset",
            "llama2-7b",
            "--src-tp",
            "1",
            "--dst-tp",
            "1",
            "--layers",
            "0",
            "--json",
        ]
    )
    data = json.loads(capsys.readouterr().out)
    assert data["synchronizer"] == "chatlearn"
    assert {p["status"] for p in data["params"]} == {"ok"}
    assert len(data["params"]) == 6


def test_presets_lists_every_preset(capsys):
    """`syncviz presets` prints one line per preset, then the two shipped configs."""
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(PRESETS) + 2 and lines[0].startswith("llama2-7b")
    assert [line.split()[0] for line in lines[len(PRESETS) :]] == ["gqa-custom", "mixtral-tiny"]


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--preset", "nope", "--src-tp", "2", "--dst-tp", "4"], "unknown preset 'nope'"),
        (["--preset", "llama3-8b", "--src-tp", "4", "--dst-tp", "2"], "dst tp (2) must be"),
        (["--config", "/no/such/config.json", "--src-tp", "1", "--dst-tp", "2"], "does not exist"),
        (
            ["--preset", "llama3-8b", "--src-tp", "1", "--dst-tp", "2", "--synchronizer", ":X"],
            "must be 'package.module:ClassName'",
        ),
        (
            ["--preset", "llama3-8b", "--src-tp", "1", "--dst-tp", "2", "--layers", "x"],
            "must be layer numbers and ranges, e.g. 0-3,7",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, argv, words):
    """Bad input: exit status 2 and exactly one line on stderr naming the problem."""
    assert main(["check", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("syncviz: error: ")
    assert words in err[0]


@pytest.mark.parametrize(
    "path, words",
    [
        ("no_such_module:Sync", "cannot import module 'no_such_module'"),
        ("syncviz.spec:ModelSpec", "is not a BaseSync subclass"),
    ],
)
def test_synchronizer_that_cannot_load_exits_3(capsys, path, words):
    """A synchronizer that cannot be loaded is a failed run: exit 3 and one line naming it."""
    argv = ["check", "--preset", "llama3-8b", "--src-tp", "1", "--dst-tp", "2"]
    assert main([*argv, "--layers", "0", "--synchronizer", path]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("syncviz: error: ")
    assert words in err[0]


def test_malformed_config_exits_2(tmp_path, capsys):
    """A config.json that is not JSON exits 2 with one line."""
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    assert main(["check", "--config", str(bad), "--src-tp", "1", "--dst-tp", "2"]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_render_writes_png(tmp_path, capsys):
    """`syncviz render` writes the picture it was asked for."""
    out = tmp_path / "o_proj.png"
    code = main(
        [
            "render",
            "--preset",
            "llama3-8b",
            "--src-tp",
            "1",
            "--dst-tp",
            "2",
            "--param",
            "o_proj",
            "-o",
            str(out),
        ]
    )
    assert code == 0 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_render_step_and_its_range(tmp_path, capsys):
    """--step K draws the regroup up to op K; a K past the recorded ops exits 2 naming the range."""
    out = tmp_path / "step.png"
    argv = [
        "render",
        "--preset",
        "llama3-8b",
        "--src-tp",
        "1",
        "--dst-tp",
        "2",
        "--param",
        "o_proj",
        "-o",
        str(out),
    ]
    assert main([*argv, "--step", "1"]) == 0 and out.exists()
    assert main([*argv, "--step", "99"]) == 2
    assert "use --step 1.." in capsys.readouterr().err


def test_check_and_render_name_a_finding_rank_alike(capsys, tmp_path):
    """llama3-8b scaled, trainer tp2 pp2 -> vLLM tp4, layer 16 (on trainer pp 1): the faithful
    port's o_proj finding starts each rank's line with the same name in ``check`` and
    ``render`` (``vLLM tp 0 (rank 4)``: no pp where vLLM has one stage); render's step words
    name the trainer rank with its pp as check's legend does."""
    sizes = ["--preset", "llama3-8b", "--scaled", "--src-tp", "2", "--src-pp", "2"]
    sizes += ["--dst-tp", "4", "--layers", "16"]
    assert main(["check", *sizes]) == 1
    checked = capsys.readouterr().out.splitlines()
    assert "ranks: trainer pp 0 tp 0-1 = ranks 0-1; trainer pp 1 tp 0-1 = ranks 2-3;" in (
        " ".join(checked)
    )
    at = checked.index("WRONG model.model.layers.16.self_attn.o_proj.weight")
    in_check = [line.strip().split(": ", 1) for line in checked[at + 1 : at + 5]]
    out = tmp_path / "o.png"
    assert main(["render", *sizes, "--param", "o_proj", "--step", "1", "-o", str(out)]) == 0
    rendered = capsys.readouterr().out.splitlines()
    in_render = [line.removeprefix("WRONG ").split(": ", 1) for line in rendered[1:5]]
    assert [who for who, _ in in_check] == [f"vLLM tp {t} (rank {4 + t})" for t in range(4)]
    assert in_render == in_check
    assert rendered[6] == "reads trainer pp 1 tp 0 (rank 2) rows 0-127"
