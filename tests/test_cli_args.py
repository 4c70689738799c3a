"""The command line's shared arguments: one spelling per option, ranges, defaults in help,
--version, "did you mean", shipped configs by name, user synchronizers from the current
directory, and suggestions that are accepted when taken."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from syncviz.cli import build_parser, main
from syncviz.cli.args import layer_list
from syncviz.parallel import Parallel, validate
from syncviz.presets import PRESETS
from syncviz.rules import first_broken

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0", [0]), ("0-3", [0, 1, 2, 3]), ("0-3,7", [0, 1, 2, 3, 7]), ("2,1-2", [2, 1])],
)
def test_layer_ranges(text: str, expected: list[int]) -> None:
    """--layers takes numbers and ranges, each layer once, in the order given."""
    assert layer_list(text) == expected


def test_every_command_spells_options_alike() -> None:
    """check and render both take --synchronizer NAME, --scaled/--exact and --layers."""
    parser = build_parser()
    for command in ("check", "render"):
        args = parser.parse_args(
            [command, "--preset", "llama3-8b", "--exact", "--layers", "1-2", "--synchronizer",
             "mypkg.sync:MySync", *(["-o", "x.png"] if command == "render" else [])]
        )  # fmt: skip
        assert (args.scaled, args.layers, args.synchronizer) == (False, [1, 2], "mypkg.sync:MySync")
    layout = parser.parse_args(["layout", "--preset", "llama3-8b", "--layer", "3"])
    assert layout.layers == [3]


def test_help_shows_defaults(capsys) -> None:
    """`check --help` says what an omitted size is: tp 1 -> 1, synchronizer chatlearn."""
    assert main(["check", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "trainer tp size (default: 1)" in out and "inference engine tp size (default: 1)" in out
    assert "package.module:ClassName (default: chatlearn)" in out


def test_version(capsys) -> None:
    """--version prints the package version."""
    from syncviz import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"syncviz {__version__}"


def test_mistyped_preset_suggests_the_close_names(capsys) -> None:
    """A near miss is answered with the closest names, exit 2."""
    assert main(["layout", "--preset", "llama3-8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("syncviz: error: unknown preset 'llama3-8': did you mean llama3-8b")


def test_shipped_config_by_name(capsys) -> None:
    """--preset gqa-custom reads syncviz/configs/gqa-custom.json; `presets` lists it."""
    assert main(["layout", "--preset", "gqa-custom", "--src-tp", "2", "--dst-tp", "4"]) == 0
    assert capsys.readouterr().out.startswith("gqa-custom (llama-mcore), layer 0")
    assert main(["presets"]) == 0
    assert "gqa-custom" in capsys.readouterr().out


def test_issue_case_suggestions_are_accepted(capsys) -> None:
    """check llama3-8b 3 -> 6 suggests src tp 1, 2, 4 or 8; each then passes src tp's rules."""
    assert main(["check", "--preset", "llama3-8b", "--src-tp", "3", "--dst-tp", "6"]) == 2
    err = capsys.readouterr().err
    assert "src tp (3) must divide num_attention_heads (32): use 1, 2, 4 or 8" in err
    for s in map(int, re.findall(r"\d+", err.split("use ")[1])):
        after = first_broken(PRESETS["llama3-8b"], Parallel(s), Parallel(6))
        assert after is not None and after.field == "dst.tp"  # dst tp 6 is next, then fixed
        validate(PRESETS["llama3-8b"], Parallel(s), Parallel(max(after.choices)))


@pytest.mark.parametrize("name", list(PRESETS))
def test_cli_suggestions_walk_to_acceptance(name: str, capsys) -> None:
    """From tp 3 -> 6 on every preset, taking the CLI's first suggestion each time reaches
    sizes `syncviz layout` accepts within four steps."""
    sizes = {"--src-tp": 3, "--dst-tp": 6}
    for _ in range(4):
        argv = ["layout", "--preset", name, *[str(x) for kv in sizes.items() for x in kv]]
        if main(argv) == 0:
            break
        err = capsys.readouterr().err
        field = re.search(r"error: (src|dst) tp \(", err)
        assert field, err
        values = re.findall(r"\d+", err.split(": use ")[1].split(" (with")[0])
        target = "--src-tp" if "use src tp" in err else f"--{field.group(1)}-tp"
        sizes[target] = int(values[0])
    else:
        pytest.fail(f"no acceptance for {name}: {sizes}")
    capsys.readouterr()


def test_user_synchronizer_from_the_current_directory(tmp_path: Path) -> None:
    """A launcher outside the working directory (like the console script) still imports
    mypkg.sync:MySync from the directory it is run in."""
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "sync.py").write_text(
        textwrap.dedent(
            """
            from syncviz.sync import MegatronVllmLlamaSync

            class MySync(MegatronVllmLlamaSync):
                pass
            """
        )
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    launcher = bin_dir / "syncviz"
    launcher.write_text("from syncviz.cli import main\nraise SystemExit(main())\n")
    out = tmp_path / "o.png"
    done = subprocess.run(
        [sys.executable, str(launcher), "render", "--preset", "llama3-8b", "--src-tp", "1",
         "--dst-tp", "2", "--param", "o_proj", "--synchronizer", "mypkg.sync:MySync",
         "-o", str(out)],
        cwd=tmp_path, capture_output=True, text=True, check=False,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_help_and_presets_load_nothing_heavy() -> None:
    """`syncviz --help` and `syncviz presets` import no torch, matplotlib or ray (fast start)."""
    for argv in (["--help"], ["presets"]):
        code = f"import sys; from syncviz.cli import main; main({argv!r}); "
        code += "print(sorted(m for m in ('torch', 'matplotlib', 'ray') if m in sys.modules),"
        code += " file=sys.stderr)"
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        assert done.stderr.strip().splitlines()[-1] == "[]"
