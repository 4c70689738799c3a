"""Diagnose with --previous: values of an earlier checkpoint are named stale, with which one, and
a rank that missed the update is said once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from syncviz.cli import main
from syncviz.diagnose import diagnose
from syncviz.diagnose.fixtures import tiny_spec, write_checkpoint, write_dumps
from syncviz.errors import SyncvizError

SPEC = tiny_spec("llama-mcore")  # 2 layers; 15 parameters; tp 2
O_PROJ = "model.layers.0.self_attn.o_proj.weight"


def next_step(prev: Path, out: Path, *, keep: tuple[str, ...] = ()) -> Path:
    """A "next step" checkpoint: every value of ``prev`` plus 0.5 (in bf16 x + 0.5 != x for
    |x| < 256, so every element changes), except the tensors named in ``keep``."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(prev / "config.json", out / "config.json")
    tensors = load_file(str(prev / "model.safetensors"))
    stepped = {k: v if k in keep else (v + 0.5).to(v.dtype) for k, v in tensors.items()}
    save_file(stepped, str(out / "model.safetensors"))
    return out


@pytest.fixture(scope="module")
def steps(tmp_path_factory):
    """Checkpoints of steps 1, 2, 3 (each the last plus 0.5) and each step's correct dumps."""
    root = tmp_path_factory.mktemp("steps")
    write_checkpoint(SPEC, root / "step1")
    next_step(root / "step1", root / "step2")
    next_step(root / "step2", root / "step3")
    for n in (1, 2, 3):
        write_dumps(SPEC, root / f"step{n}", root / f"dump{n}", tp=2)
    return root


def mixed_dump(steps: Path, out: Path, base: int, pieces: dict[tuple[int, str | None], int]):
    """Step ``base``'s dumps, with (rank, tensor name or None for the whole file) from others."""
    shutil.copytree(steps / f"dump{base}", out)
    for (tp, name), step in pieces.items():
        source = steps / f"dump{step}" / f"tp{tp}.safetensors"
        if name is None:
            shutil.copy(source, out / f"tp{tp}.safetensors")
            continue
        tensors = load_file(str(out / f"tp{tp}.safetensors"))
        tensors[name] = load_file(str(source))[name]
        save_file(tensors, str(out / f"tp{tp}.safetensors"))
    return out


def test_one_stale_tensor_is_named_with_its_checkpoint(steps, tmp_path):
    """tp 1's o_proj of layer 0 left at step 2 while the rest is step 3: stale, from step2."""
    dump = mixed_dump(steps, tmp_path / "d", 3, {(1, O_PROJ): 2})
    prev = str(steps / "step2")
    report = diagnose(steps / "step3", dump, 2, previous=[prev])
    (param,) = report.bad()
    assert param.key == "model." + O_PROJ
    assert param.lines() == [
        f"  tp 1, rows 0-15: holds the previous checkpoint's values (stale): {prev}"
    ]
    assert report.flow_errors == [] and report.exit_code == 1
    without = diagnose(steps / "step3", dump, 2)
    assert without.bad()[0].lines() == [
        "  tp 1, rows 0-15: holds values not found in the reference, expected heads 4-7"
    ]


def test_which_previous_checkpoint(steps, tmp_path):
    """Two earlier checkpoints given: a tensor from step 1 names step1, one from step 2 step2."""
    dump = mixed_dump(steps, tmp_path / "d", 3, {(0, O_PROJ): 1, (1, O_PROJ): 2})
    one, two = str(steps / "step1"), str(steps / "step2")
    report = diagnose(steps / "step3", dump, 2, previous=[two, one])
    assert report.bad()[0].lines() == [
        f"  tp 0, rows 0-15: holds the previous checkpoint's values (stale): {one}",
        f"  tp 1, rows 0-15: holds the previous checkpoint's values (stale): {two}",
    ]


