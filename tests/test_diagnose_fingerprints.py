"""Diagnosis from fingerprint files agrees with diagnosis from full dumps, bug by bug."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from syncviz.cli import main
from syncviz.diagnose import diagnose
from syncviz.diagnose.fingerprints import (
    diagnose_fingerprints,
    fingerprint_dumps,
    has_fingerprints,
)
from syncviz.diagnose.fixtures import BUGS, tiny_spec, write_checkpoint, write_dumps
from syncviz.errors import SyncvizError
from syncviz.fingerprint_dump import SUFFIX, save_fingerprints

FAMILIES = ("llama-mcore", "qwen2", "qwen2-moe", "mixtral")

# Every bug the fixtures plant, in the kinds it fits, on every family that has the kind.
CASES = [
    ("llama-mcore", 4, {"qkv": "shard0", "gate_up": "shard0"}),
    ("llama-mcore", 4, {"qkv": "swap_kv"}),
    ("llama-mcore", 4, {"o_proj": "rows", "down": "rows"}),
    ("llama-mcore", 2, {"lm_head": "tp0", "embed": "tp0"}),
    ("llama-mcore", 2, {"down": "missing", "input_norm": "missing"}),
    ("llama-mcore", 2, {"o_proj": "noise", "final_norm": "noise"}),
    ("llama-mcore", 2, {"o_proj": "few_shared"}),
    ("qwen2", 2, {"qkv": "swap_kv", "qkv_bias": "swap_kv"}),
    ("qwen2", 4, {"qkv_bias": "shard0", "gate_up": "tp0"}),
    ("qwen2", 2, {"lm_head": "tp0"}),
    ("qwen2", 2, {"qkv_bias": "noise"}),
    ("qwen2-moe", 2, {"experts_w13": "swap_experts", "experts_w2": "swap_experts"}),
    ("qwen2-moe", 2, {"shared_gate_up": "shard0", "router": "noise"}),
    ("qwen2-moe", 4, {"shared_expert_gate": "tp0", "experts_w2": "rows"}),
    ("qwen2-moe", 2, {"experts_w13": "shard0", "qkv_bias": "swap_kv"}),
    ("mixtral", 2, {"lm_head": "tp0", "router": "noise"}),
    ("mixtral", 2, {"experts_w13": "tp0", "experts_w2": "missing"}),
    ("mixtral", 2, {"experts_w13": "few_shared"}),
]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One random bf16 checkpoint per family."""
    out = {}
    for family in FAMILIES:
        folder = tmp_path_factory.mktemp(family)
        write_checkpoint(tiny_spec(family), folder)
        out[family] = folder
    return out


def _both(checkpoints, tmp_path, family, tp, pp=1, **kwargs):
    dump, prints = tmp_path / "dump", tmp_path / "prints"
    write_dumps(tiny_spec(family), checkpoints[family], dump, tp=tp, pp=pp, **kwargs)
    fingerprint_dumps(dump, prints, tp=tp, pp=pp)
    full = diagnose(checkpoints[family], dump, tp, pp)
    fp = diagnose(checkpoints[family], prints, tp, pp)
    return full, fp


def _same(full, fp) -> None:
    assert fp.ok == full.ok
    assert fp.counts() == full.counts()
    assert [dataclasses.astuple(p) for p in fp.params] == [
        dataclasses.astuple(p) for p in full.params
    ]
    assert fp.flow_errors == [n.replace(".safetensors", SUFFIX) for n in full.flow_errors]


def test_case_list_plants_every_bug():
    """The agreement cases below plant every bug the fixtures know."""
    assert {b for _, _, bugs in CASES for b in bugs.values()} == set(BUGS)


@pytest.mark.parametrize(("family", "tp", "bugs"), CASES, ids=lambda x: str(x))
def test_agrees_with_full_dump(checkpoints, tmp_path, family, tp, bugs):
    """Same verdicts, wrong tensors, ranks, rows and 'holds ...' words as the full dump."""
    full, fp = _both(checkpoints, tmp_path, family, tp, bugs=bugs)
    assert not full.ok  # the case plants something the full dump finds
    _same(full, fp)


@pytest.mark.parametrize(("family", "tp"), [(f, 2) for f in FAMILIES] + [("qwen2", 4)])
def test_correct_dump_is_ok(checkpoints, tmp_path, family, tp):
    """A correct rank set is OK from fingerprints too, vocab padding rows included."""
    full, fp = _both(checkpoints, tmp_path, family, tp)
    assert full.ok and fp.ok
    _same(full, fp)


