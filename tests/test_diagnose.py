"""Diagnose: planted bugs in dumps cut from real (random) bf16 checkpoints are found and worded."""

from __future__ import annotations

import pytest
import torch

from syncviz.diagnose import diagnose
from syncviz.diagnose.fixtures import tiny_spec, write_dumps
from syncviz.diagram import layout_diagram
from syncviz.diagram.experts import expert_diagram
from tests.diagnose_support import bad, diagnose_dumps, tiny_checkpoints

L0 = "model.model.layers.0."


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One random bf16 checkpoint per family."""
    return tiny_checkpoints(tmp_path_factory, ("llama-mcore", "qwen2", "qwen2-moe", "mixtral"))


@pytest.mark.parametrize(
    ("family", "tp"),
    [
        ("llama-mcore", 4),
        ("llama-mcore", 1),
        ("qwen2", 2),
        ("qwen2", 4),
        ("qwen2-moe", 2),
        ("mixtral", 2),
    ],
)
def test_correct_dump_is_ok(checkpoints, tmp_path, family, tp):
    """A dump cut by the layout rules is OK on every tensor, vocab padding rows included."""
    report = diagnose_dumps(checkpoints, tmp_path, family, tp)
    assert report.ok, report.text()
    assert set(report.counts()) == {"ok"}


def test_shard0_on_every_rank_llama_gqa(checkpoints, tmp_path):
    """A loader defaulting tp_rank to 0 for qkv and gate_up: every other rank holds tp 0's rows;
    with d > kv heads the replicated K/V rows of tp 1 are still right."""
    report = diagnose_dumps(
        checkpoints, tmp_path, "llama-mcore", 4, bugs={"qkv": "shard0", "gate_up": "shard0"}
    )
    found = bad(report)
    assert set(found) == {L0 + "self_attn.qkv_proj.weight", L0 + "mlp.gate_up_proj.weight"}
    qkv = found[L0 + "self_attn.qkv_proj.weight"]
    assert qkv[0] == "tp 1, rows 0-3: holds tp 0's Q heads 0-1, expected Q heads 2-3"
    assert qkv[1].startswith(
        "tp 2, rows 0-7: holds tp 0's rows 0-3: Q heads 0-1; rows 4-5: K head 0"
    )
    assert qkv[1].endswith("expected rows 0-3: Q heads 4-5; rows 4-5: K head 1; rows 6-7: V head 1")
    assert len(qkv) == 3  # tp 0 is right
    gate_up = found[L0 + "mlp.gate_up_proj.weight"]
    assert gate_up[0] == (
        "tp 1, rows 0-11: holds tp 0's rows 0-5: gate rows 0-5; rows 6-11: up rows 0-5,"
        " expected rows 0-5: gate rows 6-11; rows 6-11: up rows 6-11"
    )
    assert not report.ok and report.counts() == {"ok": 13, "wrong": 2}


def test_k_and_v_swapped_weight_and_bias_qwen2(checkpoints, tmp_path):
    """K and V exchanged in qkv_proj weight and bias: the rows and elements are named."""
    report = diagnose_dumps(
        checkpoints, tmp_path, "qwen2", 2, bugs={"qkv": "swap_kv", "qkv_bias": "swap_kv"}
    )
    found = bad(report)
    assert found[L0 + "self_attn.qkv_proj.weight"][1] == (
        "tp 1, rows 8-15: holds rows 8-11: V head 1; rows 12-15: K head 1,"
        " expected rows 8-11: K head 1; rows 12-15: V head 1"
    )
    assert found[L0 + "self_attn.qkv_proj.bias"][0] == (
        "tp 0, elements 8-15: holds elements 8-11: V head 0; elements 12-15: K head 0,"
        " expected elements 8-11: K head 0; elements 12-15: V head 0"
    )
    assert len(found) == 2


def test_qkv_bias_shard0_with_replicated_kv_qwen2(checkpoints, tmp_path):
    """Qwen2 at d=4 > 2 kv heads: the bias of tp 0 on every rank; tp 1's replicated K/V agree."""
    found = bad(diagnose_dumps(checkpoints, tmp_path, "qwen2", 4, bugs={"qkv_bias": "shard0"}))
    lines = found[L0 + "self_attn.qkv_proj.bias"]
    assert lines[0] == "tp 1, elements 0-3: holds tp 0's Q head 0, expected Q head 1"
    assert lines[1].startswith("tp 2, elements 0-11: holds tp 0's")


