"""Diagnose what an engine really holds: tensors it emptied, repacked or quantized after loading,
and the w13 [up; gate] layout of MoE back ends; save_vllm_rank's buffers and notes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from syncviz.diagnose import diagnose
from syncviz.diagnose.fixtures import tiny_spec, write_dumps
from syncviz.diagnose.words import W13_SWAP
from syncviz.dump import notes_path, read_notes, save_vllm_rank
from tests.diagnose_support import tiny_checkpoints

ROOT = Path(__file__).resolve().parent.parent
L0 = "model.model.layers.0."
DENSE = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Tiny bf16 Llama (8 heads, 2 K/V heads, head_dim 2, hidden 16, I 24) and Mixtral."""
    return tiny_checkpoints(tmp_path_factory, ("llama-mcore", "mixtral"))


def engine_model(tensors: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A stand-in vLLM model holding ``tensors`` under their dotted names; each dense linear
    declares its per-rank shape and dtype the way vLLM's linear layers do, and each attention
    holds a persistent KV-cache scale buffer, as vLLM's attention layers do."""
    model = torch.nn.Module()

    def module_at(path: list[str]) -> torch.nn.Module:
        module = model
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, torch.nn.Module())
            module = getattr(module, part)
        return module

    for name, tensor in tensors.items():
        *path, leaf = name.split(".")
        module = module_at(path)
        module.register_parameter(leaf, torch.nn.Parameter(tensor.clone(), requires_grad=False))
        if path and path[-1] in DENSE:
            module.output_size_per_partition, module.input_size_per_partition = tensor.shape
            module.params_dtype = tensor.dtype
        if path and path[-1] == "qkv_proj":
            module_at([*path[:-1], "attn"]).register_buffer("_k_scale", torch.tensor(1.0))
    return model


def engine_dump(reference, out: Path, tp: int, change) -> None:
    """Load every rank's cut of ``reference`` into a stand-in engine, let ``change`` act on each
    module as an engine's process_weights_after_loading would, and dump it with save_vllm_rank."""
    cut = out.parent / (out.name + "-cut")
    write_dumps(tiny_spec("llama-mcore"), reference, cut, tp=tp)
    for t in range(tp):
        model = engine_model(load_file(str(cut / f"tp{t}.safetensors")))
        for name, module in model.named_modules():
            change(name, module)
        save_vllm_rank(model, out, tp_rank=t)


def free_dense(name: str, module: torch.nn.Module) -> None:
    """What vLLM's CPU engine does to an unquantized linear: packs it away, leaves weight empty."""
    if name.rsplit(".", 1)[-1] in DENSE:
        module.weight = torch.nn.Parameter(torch.empty(0), requires_grad=False)


