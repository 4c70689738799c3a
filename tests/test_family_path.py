"""A family of one's own in one file (tests/data/families/toy_dense.*): check, layout, render,
diagnose and the Python API take it; bad files are refused in one line naming file and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from syncviz.cli import main
from syncviz.errors import SyncvizError
from syncviz.families import FAMILY, registry, unregister
from syncviz.families.registry import register
from syncviz.family_file import load_family, read_family, register_family

DATA = Path(__file__).parent / "data" / "families"
PY_FILE, JSON_FILE = DATA / "toy_dense.py", DATA / "toy_dense.json"
FILES = [pytest.param(PY_FILE, id="py"), pytest.param(JSON_FILE, id="json")]
TOY, PRESET, ARCH = "toy-dense", "toy-dense-1b", "ToyDenseForCausalLM"


@pytest.fixture(autouse=True)
def _own_families_removed():
    """Every test starts and ends with the built-in families only."""
    yield
    for name in [n for n in FAMILY if not registry.is_built_in(n)]:
        unregister(name)


def test_python_and_json_files_declare_the_same_family():
    """The JSON file is the Python file's record as data: both read to equal records."""
    from_py, from_json = read_family(PY_FILE), read_family(JSON_FILE)
    assert from_py == from_json
    assert from_json.name == TOY
    assert from_json.hf_names["qkv"][1] == "transformer.blocks.{i}.attn.wk.weight"
    assert TOY not in FAMILY  # reading registers nothing


