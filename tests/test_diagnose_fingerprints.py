"""Diagnosis from fingerprint files agrees with diagnosis from full dumps, bug by bug."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from syncviz.cli import main
from syncviz.diagnose import diagnose
from syncviz.diagnose.fingerprints import (
    fingerprint_dumps,
    has_fingerprints,
    open_prints,
)
from syncviz.diagnose.fixtures import BUGS, tiny_spec, write_checkpoint, write_dumps
from syncviz.errors import SyncvizError
from syncviz.fingerprint_dump import SUFFIX, save_fingerprints
from tests.diagnose_support import tiny_checkpoints

FAMILIES = ("llama-mcore", "qwen2", "qwen2-moe", "mixtral", "qwen3", "gpt-oss")

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
    ("llama-mcore", 2, {"gate_up": "swap_halves"}),
    ("mixtral", 2, {"experts_w13": "swap_halves"}),  # recognised: not checkable
    ("mixtral", 2, {"experts_w13": "local_experts", "experts_w2": "local_experts"}),
    ("qwen2", 2, {"input_norm": "regroup_qkv"}),  # reordered in blocks of 2 = the run
    ("qwen3", 2, {"q_norm": "exchange", "k_norm": "exchange"}),
    # Biases, sinks and interleaved experts (w13_bias: one fingerprint per row, right here).
    ("gpt-oss", 2, {"experts_w13": "tp0", "experts_w2": "swap_experts"}),
    ("gpt-oss", 2, {"qkv_bias": "swap_kv", "router": "noise", "lm_head": "tp0"}),
]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One random bf16 checkpoint per family."""
    return tiny_checkpoints(tmp_path_factory, FAMILIES)


def _both(checkpoints, tmp_path, family, tp, pp=1, **kwargs):
    dump, prints = tmp_path / "dump", tmp_path / "prints"
    write_dumps(tiny_spec(family), checkpoints[family], dump, tp=tp, pp=pp, **kwargs)
    fingerprint_dumps(dump, prints, tp=tp, pp=pp)
    full = diagnose(checkpoints[family], dump, tp, pp)
    fp = diagnose(checkpoints[family], prints, tp, pp)
    return full, fp


def _same(full, fp) -> None:
    assert fp.ok == full.ok and fp.exit_code == full.exit_code
    assert fp.counts() == full.counts()
    assert [repr(dataclasses.astuple(p)) for p in fp.params] == [
        repr(dataclasses.astuple(p)).replace(".safetensors", SUFFIX) for p in full.params
    ]  # the same findings, naming the rank files read
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


# gpt-oss's tiny rows (128 bytes and more) are not grouped at 64 bytes: its groups of 8 KiB are
# judged in tests/test_diagnose_moe_bugs.py.
GROUPED = [c for c in CASES if c[0] != "gpt-oss"]


@pytest.mark.parametrize(("family", "tp", "bugs"), GROUPED, ids=lambda x: str(x))
def test_groups_agree_with_full_dump(checkpoints, tmp_path, family, tp, bugs):
    """Rows fingerprinted in groups (64 bytes a fingerprint: pairs of 32-byte rows, fours of
    16-byte ones): the same statuses and exit code as the full dump; per rank tensor every
    segment the full dump finds wrong is wrong, and others only inside a group holding one."""
    from syncviz.diagnose.core import run_diagnosis
    from syncviz.diagnose.fingerprints import PrintFiles

    ref, dump, prints = checkpoints[family], tmp_path / "dump", tmp_path / "prints"
    write_dumps(tiny_spec(family), ref, dump, tp=tp, bugs=bugs)
    fingerprint_dumps(dump, prints, tp=tp, min_bytes=64)
    full, fp = diagnose(ref, dump, tp), diagnose(ref, prints, tp)
    assert (fp.exit_code, fp.counts()) == (full.exit_code, full.counts())
    assert [(p.key, p.status) for p in fp.params] == [(p.key, p.status) for p in full.params]
    whole = run_diagnosis(ref, dump, tp)
    grouped = run_diagnosis(ref, prints, tp, files=PrintFiles())
    files = open_prints(prints, tp)
    groups = matrices = 0
    params = whole.layout.params
    for param, mine, theirs in zip(params, grouped.decoded, whole.decoded, strict=True):
        for a, b in zip(mine, theirs, strict=True):
            assert a.status == b.status
            if a.status != "wrong":
                continue
            entry = files[(a.pp, a.tp)].tensors[param.key]
            g, bad, truth = entry.group, a.wrong, b.wrong
            assert bad is not None and truth is not None
            groups += g > 1
            matrices += len(a.shape) > 1
            assert bool((bad | ~truth).all())  # every segment the full dump finds wrong
            in_wrong_group = truth.reshape(-1, g).any(dim=1).repeat_interleave(g)
            assert bool((in_wrong_group | ~bad).all())  # and only in groups holding one
            assert torch.equal(bad.reshape(-1, g).any(dim=1), in_wrong_group[::g])
    assert groups or not matrices  # groups were exercised wherever a matrix is wrong


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
        diagnose(ref, prints, 2)
    assert "run_1d=4" in str(err.value.fix)