def test_diagram_of_a_fingerprint_diagnosis(checkpoints, tmp_path):
    """The layout diagram draws a fingerprint diagnosis with the full dump's wrong count."""
    from syncviz.diagram import layout_diagram

    full, fp = _both(checkpoints, tmp_path, "llama-mcore", 4, bugs={"qkv": "shard0"})
    key = full.bad()[0].key
    want = layout_diagram(full.result, key, full).wrong_count
    assert want > 0 and layout_diagram(fp.result, key, fp).wrong_count == want


def test_swapped_files_and_pipeline(checkpoints, tmp_path):
    """Rank files in the wrong order are named as fingerprint files; pp 2 agrees too."""
    full, fp = _both(checkpoints, tmp_path / "a", "llama-mcore", 4, swap_files=True)
    _same(full, fp)
    assert any("tp0.fingerprints.safetensors holds tp 1" in n for n in fp.flow_errors)
    full, fp = _both(checkpoints, tmp_path / "b", "llama-mcore", 2, 2, bugs={"lm_head": "tp0"})
    _same(full, fp)


def test_cli_reads_either_kind(checkpoints, tmp_path, capsys):
    """`syncviz diagnose --dump` gives the same exit code on a dump and on its fingerprints."""
    ref = checkpoints["qwen2"]
    for bugs, code in (({}, 0), ({"qkv": "swap_kv"}, 1)):
        dump, prints = tmp_path / f"d{code}", tmp_path / f"p{code}"
        write_dumps(tiny_spec("qwen2"), ref, dump, tp=2, bugs=bugs)
        fingerprint_dumps(dump, prints, tp=2)
        assert has_fingerprints(prints) and not has_fingerprints(dump)
        for folder in (dump, prints):
            args = ["diagnose", "--reference", str(ref), "--dump", str(folder), "--dst-tp", "2"]
            assert main(args) == code
    capsys.readouterr()
    assert main(["diagnose", "--reference", str(ref), "--dump", str(prints), "--dst-tp", "4"]) == 2
    assert "fingerprint file tp2.fingerprints.safetensors is missing" in capsys.readouterr().err


def test_run_longer_than_segment_is_bad_input(checkpoints, tmp_path):
    """1-D runs longer than a head slice cannot be judged: bad input naming the run to use."""
    from safetensors.torch import load_file

    ref, dump, prints = checkpoints["qwen2"], tmp_path / "d", tmp_path / "p"
    write_dumps(tiny_spec("qwen2"), ref, dump, tp=2)
    for t in range(2):
        tensors = load_file(str(dump / f"tp{t}.safetensors"))
        save_fingerprints(tensors, prints, tp_rank=t)  # the default run of 16 elements
    with pytest.raises(SyncvizError, match=r"runs of 16 elements.*segments of 4") as err:
        diagnose_fingerprints(ref, prints, 2)
    assert "run_1d=4" in str(err.value.fix)


def test_one_flipped_bit_is_found(checkpoints, tmp_path):
    """One bit flipped in row 5 of o_proj on tp 1 (cols 8-15: heads 4-7): that row alone."""
    from safetensors.torch import load_file

    ref, dump, prints = checkpoints["llama-mcore"], tmp_path / "d", tmp_path / "p"
    write_dumps(tiny_spec("llama-mcore"), ref, dump, tp=2)
    for t in range(2):
        tensors = load_file(str(dump / f"tp{t}.safetensors"))
        if t == 1:
            tensors["model.layers.0.self_attn.o_proj.weight"].view(torch.int16)[5, 3] ^= 1 << 4
        save_fingerprints(tensors, prints, tp_rank=t, run_1d=2)
    report = diagnose_fingerprints(ref, prints, 2)
    (bad,) = report.bad()
    assert bad.key == "model.model.layers.0.self_attn.o_proj.weight"
    assert [line.strip() for line in bad.lines()] == [
        "tp 1, row 5: holds values not found in the reference, expected heads 4-7 row 5"
    ]


def test_save_vllm_rank_writes_fingerprints(tmp_path):
    """save_vllm_rank(..., fingerprints=True) writes the rank's fingerprint file, no dump."""
    from syncviz.dump import save_vllm_rank
    from syncviz.fingerprint import fingerprint
    from syncviz.fingerprint_dump import read_fingerprints

    model = torch.nn.Linear(8, 3, bias=False)
    path = save_vllm_rank(model, tmp_path, tp_rank=2, fingerprints=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tp2.fingerprints.safetensors"]
    entries, prints = read_fingerprints(path)
    assert entries["weight"].shape == (3, 8)
    assert torch.equal(prints["weight"], fingerprint(model.weight))