@pytest.mark.parametrize("path", FILES)
def test_check_corrected_exits_0_on_the_family(path, capsys):
    """check --family with its preset: the corrected synchronizer puts all 67 tensors right."""
    code = main(
        ["check", "--family", str(path), "--preset", PRESET, "--synchronizer", "corrected",
         "--src-tp", "2", "--dst-tp", "4"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith(f"{PRESET}: src tp2 -> dst tp4, synchronizer corrected: OK (67 ok)")


def test_presets_lists_the_family_presets(capsys):
    """presets --family lists the file's preset, its family and sizes, after the built-in ones."""
    assert main(["presets", "--family", str(JSON_FILE)]) == 0
    lines = capsys.readouterr().out.splitlines()
    mine = [line for line in lines if line.startswith(PRESET)]
    assert mine == [f"{PRESET:20} {TOY:13} 8 layers, hidden 2048, 16 heads / 4 K/V groups"]
    built_in = sum(len(info.presets) for info in FAMILY.values() if registry.is_built_in(info.name))
    assert lines.index(mine[0]) == built_in  # after the built-in presets, before shipped configs


def test_faithful_port_has_no_class_for_the_family(capsys):
    """The faithful port chooses by architecture, as the original did, and knows none: exit 1."""
    code = main(["check", "--family", str(PY_FILE), "--preset", PRESET, "--layers", "0"])
    out = capsys.readouterr().out
    assert code == 1
    assert f"Unsupported model {ARCH}" in out


def test_layout_shows_the_family_own_names(capsys):
    """layout --family words each tensor under the family's vLLM and trainer names."""
    code = main(
        ["layout", "--family", str(JSON_FILE), "--preset", PRESET, "--src-tp", "2",
         "--dst-tp", "4", "--layers", "0"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith(f"{PRESET} ({TOY}), layer 0")
    assert "model.model.blocks.0.attn.wqkv.weight  (qkv, global [3072, 2048])" in out
    assert "dst pp0 tp0-3 (each) model.model.blocks.0.attn.q_norm.weight [128]" in out
    assert "module.module.decoder.layers.0.self_attention.q_layernorm.weight" in out


def test_render_writes_the_picture(tmp_path, capsys):
    """render --family draws the family's fused QKV to a PNG and says it matched."""
    out_png = tmp_path / "qkv.png"
    code = main(
        ["render", "--family", str(PY_FILE), "--preset", PRESET, "--synchronizer", "corrected",
         "--src-tp", "2", "--dst-tp", "4", "--param", "qkv", "-o", str(out_png)]
    )  # fmt: skip
    said = capsys.readouterr().out
    assert code == 0, said
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out_png.stat().st_size > 10_000
    assert "every vLLM rank holds what the oracle expects" in said


def test_config_json_of_the_family_is_read_once_it_is_registered(tmp_path, capsys):
    """A config.json naming the family's architecture is refused (pointing at --family) without
    the file, and read as the family with it."""
    config = {
        "architectures": [ARCH], "num_hidden_layers": 2, "hidden_size": 64,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
        "intermediate_size": 128, "vocab_size": 1000,
    }  # fmt: skip
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    args = ["check", "--config", str(path), "--synchronizer", "corrected", "--dst-tp", "2"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"architecture {ARCH}" in err and "--family PATH" in err
    assert main([*args, "--family", str(JSON_FILE)]) == 0
    assert "synchronizer corrected: OK (19 ok)" in capsys.readouterr().out


@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    """The family's tiny checkpoint, its right dumps at vLLM tp 2, and two with a planted bug."""
    from syncviz.diagnose.fixtures import tiny_spec, write_checkpoint, write_dumps

    root = tmp_path_factory.mktemp("toy")
    info = load_family(PY_FILE)
    try:
        spec = tiny_spec(info.name)
        write_checkpoint(spec, root / "ref")
        write_dumps(spec, root / "ref", root / "ok", tp=2)
        write_dumps(spec, root / "ref", root / "norms", tp=2, bugs={"q_norm": "exchange"})
        write_dumps(spec, root / "ref", root / "kv", tp=2, bugs={"qkv": "swap_kv"})
    finally:
        unregister(info.name)
    return root


def test_diagnose_right_dumps_exit_0(dumps, capsys):
    """diagnose --family on dumps cut right from the checkpoint: all 19 tensors OK."""
    code = main(
        ["diagnose", "--family", str(JSON_FILE), "--reference", str(dumps / "ref"),
         "--dump", str(dumps / "ok"), "--dst-tp", "2"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith("toy-dense-tiny: src checkpoint ref -> dst tp2") and "OK (19 ok)" in out


def test_diagnose_finds_q_norm_holding_k_norm(dumps, capsys):
    """q_norm written with k_norm's data on every rank: exit 1, the wrong tensor and its words."""
    code = main(
        ["diagnose", "--family", str(PY_FILE), "--reference", str(dumps / "ref"),
         "--dump", str(dumps / "norms"), "--dst-tp", "2"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 1
    assert "MISMATCH (18 ok, 1 wrong)" in out
    assert "WRONG model.model.blocks.0.attn.q_norm.weight" in out
    assert "holds model.model.blocks.0.attn.k_norm.weight's k norm, expected q norm" in out


def test_diagnose_finds_k_and_v_heads_exchanged(dumps, capsys):
    """K and V heads exchanged in the fused QKV at layer 0: exit 1, wqkv named, K/V words."""
    code = main(
        ["diagnose", "--family", str(PY_FILE), "--reference", str(dumps / "ref"),
         "--dump", str(dumps / "kv"), "--dst-tp", "2"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 1
    assert "WRONG model.model.blocks.0.attn.wqkv.weight" in out
    # tp 1 holds Q heads 2-3 (rows 0-15), then K head 1 and V head 1 (8 rows each).
    assert (
        "tp 1, rows 16-31: holds rows 16-23: V head 1; rows 24-31: K head 1,"
        " expected rows 16-23: K head 1; rows 24-31: V head 1"
    ) in out


def test_registered_family_reaches_every_table():
    """register_family on a record: presets, conventions, checkpoint names, corrected class and
    architecture all list it; unregister takes it out of each again."""
    from syncviz.oracle import FAMILY_CONVENTIONS
    from syncviz.oracle.hf_names import HF_NAMES
    from syncviz.presets import PRESETS
    from syncviz.spec import FAMILIES, HF_ARCHITECTURES
    from syncviz.sync.corrected import CORRECTED_BY_ARCHITECTURE, CORRECTED_BY_FAMILY

    info = register_family(read_family(PY_FILE))
    assert PRESETS[PRESET].family == TOY and PRESETS[PRESET].head_dim == 128
    assert FAMILY_CONVENTIONS[TOY].dst_names["gate_up"] == "model.model.blocks.{i}.ffn.w13.weight"
    assert HF_NAMES[TOY]["down"] == ("transformer.blocks.{i}.ffn.w2.weight",)
    assert HF_ARCHITECTURES[ARCH] == TOY and FAMILIES[-1] == TOY
    assert CORRECTED_BY_FAMILY[TOY].__name__ == info.corrected
    assert CORRECTED_BY_ARCHITECTURE[ARCH].__name__ == info.corrected
    unregister(TOY)
    assert PRESET not in PRESETS and TOY not in FAMILY_CONVENTIONS and TOY not in HF_NAMES
    assert ARCH not in HF_ARCHITECTURES and TOY not in FAMILIES


def test_same_record_twice_is_one_family_and_a_changed_one_is_refused():
    """Registering the same record again changes nothing; other facts under its name are refused."""
    from dataclasses import replace

    info = load_family(JSON_FILE)
    assert load_family(PY_FILE) is info and list(FAMILY).count(TOY) == 1
    with pytest.raises(SyncvizError, match="was registered earlier with other facts"):
        register(replace(info, qk_norm=False))


def test_refused_family_leaves_nothing_registered():
    """A record whose tiny spec is not a model (heads 3, K/V heads 2) is refused and not kept."""
    from dataclasses import replace

    info = read_family(PY_FILE)
    bad = replace(info, name="toy-bad", architecture="ToyBad", model_type="toy_bad", presets=(),
                  tiny={**info.tiny, "num_attention_heads": 3})  # fmt: skip
    with pytest.raises(SyncvizError, match=r"tiny: num_attention_heads \(3\) must be a multiple"):
        register_family(bad)
    assert "toy-bad" not in FAMILY


def _edited(**changes) -> dict:
    """The JSON file's fields with ``changes`` (None: the field left out), under a name of
    its own (a name keeps the facts it was first registered with)."""
    data = {**json.loads(JSON_FILE.read_text(encoding="utf-8")), "name": "toy-mine"}
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    return data


def _without(table: str, kind: str) -> dict:
    data = _edited()
    del data[table][kind]
    return data


def _builtin() -> str:
    return next(iter(FAMILY))


BAD_JSON = [
    pytest.param(
        lambda: '{"name": "toy",\n  "architecture": }',
        ["line 2, column 19: Expecting value", "correct the JSON there"],
        id="syntax",
    ),
    pytest.param(
        lambda: json.dumps(_edited(qk_nrom=True)),
        ["unknown field 'qk_nrom' (= True)", "did you mean qk_norm?"],
        id="unknown-field",
    ),
    pytest.param(
        lambda: json.dumps(_edited(name=None)),
        ["missing field 'name'", "add 'name': a string"],
        id="missing-name",
    ),
    pytest.param(
        lambda: json.dumps(_edited(hf_names={**_edited()["hf_names"], "qkv": []})),
        ["hf_names['qkv'] is (): a kind with no names", "give the name of qkv"],
        id="kind-without-names",
    ),
    pytest.param(
        lambda: json.dumps(_without("dst_names", "q_norm")),
        [
            ": dst_names has no 'q_norm', which presets[0] (toy-dense-1b) lays out",
            "add 'q_norm' to dst_names",
        ],
        id="kind-not-named",
    ),
    pytest.param(
        lambda: json.dumps(_edited(src_names={**_edited()["src_names"], "qkvv": "x.{i}"})),
        ["src_names has kind 'qkvv', which syncviz does not lay out", "did you mean qkv?"],
        id="unknown-kind",
    ),
    pytest.param(
        lambda: json.dumps(_edited(experts="hepp")),
        ["field 'experts' is 'hepp'", "make it one of 'none', 'hep', 'sequential'"],
        id="bad-literal",
    ),
    pytest.param(
        lambda: json.dumps(_edited(presets=[{"name": "p", "sizes": {"layers": 2}, "source": ""}])),
        ["presets[0] sizes: got an unexpected keyword argument 'layers'", "use ModelSpec fields"],
        id="bad-preset-size",
    ),
    pytest.param(
        lambda: json.dumps(_edited(corrected="CorrectedSync")),
        [
            "field 'corrected' is 'CorrectedSync', which names no CorrectedMegatronVllmSync class",
            "CorrectedMegatronVllmMCoreSync",
        ],
        id="unknown-class",
    ),
    pytest.param(
        lambda: json.dumps(_edited(name=_builtin())),
        [": family name", "is a built-in family", "give your family its own name"],
        id="built-in-name",
    ),
    pytest.param(
        lambda: json.dumps(_edited(architecture=FAMILY[_builtin()].architecture)),
        [
            f"architecture {FAMILY[_builtin()].architecture!r} is already read as family",
            "use your model's own architecture",
        ],
        id="architecture-taken",
    ),
    pytest.param(
        lambda: "[1, 2]",
        ["holds a JSON list, not an object"],
        id="not-an-object",
    ),
]


@pytest.mark.parametrize(("text", "words"), BAD_JSON)
def test_bad_json_family_file_exits_2_naming_file_and_field(text, words, tmp_path, capsys):
    """A bad JSON family file: exit 2, one line naming the file, the field, the value, the fix."""
    path = tmp_path / "mine.json"
    path.write_text(text(), encoding="utf-8")
    code = main(["layout", "--family", str(path), "--preset", PRESET])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"syncviz: error: family file '{path}'")
    for word in words:
        assert word in err, err
    assert [n for n in FAMILY if not registry.is_built_in(n)] == []


BAD_PYTHON = [
    pytest.param("FAMILY = (\n", ["line 1, column 10: '(' was never closed"], id="syntax"),
    pytest.param("X = 1\n", ["defines no FAMILY", "end it with FAMILY = FamilyInfo("], id="none"),
    pytest.param(
        "from syncviz.families import FamilyInfo\n"
        "FAMILY = FamilyInfo('t', 'T', 't', '', 'CorrectedMegatronVllmMCoreSync', qk_nrom=1)\n",
        ["unknown field 'qk_nrom'", "did you mean qk_norm?"],
        id="unknown-field",
    ),
    pytest.param(
        "raise KeyError('embed')\n", ["raised KeyError: 'embed'", "run it with python"], id="raises"
    ),
    pytest.param(
        "from syncviz.families import FamilyInfo\n"
        "FAMILY = FamilyInfo('t', 'T', 't', '', 'CorrectedMegatronVllmMCoreSync', qk_norm='yes')\n",
        ["field 'qk_norm' is 'yes'", "make it true or false"],
        id="bad-type",
    ),
]


@pytest.mark.parametrize(("text", "words"), BAD_PYTHON)
def test_bad_python_family_file_exits_2_naming_file_and_field(text, words, tmp_path, capsys):
    """A bad Python family file: exit 2, one line naming the file and what is wrong there."""
    path = tmp_path / "mine.py"
    path.write_text(text, encoding="utf-8")
    code = main(["check", "--family", str(path), "--preset", PRESET])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"syncviz: error: family file '{path}'")
    for word in words:
        assert word in err, err


def test_missing_or_odd_family_file_exits_2(tmp_path, capsys):
    """A path that does not exist, or a file neither .py nor .json, is bad input (exit 2)."""
    args = ["diagnose", "--reference", str(tmp_path), "--dump", str(tmp_path), "--dst-tp", "1"]
    assert main([*args, "--family", str(tmp_path / "nope.json")]) == 2
    assert "nope.json' does not exist" in capsys.readouterr().err
    odd = tmp_path / "family.yaml"
    odd.write_text("name: x\n", encoding="utf-8")
    assert main([*args, "--family", str(odd)]) == 2
    assert "is neither .py nor .json" in capsys.readouterr().err


def test_explorer_opens_on_the_family_first_preset():
    """Explorer(family=file) registers it and opens on its preset, listing its own names."""
    pytest.importorskip("ipywidgets")
    from syncviz.parallel import Parallel
    from syncviz.widgets.explorer import Explorer

    ex = Explorer(
        family=JSON_FILE, src=Parallel(tp=2), dst=Parallel(tp=4), synchronizer="corrected",
        scaled=True,
    )  # fmt: skip
    assert ex.model.value == PRESET
    assert "synchronizer corrected: OK (8 ok)" in ex.status.value
    names = [value for _, value in ex.param.options]
    assert "model.model.blocks.0.attn.wqkv.weight" in names
    assert "model.model.blocks.0.ffn.w13.weight" in names
    assert ex.image.value[:8] == b"\x89PNG\r\n\x1a\n"


def _family_names(coll):
    from syncviz.families import FAMILY
    from syncviz.presets import PRESETS

    return coll, list(FAMILY)[-1], PRESETS[PRESET].family


def test_ray_ranks_register_the_families_of_the_driver(tmp_path):
    """What RayWorld sends a rank, unpickled in a fresh process that knows only the built-in
    families, registers the driver's own family before it runs (its presets known there)."""
    import subprocess
    import sys

    cloudpickle = pytest.importorskip("ray.cloudpickle")
    from syncviz.run.ray_world import _knowing_own_families

    load_family(JSON_FILE)
    sent = tmp_path / "fn.pickle"
    sent.write_bytes(cloudpickle.dumps(_knowing_own_families(_family_names)))
    code = (
        "import pickle, sys; from syncviz.families import FAMILY;"
        f" assert {TOY!r} not in FAMILY;"
        f" print(pickle.loads(open(sys.argv[1], 'rb').read())('rank 3'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(sent)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"('rank 3', {TOY!r}, {TOY!r})"