@pytest.mark.parametrize(
    ("min_bytes", "where"),
    [(0, "row 5"), (64, "rows 4-7"), (8192, "rows 0-7")],
)
def test_one_flipped_bit_is_found(checkpoints, tmp_path, min_bytes, where):
    """One bit flipped in row 5 of o_proj on tp 1 (cols 8-15: heads 4-7, 16-byte rows): that
    row alone, or its group of 4 rows (64 bytes a fingerprint), or of 8 (the default: at most
    half the rows)."""
    from safetensors.torch import load_file

    ref, dump, prints = checkpoints["llama-mcore"], tmp_path / "d", tmp_path / "p"
    write_dumps(tiny_spec("llama-mcore"), ref, dump, tp=2)
    for t in range(2):
        tensors = load_file(str(dump / f"tp{t}.safetensors"))
        if t == 1:
            tensors["model.layers.0.self_attn.o_proj.weight"].view(torch.int16)[5, 3] ^= 1 << 4
        save_fingerprints(tensors, prints, tp_rank=t, run_1d=2, min_bytes=min_bytes)
    report = diagnose(ref, prints, 2)
    (bad,) = report.bad()
    assert bad.key == "model.model.layers.0.self_attn.o_proj.weight"
    assert [line.strip() for line in bad.lines()] == [
        f"tp 1, {where}: holds values not found in the reference, expected heads 4-7 {where}"
    ]


def test_save_vllm_rank_writes_fingerprints(tmp_path):
    """save_vllm_rank(..., fingerprints=True) writes the fingerprint file and the note, no dump."""
    from syncviz.dump import read_notes, save_vllm_rank
    from syncviz.fingerprint import fingerprint
    from syncviz.fingerprint_dump import read_fingerprints

    model = torch.nn.Linear(8, 3, bias=False)
    path = save_vllm_rank(model, tmp_path, tp_rank=2, fingerprints=True)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["tp2.fingerprints.safetensors", "tp2.notes.json"]
    entries, prints = read_fingerprints(path)
    assert entries["weight"].shape == (3, 8)
    assert torch.equal(prints["weight"], fingerprint(model.weight))
    note = read_notes(path)
    assert note is not None and note["rank"] == {"tp": 2, "pp": 0, "pp_size": 1}
    assert note["changed"] == {} and note["buffers"] == []


def test_engine_notes_agree(checkpoints, tmp_path):
    """The CPU engine's emptied linears, dumped both ways by save_vllm_rank: the fingerprint
    files carry the same note, and the 8 tensors are not checkable (exit 2) from either."""
    from safetensors.torch import load_file

    from syncviz.dump import notes_path, save_vllm_rank
    from tests.test_diagnose_engine import engine_dump, engine_model, free_dense

    ref, dump, prints = checkpoints["llama-mcore"], tmp_path / "dump", tmp_path / "prints"
    engine_dump(ref, dump, 2, free_dense)
    for t in range(2):
        model = engine_model(load_file(str(tmp_path / "dump-cut" / f"tp{t}.safetensors")))
        for name, module in model.named_modules():
            free_dense(name, module)
        save_vllm_rank(model, prints, tp_rank=t, fingerprints=True)
        full_note = notes_path(dump / f"tp{t}.safetensors").read_text()
        assert (prints / f"tp{t}.notes.json").read_text() == full_note
    full, fp = diagnose(ref, dump, 2), diagnose(ref, prints, 2)
    assert full.counts() == {"ok": 7, "uncheckable": 8} and full.exit_code == 2
    _same(full, fp)
    assert fp.text().splitlines()[1:] == full.text().splitlines()[1:]


def test_empty_fingerprint_without_a_note_is_not_checkable(checkpoints, tmp_path):
    """An emptied tensor fingerprinted without a note (shape [0], no fingerprints): not
    checkable, worded as the full dump words it."""
    from safetensors.torch import load_file, save_file

    ref, dump, prints = checkpoints["llama-mcore"], tmp_path / "dump", tmp_path / "prints"
    write_dumps(tiny_spec("llama-mcore"), ref, dump, tp=2)
    tensors = load_file(str(dump / "tp1.safetensors"))
    tensors["model.layers.1.mlp.down_proj.weight"] = torch.empty(0, dtype=torch.bfloat16)
    save_file(tensors, str(dump / "tp1.safetensors"))
    fingerprint_dumps(dump, prints, tp=2)
    full, fp = diagnose(ref, dump, 2), diagnose(ref, prints, 2)
    assert full.counts() == {"ok": 14, "uncheckable": 1}
    _same(full, fp)
    (param,) = [p for p in fp.params if p.status != "ok"]
    assert param.lines() == ["  tp 1: empty (shape [0]), expected [16, 12]"]