def test_o_proj_split_by_rows(checkpoints, tmp_path):
    """A row-parallel weight cut by rows: every rank wrong; tp 0's row 0 happens to be right."""
    report = diagnose_dumps(checkpoints, tmp_path, "llama-mcore", 4, bugs={"o_proj": "rows"})
    lines = bad(report)[L0 + "self_attn.o_proj.weight"]
    assert lines[0].startswith("tp 0, rows 1-15: holds ")
    assert {line.split(",")[0] for line in lines} == {"tp 0", "tp 1", "tp 2", "tp 3"}
    assert "not found" not in " ".join(lines)  # every moved block is located in the checkpoint


@pytest.mark.parametrize("family", ["mixtral", "qwen2-moe"])
def test_two_experts_exchanged_on_one_rank(checkpoints, tmp_path, family):
    """Experts 0 and 1 exchanged on tp 1 (w13 and w2): found there only, by expert."""
    report = diagnose_dumps(
        checkpoints,
        tmp_path,
        family,
        2,
        bugs={"experts_w13": "swap_experts", "experts_w2": "swap_experts"},
    )
    found = bad(report)
    moe = "block_sparse_moe" if family == "mixtral" else "mlp"
    w13 = found[f"{L0}{moe}.experts.w13_weight"]
    w2 = found[f"{L0}{moe}.experts.w2_weight"]
    assert len(w13) == len(w2) == 1 and w13[0].startswith("tp 1, experts 0-1: holds expert 0 (")
    inter = tiny_spec(family).moe_ffn_hidden_size // 2
    assert f"expert 1 gate rows {inter}-{2 * inter - 1}" in w13[0]
    assert f"expert 1 down cols {inter}-{2 * inter - 1}" in w2[0]
    assert set(found) == {f"{L0}{moe}.experts.w13_weight", f"{L0}{moe}.experts.w2_weight"}
    view = expert_diagram(report.result, f"{L0}{moe}.experts.w13_weight")
    statuses = {(r.first, c.rank): c.status for r in view.rows for c in r.after}
    assert statuses[(0, 1)] != "ok" and statuses[(0, 0)] == "ok"


def test_shared_expert_and_gate_qwen2_moe(checkpoints, tmp_path):
    """Qwen2-MoE: tp 0's shared-expert gate_up on tp 1 is found; the shared-expert gate stays OK."""
    report = diagnose_dumps(
        checkpoints, tmp_path, "qwen2-moe", 2, bugs={"shared_gate_up": "shard0"}
    )
    found = bad(report)
    assert list(found) == [L0 + "mlp.shared_expert.gate_up_proj.weight"]
    assert found[L0 + "mlp.shared_expert.gate_up_proj.weight"][0].startswith(
        "tp 1, rows 0-15: holds tp 0's rows 0-7: shared gate rows 0-7"
    )
    gate = next(p for p in report.params if p.key == L0 + "mlp.shared_expert_gate.weight")
    assert gate.status == "ok"


def test_lm_head_of_tp1_holds_tp0_shard(checkpoints, tmp_path):
    """lm_head of tp 1 holding tp 0's vocab rows."""
    found = bad(diagnose_dumps(checkpoints, tmp_path, "mixtral", 2, bugs={"lm_head": "tp0"}))
    assert found == {
        "model.lm_head.weight": [
            "tp 1, rows 0-31: holds tp 0's vocab rows 0-31, expected vocab rows 32-63"
        ]
    }


def test_missing_tensor_is_named_by_rank(checkpoints, tmp_path):
    """A tensor absent from one rank's file is MISSING there, by name and rank."""
    report = diagnose_dumps(checkpoints, tmp_path, "llama-mcore", 2, bugs={"down": "missing"})
    param = next(p for p in report.params if p.status != "ok")
    assert (param.key, param.status) == (L0 + "mlp.down_proj.weight", "missing")
    assert param.lines() == ["  tp 1: missing from tp1.safetensors"]
    assert [t.status for t in param.tensors] == ["ok", "missing"]
    assert "MISSING model.model.layers.0.mlp.down_proj.weight" in report.text()


def test_rank_files_swapped(checkpoints, tmp_path):
    """tp0 and tp1 files exchanged: recognised as files in the wrong order."""
    report = diagnose_dumps(checkpoints, tmp_path, "qwen2", 2, swap_files=True)
    assert report.flow_errors == [
        "rank files in the wrong order: tp0.safetensors holds tp 1's tensors;"
        " tp1.safetensors holds tp 0's tensors"
    ]
    norms = [p for p in report.params if "norm" in p.key]
    assert norms and all(p.status == "ok" for p in norms)  # replicated tensors agree anyway


