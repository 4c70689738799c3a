"""Diagnose on MoE dumps with the bugs of shared experts and of gpt-oss's experts and sinks:
shared experts of the wrong rank (DeepSeek-V3), w13 de-interleaved, w2_bias on every rank and
attention sinks unsharded (gpt-oss). Dumps are what the corrected synchronizer writes at vLLM
tp 2 (tests/diagnose_support.py), edited. DeepSeek's are also diagnosed from their fingerprints
(the same verdicts); gpt-oss's are not: a row fingerprint of w13_bias (a rank's [4, 128], gate
and up elements interleaved along the row) cannot be cut into the layout's 1-element segments,
which diagnose refuses as bad input.

Sizes, worked by hand (both tiny specs, vLLM tp 2):

- DeepSeek-V3: layer 0 dense (first_k_dense_replace 1), layer 1 MoE with one shared expert
  of FFN 128: shared_experts.gate_up_proj [2 x 128, 64] is cut [gate 64r..; up 64r..] per
  rank r, 128 rows (gate rows 0-63, up rows 64-127 of the rank's tensor);
  shared_experts.down_proj [64, 128] is cut by columns, 64 a rank.
- gpt-oss: 8 Q heads (4 a rank): attn.sinks [8] cut 4 a rank (tp r: heads 4r..4r+3);
  4 experts of FFN 128, 64 a rank: w13 [4, 128, 64] per rank holds gate and up rows 64r..
  interleaved (g, u, g, u, ...); w2_bias [4, 64] whole on tp 0 and zeros on tp 1 (vLLM adds
  it once after the all-reduce).
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from syncviz.diagnose import diagnose as diagnose_full
from syncviz.diagnose.fixtures import tiny_spec, write_checkpoint
from syncviz.parallel import Parallel
from tests.diagnose_support import bad, dumps_from_corrected
from tests.test_diagnose_bugs import diagnose

L0, L1 = "model.layers.0.", "model.layers.1."


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Per family: its tiny checkpoint and the corrected synchronizer's tp 2 dumps of it."""
    out = {}
    for family in ("deepseek-v3", "gpt-oss"):
        root = tmp_path_factory.mktemp(family)
        spec = tiny_spec(family)
        write_checkpoint(spec, root / "ref")
        dumps_from_corrected(spec, root / "ref", root / "dump", Parallel(tp=2), Parallel(tp=2))
        out[family] = root
    return out


def edited(root, out, edit):
    """The family's dumps, both ranks' tensors passed through ``edit(ranks)``, written to out."""
    ranks = [load_file(str(root / "dump" / f"tp{t}.safetensors")) for t in (0, 1)]
    edit(ranks)
    out.mkdir()
    for t, tensors in enumerate(ranks):
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / f"tp{t}.safetensors"))
    return out


CHECK = {"deepseek-v3": diagnose, "gpt-oss": diagnose_full}  # with and without fingerprints


@pytest.mark.parametrize("family", ["deepseek-v3", "gpt-oss"])
def test_corrected_dumps_are_ok(made, family):
    """The unedited dumps (experts, shared experts, biases, sinks) are all OK (exit 0)."""
    report = CHECK[family](made[family] / "ref", made[family] / "dump", 2)
    assert report.exit_code == 0 and set(report.counts()) == {"ok"}, report.text()


def test_shared_experts_of_the_wrong_rank(made, tmp_path):
    """Layer 1's shared expert exchanged between the ranks: each rank's gate_up holds the
    other's gate and up rows (64 each), its down_proj the other's 64 columns."""
    names = [L1 + f"mlp.shared_experts.{n}.weight" for n in ("gate_up_proj", "down_proj")]

    def exchange(ranks):
        assert ranks[0][names[0]].shape == (128, 64) and ranks[0][names[1]].shape == (64, 64)
        for name in names:
            ranks[0][name], ranks[1][name] = ranks[1][name], ranks[0][name]

    root = made["deepseek-v3"]
    report = diagnose(root / "ref", edited(root, tmp_path / "dump", exchange), 2)

    def gate_up(t):
        return f"rows 0-63: shared gate rows {64 * t}-{64 * t + 63}; rows 64-127: shared up rows" \
            f" {64 * t}-{64 * t + 63}"  # fmt: skip

    assert bad(report) == {
        "model." + names[0]: [
            f"tp {t}, rows 0-127: holds tp {1 - t}'s {gate_up(1 - t)}, expected {gate_up(t)}"
            for t in (0, 1)
        ],
        "model." + names[1]: [
            f"tp {t}, rows 0-63: holds tp {1 - t}'s shared down cols {64 * (1 - t)}-"
            f"{64 * (1 - t) + 63}, expected shared down cols {64 * t}-{64 * t + 63}"
            for t in (0, 1)
        ],
    }
    assert report.exit_code == 1 and report.counts() == {"ok": 25, "wrong": 2}