@pytest.mark.parametrize("min_bytes", [0, 64])
def test_stale_values_found_in_previous_fingerprints(checkpoints, tmp_path, min_bytes):
    """A router kept from the previous step on both ranks, and a rank 1 that missed the whole
    update: the fingerprint look-up in --previous finds the same stale values and missed rank,
    rows fingerprinted one by one or in groups (whole tensors stale: the same words)."""
    from safetensors.torch import load_file, save_file

    from tests.test_diagnose_stale import next_step

    spec, step1 = tiny_spec("mixtral"), checkpoints["mixtral"]
    step2 = next_step(step1, tmp_path / "step2")
    for case, keep in (("router", ("gate",)), ("missed", ())):
        old, dump, prints = tmp_path / f"old-{case}", tmp_path / case, tmp_path / f"p-{case}"
        write_dumps(spec, step1, old, tp=2)
        write_dumps(spec, step2, dump, tp=2)
        for t in range(2):
            tensors = load_file(str(dump / f"tp{t}.safetensors"))
            stale = load_file(str(old / f"tp{t}.safetensors"))
            for name in tensors:
                if (keep and any(f".{k}." in name for k in keep)) or (not keep and t == 1):
                    tensors[name] = stale[name]
            save_file(tensors, str(dump / f"tp{t}.safetensors"))
        fingerprint_dumps(dump, prints, tp=2, min_bytes=min_bytes)
        full = diagnose(step2, dump, 2, previous=[step1])
        fp = diagnose(step2, prints, 2, previous=[step1])
        assert not full.ok and "stale" in full.text()
        assert ("tp 1 missed the update" in full.text()) == (case == "missed")
        assert fp.missed_ranks == full.missed_ranks
        _same(full, fp)
        assert fp.text().splitlines()[1:] == full.text().splitlines()[1:]


@pytest.mark.parametrize(
    "bugs",
    [{}, {"qkv": "swap_kv"}, {"gate_up": "swap_halves"}, {"o_proj": "rows"}, {"down": "tp0"}],
    ids=str,
)
def test_default_groups_keep_the_words_at_heads_of_32(tmp_path, bugs):
    """The live engine tier's model (hidden 128, heads of 32, TP 2) fingerprinted as
    save_vllm_rank does (groups of rows up to 8 KiB: 32 rows of qkv, one head): the report's
    every line but the headline equals the full dump's."""
    from syncviz.spec import ModelSpec

    spec = ModelSpec("llama-live", "llama-mcore", 2, 128, 4, 2, 128, 100, head_dim=32)
    ref, dump, prints = tmp_path / "ref", tmp_path / "dump", tmp_path / "prints"
    write_checkpoint(spec, ref)
    write_dumps(spec, ref, dump, tp=2, bugs=bugs)
    fingerprint_dumps(dump, prints, tp=2, run_1d=16, min_bytes=8192)
    assert {e.group for e in open_prints(prints, 2)[(0, 0)].tensors.values()} >= {32, 64}
    full, fp = diagnose(ref, dump, 2), diagnose(ref, prints, 2)
    assert fp.exit_code == full.exit_code == (1 if bugs else 0)
    assert fp.text().splitlines()[1:] == full.text().splitlines()[1:]


PARTS = {"gate_up": 2, "qkv": 3, "qkv_bias": 3, "experts_w13": 8, "input_norm": 1}


@pytest.mark.parametrize("kind", list(PARTS))
def test_table_from_checkpoint_parts_equals_joined(checkpoints, kind):
    """The expected fingerprints built from the checkpoint tensors a parameter is joined from
    (gate and up, q k v, each of 4 experts' gate and up) equal those of the joined tensor, and
    the joining copy is never made; a window off the grid reads the same too."""
    from syncviz.diagnose.core import REFERENCE, GlobalTensor
    from syncviz.diagnose.fingerprints import PrintTable
    from syncviz.diagnose.reference import Reference
    from syncviz.diagnose.segments import segment_length
    from syncviz.oracle import model_layout
    from syncviz.parallel import Parallel

    family = {"q": "qwen2", "e": "mixtral"}.get(kind[0], "llama-mcore")
    ref = Reference(checkpoints[family])
    layout = model_layout(ref.spec, REFERENCE, Parallel(tp=2), layers=[0], include_globals=False)
    (param,) = [p for p in layout.params if p.kind == kind]
    length = segment_length(param.dst[0].index, param.global_shape)
    glob = GlobalTensor(ref, param)
    table = PrintTable.of(glob, torch.bfloat16, length, length)
    assert len(glob.parts()) == PARTS[kind]
    whole = PrintTable(ref.global_tensor(kind, 0), length, length)
    assert torch.equal(table.prints, whole.prints) and glob._whole is None
    assert table.prints.numel() == math.prod(param.global_shape) // length
    numel = math.prod(param.global_shape)
    odd = torch.tensor([s for s in (1, length + 1) if s + length <= numel])  # one element in
    assert torch.equal(table.expected(odd), whole.expected(odd))