def test_values_not_found_are_never_guessed(checkpoints, tmp_path):
    """Random values (and random values sharing every 5th element with the right ones)."""
    for bug in ("noise", "few_shared"):
        report = diagnose_dumps(checkpoints, tmp_path, "llama-mcore", 2, bugs={"o_proj": bug})
        param = bad(report)
        lines = param[L0 + "self_attn.o_proj.weight"]
        assert lines == [
            "tp 1, rows 0-15: holds values not found in the reference, expected heads 4-7"
        ]
        check = next(p for p in report.params if p.key == L0 + "self_attn.o_proj.weight")
        assert check.tensors[1].wrong == 16 * 8 and check.tensors[0].status == "ok"


def test_nonzero_padding_is_flagged(checkpoints, tmp_path):
    """Padding rows past the vocab must be zero: data there is wrong, zeros there are fine."""
    spec = tiny_spec("llama-mcore")
    dump = tmp_path / "dump"
    write_dumps(spec, checkpoints["llama-mcore"], dump, tp=4)
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(dump / "tp3.safetensors"))
    embed = tensors["model.embed_tokens.weight"]
    assert bool((embed[4:] == 0).all())  # vocab 100 of 128: rows 4-31 of tp 3 are padding
    embed[4:8] = tensors["lm_head.weight"][0:4]
    save_file(tensors, str(dump / "tp3.safetensors"))
    lines = bad(diagnose(checkpoints["llama-mcore"], dump, 4))["model.model.embed_tokens.weight"]
    assert lines == [
        "tp 3, rows 4-7: holds model.lm_head.weight's vocab rows 96-99, expected padding"
    ]


def test_data_from_another_layer_is_located(checkpoints, tmp_path):
    """Layer 1's qkv in layer 0's place is looked up across parameters and named."""
    from safetensors.torch import load_file, save_file

    dump = tmp_path / "dump"
    write_dumps(tiny_spec("llama-mcore"), checkpoints["llama-mcore"], dump, tp=2)
    tensors = load_file(str(dump / "tp0.safetensors"))
    tensors["model.layers.0.self_attn.qkv_proj.weight"] = tensors[
        "model.layers.1.self_attn.qkv_proj.weight"
    ].clone()
    save_file(tensors, str(dump / "tp0.safetensors"))
    lines = bad(diagnose(checkpoints["llama-mcore"], dump, 2))[L0 + "self_attn.qkv_proj.weight"]
    assert lines == [
        "tp 0, rows 0-11: holds model.model.layers.1.self_attn.qkv_proj.weight's rows 0-7: Q heads"
        " 0-3; rows 8-9: K head 0; rows 10-11: V head 0, expected rows 0-7: Q heads 0-3;"
        " rows 8-9: K head 0; rows 10-11: V head 0"
    ]


def test_diagram_views_draw_the_diagnosis(checkpoints, tmp_path):
    """The layout view marks the wrong rects of a diagnosed parameter and none of a right one."""
    report = diagnose_dumps(checkpoints, tmp_path, "llama-mcore", 4, bugs={"qkv": "shard0"})
    wrong = layout_diagram(report.result, L0 + "self_attn.qkv_proj.weight", report)
    right = layout_diagram(report.result, L0 + "self_attn.o_proj.weight", report)
    assert wrong.wrong_count > 0 and right.wrong_count == 0
    assert wrong.regions()[:2] == [
        "vLLM tp 1 (rank 1): rows 0-1: holds Q head 0, expected Q head 2",
        "vLLM tp 1 (rank 1): rows 2-3: holds Q head 1, expected Q head 3",
    ]
    assert right.regions() == []
    ids = report.result.local_ids(1, L0 + "self_attn.qkv_proj.weight")
    assert ids.shape == (8, 16) and torch.equal(ids[0], torch.arange(16, dtype=torch.float64))


def test_report_json_and_html(checkpoints, tmp_path):
    """The diagnosis report has the checker's JSON and HTML forms."""
    import json

    report = diagnose_dumps(checkpoints, tmp_path, "llama-mcore", 2, bugs={"lm_head": "tp0"})
    data = json.loads(report.to_json())
    lm = next(p for p in data["params"] if p["key"] == "model.lm_head.weight")
    assert lm["status"] == "wrong" and lm["tensors"][1]["problems"]
    assert "MISMATCH" in report._repr_html_()
