"""The report as text: findings repeated across layers told once, ranks named by role,
status words defined, real and scaled sizes side by side; the synchronizer's name kept."""

from __future__ import annotations

import pytest

from syncviz.check import check
from syncviz.cli import main
from syncviz.parallel import Parallel
from syncviz.presets import preset
from syncviz.run.inprocess import run_sync

SPEC = preset("llama3-8b").scaled(num_layers=4)


@pytest.fixture(scope="module")
def faithful_1_to_2():
    """llama3-8b (4 scaled layers), the faithful port at s=1 -> d=2: every layer fails alike."""
    return run_sync(SPEC, Parallel(1), Parallel(2), trace=False)


def test_identical_findings_are_grouped_over_layers(faithful_1_to_2) -> None:
    """Each failing kind is one group naming layers 0-3, and no layer's key is listed alone."""
    text = check(faithful_1_to_2).text()
    heads = [line for line in text.splitlines() if line.startswith(("ERROR", "WRONG"))]
    assert heads == [
        "ERROR layers 0-3: input_layernorm.weight",
        "ERROR layers 0-3: self_attn.qkv_proj.weight",
        "WRONG layers 0-3: self_attn.o_proj.weight",
        "ERROR layers 0-3: post_attention_layernorm.weight",
    ]
    assert "model.model.layers.1." not in text


def test_verbose_lists_every_parameter(faithful_1_to_2) -> None:
    """--verbose keeps the full list: 16 bad parameters, one header each."""
    text = check(faithful_1_to_2).text(verbose=True)
    heads = [line for line in text.splitlines() if line.startswith(("ERROR ", "WRONG "))]
    assert len(heads) == 16
    assert "WRONG model.model.layers.3.self_attn.o_proj.weight" in heads


def test_ranks_are_named_by_role(faithful_1_to_2) -> None:
    """Trainer rank 0 and vLLM ranks 1-2 are named by side and tp, the number second."""
    lines = check(faithful_1_to_2).text().splitlines()
    assert "ranks: trainer tp 0 = rank 0; vLLM tp 0-1 = ranks 1-2" in lines
    assert "  trainer tp 0 (rank 0): regroup: IndexError: too many indices for tensor of" \
        " dimension 1" in lines  # fmt: skip
    assert "  vLLM tp 0-1 (ranks 1-2): never written" in lines
    # o_proj [128, 128] (32 heads of 4 columns) cut flat: vLLM tp 1's columns, those of heads
    # 16-31, hold the second half of the flat ids, rows 64-127 of every head.
    assert (
        "  vLLM tp 1 (rank 2): columns 0-63 (heads 16-31): hold heads 0-31 rows 64-127,"
        " expected heads 16-31" in lines
    )


def test_status_words_are_defined(faithful_1_to_2) -> None:
    """The words used (error, wrong, unwritten) are defined once, in the header."""
    lines = check(faithful_1_to_2).text().splitlines()
    assert lines[2] == (
        "error: the synchronizer raised; wrong: it wrote the wrong data;"
        " unwritten: never written (the data is missing)"
    )


def test_scaled_run_shows_real_and_scaled_sizes(faithful_1_to_2) -> None:
    """Given the real model, the header names it and each shrunk size as real -> scaled."""
    lines = check(faithful_1_to_2, real=preset("llama3-8b")).text().splitlines()
    assert lines[0].startswith("llama3-8b: src tp1 -> dst tp2, synchronizer chatlearn: MISMATCH")
    assert lines[1] == (
        "sizes (real -> scaled, same layout): hidden_size 4096 -> 128, head_dim 128 -> 4,"
        " ffn_hidden_size 14336 -> 64, vocab_size 128256 -> 256, num_layers 32 -> 4"
    )


def test_check_needs_no_synchronizer_name() -> None:
    """The run keeps the synchronizer's name, so check(result) reports it."""
    result = run_sync(SPEC, Parallel(1), Parallel(2), layers=[0], synchronizer="corrected")
    assert result.plan.options.synchronizer == "corrected"
    report = check(result)
    assert report.ok and report.synchronizer == "corrected"
    assert report.text() == (
        "llama3-8b (scaled): src tp1 -> dst tp2, synchronizer corrected: OK (6 ok)\n"
        "ranks: trainer tp 0 = rank 0; vLLM tp 0-1 = ranks 1-2"
    )


@pytest.mark.slow
def test_llama3_70b_report_is_short(capsys) -> None:
    """`syncviz check --preset llama3-70b --src-tp 8 --dst-tp 16` prints under 60 lines
    (5,361 before grouping): three groups over layers 0-79."""
    assert (
        main(["check", "--preset", "llama3-70b", "--src-tp", "8", "--dst-tp", "16", "--scaled"])
        == 1
    )
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) < 60
    assert "ERROR layers 0-79: input_layernorm.weight" in lines
    assert "WRONG layers 0-79: self_attn.o_proj.weight" in lines
