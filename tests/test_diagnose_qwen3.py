"""Diagnose on Qwen3 and Qwen3-MoE dumps: right dumps are OK, planted bugs are named."""

from __future__ import annotations

import pytest

from syncviz.diagnose.fixtures import hf_config, tiny_spec
from syncviz.spec import ModelSpec
from tests.diagnose_support import bad, diagnose_dumps, tiny_checkpoints

L0 = "model.model.layers.0."


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One random bf16 checkpoint per family."""
    return tiny_checkpoints(tmp_path_factory, ("qwen3", "qwen3-moe"))


def test_fixture_config_reads_back_as_the_spec():
    """The written config.json of each tiny spec reads back as that spec (head_dim 8 != 16/4)."""
    for family in ("qwen3", "qwen3-moe"):
        spec = tiny_spec(family)
        assert ModelSpec.from_hf_config(hf_config(spec), name=spec.name) == spec


@pytest.mark.parametrize(
    ("family", "tp", "naming"),
    [("qwen3", 1, "vllm"), ("qwen3", 2, "vllm"), ("qwen3", 4, "vllm"), ("qwen3-moe", 2, "vllm"),
     ("qwen3-moe", 2, "routed"), ("qwen3-moe", 4, "chatlearn")],
)  # fmt: skip
def test_correct_dump_is_ok(checkpoints, tmp_path, family, tp, naming):
    """Dumps cut by the layout rules (q/k norms, tied vocab, experts, any naming) are all OK."""
    report = diagnose_dumps(checkpoints, tmp_path, family, tp, naming=naming)
    assert report.ok, report.text()
    assert set(report.counts()) == {"ok"}


def test_q_norm_missing_on_one_rank(checkpoints, tmp_path):
    """q_norm absent from tp 1's file: that tensor, on that rank, is missing."""
    report = diagnose_dumps(checkpoints, tmp_path, "qwen3", 2, bugs={"q_norm": "missing"})
    assert bad(report) == {L0 + "self_attn.q_norm.weight": ["tp 1: missing from tp1.safetensors"]}
    assert report.counts() == {"ok": 17, "missing": 1}


def test_q_norm_and_k_norm_exchanged(checkpoints, tmp_path):
    """q_norm and k_norm exchanged on every rank: each is wrong and holds the other's data."""
    report = diagnose_dumps(
        checkpoints, tmp_path, "qwen3", 2, bugs={"q_norm": "exchange", "k_norm": "exchange"}
    )
    found = bad(report)
    assert found == {
        L0 + "self_attn.q_norm.weight": [
            f"tp {r}, elements 0-7: holds {L0}self_attn.k_norm.weight's k norm, expected q norm"
            for r in (0, 1)
        ],
        L0 + "self_attn.k_norm.weight": [
            f"tp {r}, elements 0-7: holds {L0}self_attn.q_norm.weight's q norm, expected k norm"
            for r in (0, 1)
        ],
    }


def test_experts_exchanged_on_one_rank(checkpoints, tmp_path):
    """Experts 0 and 1 of w13 exchanged on tp 1 only: that rank's two experts are named."""
    report = diagnose_dumps(
        checkpoints, tmp_path, "qwen3-moe", 2, bugs={"experts_w13": "swap_experts"}
    )
    found = bad(report)
    assert list(found) == [L0 + "mlp.experts.w13_weight"]
    (line,) = found[L0 + "mlp.experts.w13_weight"]
    assert line.startswith("tp 1, experts 0-1: holds expert 0 (rows 0-3: expert 1 gate rows 4-7")
    assert line.endswith(
        "expected experts 0-1 each (rows 0-3: gate rows 4-7, rows 4-7: up rows 4-7)"
    )


def test_gate_and_up_exchanged_in_every_expert(checkpoints, tmp_path):
    """Each expert written [up; gate] on every rank (an MoE back end's swap): named once per
    rank as the known back-end transform, not as a scramble of rows."""
    report = diagnose_dumps(
        checkpoints, tmp_path, "qwen3-moe", 2, bugs={"experts_w13": "swap_halves"}
    )
    assert bad(report) == {
        L0 + "mlp.experts.w13_weight": [
            f"tp {r}, experts 0-3: every expert's w13 halves exchanged ([up; gate] instead of"
            " [gate; up])"
            for r in (0, 1)
        ]
    }


def test_qwen3_checkpoint_relabelled_as_llama_is_refused(checkpoints, tmp_path):
    """A Qwen3 checkpoint whose config.json says Llama throughout (architectures and
    model_type): the q_norm tensors name the family that reads them, not a false OK."""
    import json
    import shutil

    from syncviz.diagnose.reference import Reference
    from syncviz.errors import SyncvizError

    folder = tmp_path / "relabelled"
    shutil.copytree(checkpoints["qwen3"], folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(architectures=["LlamaForCausalLM"], model_type="llama")
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        SyncvizError, match=r"self_attn\.[qk]_norm\.weight', a tensor of family qwen3"
    ):
        Reference(folder)
    Reference(checkpoints["qwen3"])  # its own config reads