def test_rank_that_missed_the_update_is_said_once(steps, tmp_path):
    """tp 1's whole file from step 2: one line names the rank; no per-tensor lines of tp 1 in
    the text (JSON keeps them); all 15 parameters are wrong on tp 1 only."""
    dump = mixed_dump(steps, tmp_path / "d", 3, {(1, None): 2})
    prev = str(steps / "step2")
    report = diagnose(steps / "step3", dump, 2, previous=[prev])
    assert report.flow_errors == [
        f"tp 1 missed the update: every tensor holds the previous checkpoint's values (stale):"
        f" {prev}"
    ]
    assert report.counts() == {"wrong": 15} and report.exit_code == 1
    text = report.text()
    assert "tp 1," not in text and text.count("missed the update") == 1
    assert "WRONG" not in text  # every finding is the rank's
    data = json.loads(report.to_json())
    lm = next(p for p in data["params"] if p["key"] == "model.lm_head.weight")
    assert lm["tensors"][1]["problems"] == [  # rows 36-63 are padding, zero at every step
        f"tp 1, rows 0-35: holds the previous checkpoint's values (stale): {prev}"
    ]


def test_unchanged_tensors_do_not_hide_a_missed_update(steps, tmp_path):
    """A frozen embedding (same in both steps) is OK on the stale rank; the rank still missed
    the update. A rank that got one tensor of the new step did not: its tensors are listed."""
    root = tmp_path / "frozen"
    next_step(steps / "step2", root / "step3", keep=("model.embed_tokens.weight",))
    write_dumps(SPEC, root / "step3", root / "dump3", tp=2)
    dump = root / "d"
    shutil.copytree(root / "dump3", dump)
    shutil.copy(steps / "dump2" / "tp1.safetensors", dump / "tp1.safetensors")
    prev = str(steps / "step2")
    report = diagnose(root / "step3", dump, 2, previous=[prev])
    assert report.counts() == {"ok": 1, "wrong": 14}
    assert [e.split(":")[0] for e in report.flow_errors] == ["tp 1 missed the update"]
    tensors = load_file(str(dump / "tp1.safetensors"))
    tensors[O_PROJ] = load_file(str(root / "dump3" / "tp1.safetensors"))[O_PROJ]
    save_file(tensors, str(dump / "tp1.safetensors"))
    partial = diagnose(root / "step3", dump, 2, previous=[prev])
    assert partial.flow_errors == [] and partial.counts() == {"ok": 2, "wrong": 13}
    assert f"tp 1, rows 0-35: holds the previous checkpoint's values (stale): {prev}" in (
        partial.text()
    )


def test_values_in_neither_checkpoint_read_as_before(steps, tmp_path):
    """Random values and tp 0's step-2 rows on tp 1: not found / stale with where they are from."""
    dump = mixed_dump(steps, tmp_path / "d", 3, {})
    tensors = load_file(str(dump / "tp1.safetensors"))
    gen = torch.Generator().manual_seed(3)
    tensors[O_PROJ] = torch.randn(16, 8, generator=gen).to(torch.bfloat16)
    tensors["lm_head.weight"] = load_file(str(steps / "dump2" / "tp0.safetensors"))[
        "lm_head.weight"
    ]
    save_file(tensors, str(dump / "tp1.safetensors"))
    prev = str(steps / "step2")
    found = {p.key: p.lines() for p in diagnose(steps / "step3", dump, 2, previous=[prev]).bad()}
    assert found["model." + O_PROJ] == [
        "  tp 1, rows 0-15: holds values not found in the reference, expected heads 4-7"
    ]
    # vocab 100 padded to 128: tp 0 holds rows 0-63, tp 1 rows 64-99 then 28 padding rows.
    assert found["model.lm_head.weight"] == [
        f"  tp 1, rows 0-63: holds the previous checkpoint's values (stale): {prev}, its vocab"
        " rows 0-63, expected rows 0-35: vocab rows 64-99; rows 36-63: padding"
    ]


def test_cli_previous_is_repeatable(steps, tmp_path, capsys):
    """--previous twice through the CLI: exit 1 and the stale words; another model is bad input."""
    dump = mixed_dump(steps, tmp_path / "d", 3, {(1, O_PROJ): 1})
    base = ["diagnose", "--reference", str(steps / "step3"), "--dump", str(dump), "--dst-tp", "2"]
    one, two = str(steps / "step1"), str(steps / "step2")
    assert main([*base, "--previous", two, "--previous", one]) == 1
    out = capsys.readouterr().out
    assert f"tp 1, rows 0-15: holds the previous checkpoint's values (stale): {one}" in out
    other = tmp_path / "other"
    write_checkpoint(tiny_spec("qwen2"), other)
    assert main([*base, "--previous", str(other)]) == 2
    err = capsys.readouterr().err
    assert "is not of the reference's model" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SyncvizError, match="--previous"):
        diagnose(steps / "step3", dump, 2, previous=[other])