def test_emptied_linears_are_not_checkable_cli_exit_2(checkpoints, tmp_path):
    """The CPU engine's emptied dense linears (2 layers x 4, tp 2): noted by save_vllm_rank,
    not checkable through `python -m syncviz diagnose`, exit 2; the 7 norms/embeddings OK."""
    dump = tmp_path / "dump"
    engine_dump(checkpoints["llama-mcore"], dump, 2, free_dense)
    note = json.loads(notes_path(dump / "tp0.safetensors").read_text())
    assert note["rank"] == {"tp": 0, "pp": 0, "pp_size": 1}
    assert note["buffers"] == [f"model.layers.{i}.self_attn.attn._k_scale" for i in (0, 1)]
    assert len(note["changed"]) == 8
    assert note["changed"]["model.layers.0.self_attn.qkv_proj.weight"] == {
        "shape": [0],
        "dtype": "float32",
        "expected_shape": [12, 16],  # Q heads 4 x 2 + K 1 x 2 + V 1 x 2 rows, hidden 16
        "expected_dtype": "bfloat16",
        "why": "empty",
    }
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["diagnose", "--reference", str(checkpoints["llama-mcore"]), "--dump", str(dump)]
    run = subprocess.run(
        [sys.executable, "-m", "syncviz", *args, "--dst-tp", "2"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert run.returncode == 2, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].endswith("as dumped: OK WHERE CHECKABLE (7 ok, 8 uncheckable)")
    assert "WRONG" not in run.stdout and "MISMATCH" not in run.stdout
    group = lines.index("UNCHECKABLE layers 0-1: self_attn.qkv_proj.weight")
    assert lines[group + 1 : group + 3] == [
        "  tp 0: empty (shape [0]), expected [12, 16]",
        "  tp 1: empty (shape [0]), expected [12, 16]",
    ]
    assert "  tp 1: empty (shape [0]), expected [16, 12]" in lines  # down_proj: cols 24 / 2
    (why,) = [line for line in lines if line.startswith("not checkable, ")]
    assert why.startswith("not checkable, empty: the engine freed these after loading")
    assert "process_weights_after_loading" in why and "remove_weight=False" in why


def test_empty_tensor_without_a_note_is_not_checkable(checkpoints, tmp_path):
    """A shape-[0] tensor in a plain dump is not checkable, never 'wrote the wrong data'; beside
    a real mismatch the exit code is 1."""
    dump = tmp_path / "dump"
    write_dumps(tiny_spec("llama-mcore"), checkpoints["llama-mcore"], dump, tp=2)
    tensors = load_file(str(dump / "tp1.safetensors"))
    tensors["model.layers.1.mlp.down_proj.weight"] = torch.empty(0, dtype=torch.bfloat16)
    save_file(tensors, str(dump / "tp1.safetensors"))
    report = diagnose(checkpoints["llama-mcore"], dump, 2)
    assert report.counts() == {"ok": 14, "uncheckable": 1} and report.exit_code == 2
    (param,) = report.bad()
    assert param.lines() == ["  tp 1: empty (shape [0]), expected [16, 12]"]
    assert [t.status for t in param.tensors] == ["ok", "uncheckable"]
    assert "wrote the wrong data" not in report.text()
    tensors["model.layers.0.mlp.down_proj.weight"] = torch.zeros(16, 12, dtype=torch.bfloat16)
    save_file(tensors, str(dump / "tp1.safetensors"))
    mixed = diagnose(checkpoints["llama-mcore"], dump, 2)
    assert mixed.counts() == {"ok": 13, "uncheckable": 1, "wrong": 1} and mixed.exit_code == 1
    assert mixed.text().splitlines()[0].endswith("MISMATCH (13 ok, 1 uncheckable, 1 wrong)")


def test_shape_changed_by_the_engine(checkpoints, tmp_path):
    """o_proj repacked [16, 8] -> [8, 16] after loading: noted (its layer declares [16, 8]) and
    not checkable; the same shape in a dump without a note stays a finding."""

    def repack(name, module):
        if name.endswith("layers.0.self_attn.o_proj"):
            module.weight = torch.nn.Parameter(module.weight.detach().t().contiguous())

    dump = tmp_path / "dump"
    engine_dump(checkpoints["llama-mcore"], dump, 2, repack)
    noted = read_notes(dump / "tp1.safetensors")["changed"]
    assert noted == {
        "model.layers.0.self_attn.o_proj.weight": {
            "shape": [8, 16],
            "dtype": "bfloat16",
            "expected_shape": [16, 8],
            "expected_dtype": "bfloat16",
            "why": "shape",
        }
    }
    report = diagnose(checkpoints["llama-mcore"], dump, 2)
    (param,) = report.bad()
    assert (param.key, param.status) == (L0 + "self_attn.o_proj.weight", "uncheckable")
    assert param.lines() == [
        "  tp 0: shape [8, 16] as the engine left it, expected [16, 8]",
        "  tp 1: shape [8, 16] as the engine left it, expected [16, 8]",
    ]
    assert report.exit_code == 2
    assert report.why == [report.why[0]] and report.why[0].startswith("shape: the engine repacked")
    for t in (0, 1):
        notes_path(dump / f"tp{t}.safetensors").unlink()
    plain = diagnose(checkpoints["llama-mcore"], dump, 2)
    assert plain.bad()[0].status == "wrong" and plain.exit_code == 1


def test_quantized_tensor_is_noted_not_written(checkpoints, tmp_path):
    """A weight the engine quantized to FP8 is left out of the file, noted, and not checkable."""

    def quantize(name, module):
        if name.endswith("layers.1.mlp.gate_up_proj"):
            module.weight = torch.nn.Parameter(
                module.weight.detach().to(torch.float8_e4m3fn), requires_grad=False
            )

    dump = tmp_path / "dump"
    engine_dump(checkpoints["llama-mcore"], dump, 2, quantize)
    assert "model.layers.1.mlp.gate_up_proj.weight" not in load_file(str(dump / "tp0.safetensors"))
    report = diagnose(checkpoints["llama-mcore"], dump, 2)
    (param,) = report.bad()
    assert param.lines()[0] == "  tp 0: float8_e4m3fn [24, 16], expected [24, 16] as loaded"
    assert report.exit_code == 2 and report.flow_errors == []
    assert report.why[0].startswith("dtype: ")


def swap_w13_halves(dump: Path, tp: int, experts=None) -> None:
    """Exchange the two halves of layer 0's w13 in the given experts (all) on every rank."""
    for t in range(tp):
        tensors = load_file(str(dump / f"tp{t}.safetensors"))
        key = "model.layers.0.block_sparse_moe.experts.w13_weight"
        w13 = tensors[key]
        half = w13.shape[1] // 2
        chosen = range(w13.shape[0]) if experts is None else experts
        for e in chosen:
            w13[e] = torch.cat([w13[e, half:], w13[e, :half]])
        save_file(tensors, str(dump / f"tp{t}.safetensors"))


def test_w13_halves_swapped_in_every_expert_is_named(checkpoints, tmp_path):
    """Every expert [up; gate] on both ranks: named once as the MoE back end's layout, exit 2;
    one expert swapped alone is an ordinary mismatch, worded row by row."""
    ref, dump = checkpoints["mixtral"], tmp_path / "dump"
    write_dumps(tiny_spec("mixtral"), ref, dump, tp=2)
    swap_w13_halves(dump, 2)
    report = diagnose(ref, dump, 2)
    (param,) = report.bad()
    assert param.status == "uncheckable" and report.exit_code == 2
    assert param.lines() == [
        "  tp 0, experts 0-3: every expert's w13 halves exchanged ([up; gate] instead of"
        " [gate; up])",
        "  tp 1, experts 0-3: every expert's w13 halves exchanged ([up; gate] instead of"
        " [gate; up])",
    ]
    assert report.text().count(W13_SWAP) == 1
    write_dumps(tiny_spec("mixtral"), ref, dump, tp=2)
    swap_w13_halves(dump, 2, experts=[2])
    one = diagnose(ref, dump, 2)
    lines = one.bad()[0].lines()
    assert one.exit_code == 1 and W13_SWAP not in one.text()
    # I = 8 at tp 2: each expert holds gate rows 4r..4r+3 then up rows 4r..4r+3.
    assert lines[0] == (
        "  tp 0, expert 2: holds expert 2 (rows 0-3: up rows 0-3, rows 4-7: gate rows 0-3),"
        " expected expert 2 (rows 0-3: gate rows 0-3, rows 4-7: up rows 0-3)"
    )


class WithBuffers(torch.nn.Module):
    """A module with a parameter, a persistent buffer (a router bias) and a cache buffer."""

    def __init__(self):
        super().__init__()
        self.gate = torch.nn.Linear(4, 3, bias=False)
        self.gate.register_buffer("e_score_correction_bias", torch.arange(3.0))
        self.register_buffer("cos_sin_cache", torch.ones(5), persistent=False)


def test_save_vllm_rank_writes_persistent_buffers(tmp_path):
    """Persistent buffers are dumped beside the parameters and named in the note; non-persistent
    ones are not dumped; nothing changed means no tensor in the note's changed map."""
    model = WithBuffers()
    path = save_vllm_rank(model, tmp_path, tp_rank=0)
    saved = load_file(str(path))
    assert sorted(saved) == ["gate.e_score_correction_bias", "gate.weight"]
    assert saved["gate.e_score_correction_bias"].tolist() == [0.0, 1.0, 2.0]
    assert read_notes(path)["changed"] == {}
    assert read_notes(path)["buffers"] == ["gate.e_score_correction_bias"]
    assert read_notes(tmp_path / "tp7.safetensors") is None


def test_save_vllm_rank_writes_a_tied_lm_head_once(tmp_path):
    """lm_head tied to the embedding (one tensor, two names) is written once, as the embedding."""
    model = torch.nn.Module()
    model.model = torch.nn.Module()
    model.model.embed_tokens = torch.nn.Embedding(8, 4)
    model.lm_head = torch.nn.Linear(4, 8, bias=False)
    model.lm_head.weight = model.model.embed_tokens.weight
    saved = load_file(str(save_vllm_rank(model, tmp_path, tp_rank=0)))
    assert list(saved) == ["model.embed_tokens.weight"]


def test_a_broken_note_is_bad_input(checkpoints, tmp_path, capsys):
    """A note that is not save_vllm_rank's: exit 2 with one line naming the file; the JSON
    report of a good note carries the reasons."""
    from syncviz.cli import main

    dump = tmp_path / "dump"
    engine_dump(checkpoints["llama-mcore"], dump, 2, free_dense)
    args = ["diagnose", "--reference", str(checkpoints["llama-mcore"]), "--dump", str(dump)]
    assert main([*args, "--dst-tp", "2", "--json"]) == 2
    data = json.loads(capsys.readouterr().out)
    assert [w.split(":")[0] for w in data["why"]] == ["empty"]
    notes_path(dump / "tp1.safetensors").write_text('{"changed": []}')
    assert main([*args, "--dst-tp", "2"]) == 2
    err = capsys.readouterr().err
    assert "tp1.notes.json" in err and "not a note written by save_vllm_rank" in err
    assert len(err.strip().splitlines()) == 1