W13 = L0 + "mlp.experts.w13_weight"


def test_gpt_oss_w13_de_interleaved(made, tmp_path):
    """Every expert's w13 written [gate; up] (64 rows each) where vLLM interleaves them: each
    rank's experts 0-3 are named with the rows they hold and the interleaving expected."""

    def de_interleave(ranks):
        for tensors in ranks:
            w = tensors[W13]
            assert w.shape == (4, 128, 64)
            tensors[W13] = torch.cat([w[:, 0::2], w[:, 1::2]], dim=1)

    root = made["gpt-oss"]
    report = diagnose_full(root / "ref", edited(root, tmp_path / "dump", de_interleave), 2)
    rows = {0: "rows 0-63", 1: "rows 64-127"}
    assert bad(report) == {
        "model." + W13: [
            f"tp {t}, experts 0-3: holds experts 0-3 each (rows 0-63: gate {rows[t]}, rows"
            f" 64-127: up {rows[t]}), expected experts 0-3 each (rows 0-127: gate {rows[t]} and"
            f" up {rows[t]}, interleaved)"
            for t in (0, 1)
        ]
    }
    assert report.exit_code == 1 and report.counts() == {"ok": 28, "wrong": 1}


def test_gpt_oss_w2_bias_on_every_rank(made, tmp_path):
    """w2_bias copied onto tp 1 too (added twice after the all-reduce): tp 1's 4 expert rows
    hold tp 0's down biases where zeros are due; tp 0 is right."""
    bias = L0 + "mlp.experts.w2_bias"

    def everywhere(ranks):
        assert ranks[0][bias].shape == (4, 64) and not ranks[1][bias].any()
        ranks[1][bias] = ranks[0][bias].clone()

    root = made["gpt-oss"]
    report = diagnose_full(root / "ref", edited(root, tmp_path / "dump", everywhere), 2)
    assert bad(report) == {
        "model." + bias: ["tp 1, rows 0-3: holds tp 0's experts 0-3 down bias, expected zeros"]
    }
    assert report.exit_code == 1 and report.counts() == {"ok": 28, "wrong": 1}


def test_gpt_oss_sinks_unsharded(made, tmp_path):
    """Every rank given all 8 heads' sinks: shape [8] where [4] is due, said to be the whole
    tensor, with the heads each rank is due (tp 0: 0-3, tp 1: 4-7)."""
    sinks = L0 + "attn.sinks"
    whole = load_file(str(made["gpt-oss"] / "ref" / "model.safetensors"))
    whole = whole["model.layers.0.self_attn.sinks"]

    def unsharded(ranks):
        assert whole.shape == (8,) and ranks[1][sinks].shape == (4,)
        for tensors in ranks:
            tensors[sinks] = whole.clone()

    root = made["gpt-oss"]
    report = diagnose_full(root / "ref", edited(root, tmp_path / "dump", unsharded), 2)
    assert bad(report) == {
        "model." + sinks: [
            f"tp {t}: shape [8], the whole tensor's (unsharded), expected [4]: Q heads"
            f" {4 * t}-{4 * t + 3} sink"
            for t in (0, 1)
        ]
    }
    assert report.exit_code == 1 and report.counts() == {"ok": 28, "wrong": 1}


def test_first_heads_sinks_on_every_rank(made, tmp_path):
    """Every rank given the first 4 heads' sinks (the right shape, never cut by rank): tp 1
    holds tp 0's heads 0-3 where 4-7 are due; tp 0 is right."""
    sinks = L0 + "attn.sinks"

    def first(ranks):
        ranks[1][sinks] = ranks[0][sinks].clone()

    root = made["gpt-oss"]
    report = diagnose_full(root / "ref", edited(root, tmp_path / "dump", first), 2)
    assert bad(report) == {
        "model." + sinks: ["tp 1, elements 0-3: holds tp 0's Q heads 0-3 sink, expected Q heads"
                           " 4-7 sink"]
    }  # fmt: skip
    assert report.exit_code == 1
