"""Judged from outside: `syncviz diagnose` on dumps of what vLLM's own loaders put on each rank,
right and with planted bugs, for Qwen3, Qwen3-MoE, DeepSeek-V3 (MLA with q_lora_rank) and
gpt-oss at vLLM TP 2.

Each family's random bf16 checkpoint is the loader judge's (tests/interop/test_vllm_loaders.py:
its tiny spec, MoE sizes widened for vLLM's CPU MoE back end). scripts/vllm_judge/load_ranks.py
runs once for the four families in vLLM's virtualenv (SYNCVIZ_VLLM_PYTHON, which .ci/run sets):
vLLM's model class and ``DefaultModelLoader.load_weights`` fill each rank, and
``syncviz.dump.save_vllm_rank`` writes it as a user dumps a rank (``tp{r}.safetensors`` under
vLLM 0.32's own names, ``mlp.experts.routed_experts.`` included, and the note beside it). Here
`syncviz diagnose` (the command line, in this process) judges that dump against the checkpoint:
exit 0; then a copy with one bug planted by editing the dumped tensors: the exit code, and
the tensor, ranks, rows, heads or experts named, with the words expected.

Expected places, worked by hand from the sizes (TP 2):

- Qwen3: 4 Q heads of head_dim 8, 2 K/V heads; q_norm and k_norm [8] whole on each rank
  (elements 0-7).
- Qwen3-MoE: 4 experts of FFN 128 (widened), 64 a rank: w13 [4, 128, 32] per rank, rows 0-63
  gate rows 64r.., rows 64-127 up rows 64r...
- DeepSeek-V3: 4 heads, q_lora 24, kv_lora 16, qk_nope 8, qk_rope 4, v 8; 2 heads a rank:
  q_b_proj [24, 24] per rank (a head: nope 8 rows, rope 4 rows), kv_b_proj [32, 16] per rank
  (a head: k_nope 8, v 8; tp 1 holds checkpoint rows 32-63, heads 2-3); layer 0 dense, layer 1
  MoE with one shared expert of FFN 128: shared gate_up [128, 64] per rank (gate rows 64r..
  then up rows 64r..), shared down [64, 64] per rank (columns 64r..).
- gpt-oss: 8 Q heads, 4 a rank: attn.sinks [4] per rank (heads 4r..4r+3) of [8]; 4 experts of
  FFN 128, 64 a rank: w13 [4, 128, 64] per rank, gate and up rows 64r.. interleaved; w2_bias
  [4, 64] whole on tp 0, zeros on tp 1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.interop import vllm_python
from tests.interop.test_vllm_loaders import SCRIPT, judge_spec, write_judged_checkpoint

pytestmark = pytest.mark.interop

TP = 2
FAMILIES = ("qwen3", "qwen3-moe", "deepseek-v3", "gpt-oss")
L0, L1 = "model.layers.0.", "model.layers.1."  # vLLM's names (a dump's)
K0, K1 = "model." + L0, "model." + L1  # diagnose's names of the same tensors
ROUTED = "mlp.experts.routed_experts."  # vLLM 0.32 nests routed experts one level deeper


@pytest.fixture(scope="module")
def loaded() -> Iterator[Path]:
    """ROOT/FAMILY/ckpt and ROOT/FAMILY/dump (vLLM's TP 2 ranks dumped), one vLLM process."""
    python = vllm_python()  # (skips the module's tests when there is none)
    # Not under pytest's base temp: other pytest runs of the same user rotate it away.
    with tempfile.TemporaryDirectory(prefix="syncviz-vllm-diagnose-") as folder:
        root = Path(folder)
        jobs = []
        for family in FAMILIES:
            write_judged_checkpoint(judge_spec(family), root / family / "ckpt")
            jobs.append(
                {
                    "checkpoint": str(root / family / "ckpt"),
                    "tp": [TP],
                    "out": str(root / family / "judged"),
                    "dump": str(root / family / "dumps"),
                }
            )
        (root / "jobs.json").write_text(json.dumps(jobs), encoding="utf-8")
        out = subprocess.run(
            [python, str(SCRIPT), "--jobs", str(root / "jobs.json")],
            capture_output=True,
            text=True,
            timeout=1500,
            check=False,
            env={**os.environ, "PYTHONPATH": ""},
        )
        log = f"stdout:\n{out.stdout[-3000:]}\nstderr:\n{out.stderr[-6000:]}"
        assert out.returncode == 0, f"load_ranks.py exited {out.returncode}\n{log}"
        for family in FAMILIES:
            summary = json.loads((root / family / "judged" / "summary.json").read_text())
            assert not summary["unsupported"], (family, summary)
            assert summary["tp"][str(TP)]["result"] == "ok", (family, summary, log)
        yield root


def diagnose(ckpt: Path, dump: Path, capsys) -> tuple[int, dict[str, list[str]]]:
    """`syncviz diagnose` on the dump: its exit code, and each named tensor's status and
    lines ("WRONG model...weight" -> its rank lines, stripped)."""
    from syncviz.cli import main

    capsys.readouterr()
    code = main(["diagnose", "--reference", str(ckpt), "--dump", str(dump), "--dst-tp", str(TP)])
    named: dict[str, list[str]] = {}
    head = None
    for line in capsys.readouterr().out.splitlines():
        status, _, key = line.partition(" ")
        if status in ("WRONG", "MISSING", "UNCHECKABLE") and key.startswith("model."):
            head = f"{status} {key}"
            named[head] = []
        elif head and line.startswith("  "):
            named[head].append(line.strip())
        else:
            head = None
    return code, named


def planted(loaded: Path, family: str, out: Path, edit: Callable[[list[dict]], None]) -> Path:
    """A copy of the family's dump (notes too) whose ranks' tensors ``edit`` changed."""
    dump = out / "dump"
    shutil.copytree(loaded / family / "dumps" / f"tp{TP}", dump)
    ranks = [load_file(str(dump / f"tp{t}.safetensors")) for t in range(TP)]
    edit(ranks)
    for t, tensors in enumerate(ranks):
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(dump / f"tp{t}.safetensors"))
    return dump


def checkpoint(loaded: Path, family: str) -> dict[str, torch.Tensor]:
    return load_file(str(loaded / family / "ckpt" / "model.safetensors"))


@pytest.mark.parametrize("family", FAMILIES)
def test_vllm_dump_is_ok(loaded, capsys, family):
    """The dump of what vLLM's loader put on each rank diagnoses OK: exit 0, nothing named."""
    code, named = diagnose(loaded / family / "ckpt", loaded / family / "dumps" / "tp2", capsys)
    assert (code, named) == (0, {})


def test_qwen3_q_norm_missing_on_a_rank(loaded, tmp_path, capsys):
    """Layer 0's q_norm left out of tp 1's file: that tensor, missing on that rank (exit 1)."""

    def drop(ranks):
        del ranks[1][L0 + "self_attn.q_norm.weight"]

    dump = planted(loaded, "qwen3", tmp_path, drop)
    assert diagnose(loaded / "qwen3" / "ckpt", dump, capsys) == (
        1,
        {f"MISSING {K0}self_attn.q_norm.weight": ["tp 1: missing from tp1.safetensors"]},
    )


def test_qwen3_q_norm_and_k_norm_exchanged(loaded, tmp_path, capsys):
    """q_norm and k_norm exchanged on both ranks: each named holding the other's 8 elements."""
    q, k = L0 + "self_attn.q_norm.weight", L0 + "self_attn.k_norm.weight"

    def exchange(ranks):
        for tensors in ranks:
            assert tensors[q].shape == tensors[k].shape == (8,)
            tensors[q], tensors[k] = tensors[k], tensors[q]

    dump = planted(loaded, "qwen3", tmp_path, exchange)
    assert diagnose(loaded / "qwen3" / "ckpt", dump, capsys) == (
        1,
        {
            f"WRONG {K0}self_attn.q_norm.weight": [
                f"tp {t}, elements 0-7: holds {K0}self_attn.k_norm.weight's k norm, expected q norm"
                for t in (0, 1)
            ],
            f"WRONG {K0}self_attn.k_norm.weight": [
                f"tp {t}, elements 0-7: holds {K0}self_attn.q_norm.weight's q norm, expected k norm"
                for t in (0, 1)
            ],
        },
    )


W13_MOE = L0 + ROUTED + "w13_weight"


def test_qwen3_moe_experts_exchanged_on_one_rank(loaded, tmp_path, capsys):
    """Experts 0 and 1 of w13 exchanged on tp 1: that rank's experts 0-1 named, each holding
    the other's gate and up rows 64-127; tp 0 is right."""

    def exchange(ranks):
        w = ranks[1][W13_MOE]
        assert w.shape == (4, 128, 32)
        ranks[1][W13_MOE] = w[[1, 0, 2, 3]]

    dump = planted(loaded, "qwen3-moe", tmp_path, exchange)
    own = "rows 0-63: gate rows 64-127, rows 64-127: up rows 64-127"
    assert diagnose(loaded / "qwen3-moe" / "ckpt", dump, capsys) == (
        1,
        {
            f"WRONG {K0}mlp.experts.w13_weight": [
                "tp 1, experts 0-1: holds expert 0 (rows 0-63: expert 1 gate rows 64-127, rows"
                " 64-127: expert 1 up rows 64-127); expert 1 (rows 0-63: expert 0 gate rows"
                f" 64-127, rows 64-127: expert 0 up rows 64-127), expected experts 0-1 each ({own})"
            ]
        },
    )


def test_qwen3_moe_gate_up_exchanged_in_every_expert(loaded, tmp_path, capsys):
    """Every expert written [up; gate] on both ranks: named once per rank as the MoE back
    end's known layout, not checkable as loaded (exit 2), the reason said below."""

    def swap(ranks):
        for tensors in ranks:
            w = tensors[W13_MOE]
            tensors[W13_MOE] = torch.cat([w[:, 64:], w[:, :64]], dim=1)

    dump = planted(loaded, "qwen3-moe", tmp_path, swap)
    code, named = diagnose(loaded / "qwen3-moe" / "ckpt", dump, capsys)
    assert (code, named) == (
        2,
        {
            f"UNCHECKABLE {K0}mlp.experts.w13_weight": [
                f"tp {t}, experts 0-3: every expert's w13 halves exchanged ([up; gate] instead of"
                " [gate; up])"
                for t in (0, 1)
            ]
        },
    )


KV_B, Q_B = L0 + "self_attn.kv_b_proj.weight", L0 + "self_attn.q_b_proj.weight"


def test_mla_kv_b_heads_shifted(loaded, tmp_path, capsys):
    """tp 1's kv_b_proj cut one head early (checkpoint rows 16-47: heads 1-2 of 16 rows where
    heads 2-3 are due); tp 0 is right."""
    whole = checkpoint(loaded, "deepseek-v3")[KV_B]

    def shift(ranks):
        assert whole.shape == (64, 16) and torch.equal(ranks[1][KV_B], whole[32:64])
        ranks[1][KV_B] = whole[16:48].clone()

    dump = planted(loaded, "deepseek-v3", tmp_path, shift)
    assert diagnose(loaded / "deepseek-v3" / "ckpt", dump, capsys) == (
        1,
        {f"WRONG {K0}self_attn.kv_b_proj.weight": [
            "tp 1, rows 0-31: holds kv_b heads 1-2, expected kv_b heads 2-3"
        ]},
    )  # fmt: skip


def test_mla_q_rows_rope_before_nope(loaded, tmp_path, capsys):
    """Each Q head of q_b_proj written [rope 4; nope 8] on both ranks: rows 0-3 head 2t's rope,
    4-11 its nope, 12-15 head 2t+1's rope, 16-23 its nope."""

    def rope_first(ranks):
        for tensors in ranks:
            assert tensors[Q_B].shape == (24, 24)
            heads = tensors[Q_B].view(2, 12, 24)
            tensors[Q_B] = torch.cat([heads[:, 8:], heads[:, :8]], dim=1).reshape(24, 24)

    dump = planted(loaded, "deepseek-v3", tmp_path, rope_first)
    assert diagnose(loaded / "deepseek-v3" / "ckpt", dump, capsys) == (
        1,
        {
            f"WRONG {K0}self_attn.q_b_proj.weight": [
                f"tp {t}, rows 0-23: holds rows 0-3: Q head {2 * t} rope; rows 4-11: Q head"
                f" {2 * t} nope; rows 12-15: Q head {2 * t + 1} rope; rows 16-23: Q head"
                f" {2 * t + 1} nope, expected Q heads {2 * t}-{2 * t + 1}"
                for t in (0, 1)
            ]
        },
    )


def test_shared_experts_of_the_wrong_rank(loaded, tmp_path, capsys):
    """Layer 1's shared expert exchanged between the ranks: each rank's gate_up holds the
    other rank's gate and up rows, its down_proj the other's 64 columns."""
    names = [L1 + f"mlp.shared_experts.{n}.weight" for n in ("gate_up_proj", "down_proj")]

    def exchange(ranks):
        assert ranks[0][names[0]].shape == (128, 64) and ranks[0][names[1]].shape == (64, 64)
        for name in names:
            ranks[0][name], ranks[1][name] = ranks[1][name], ranks[0][name]

    def rows(t):
        return f"rows {64 * t}-{64 * t + 63}"

    def gate_up(t):
        return f"rows 0-63: shared gate {rows(t)}; rows 64-127: shared up {rows(t)}"

    dump = planted(loaded, "deepseek-v3", tmp_path, exchange)
    assert diagnose(loaded / "deepseek-v3" / "ckpt", dump, capsys) == (
        1,
        {
            f"WRONG {K1}mlp.shared_experts.gate_up_proj.weight": [
                f"tp {t}, rows 0-127: holds tp {1 - t}'s {gate_up(1 - t)}, expected {gate_up(t)}"
                for t in (0, 1)
            ],
            f"WRONG {K1}mlp.shared_experts.down_proj.weight": [
                f"tp {t}, rows 0-63: holds tp {1 - t}'s shared down cols {64 * (1 - t)}-"
                f"{64 * (1 - t) + 63}, expected shared down cols {64 * t}-{64 * t + 63}"
                for t in (0, 1)
            ],
        },
    )


W13_OSS, W2_BIAS, SINKS = L0 + ROUTED + "w13_weight", L0 + ROUTED + "w2_bias", L0 + "attn.sinks"


def test_gpt_oss_w13_de_interleaved(loaded, tmp_path, capsys):
    """Every expert's w13 written [gate; up] where vLLM interleaves them, on both ranks: each
    rank's experts 0-3 named with the rows they hold and the interleaving expected."""

    def de_interleave(ranks):
        for tensors in ranks:
            w = tensors[W13_OSS]
            assert w.shape == (4, 128, 64)
            tensors[W13_OSS] = torch.cat([w[:, 0::2], w[:, 1::2]], dim=1)

    dump = planted(loaded, "gpt-oss", tmp_path, de_interleave)
    rows = {0: "rows 0-63", 1: "rows 64-127"}
    assert diagnose(loaded / "gpt-oss" / "ckpt", dump, capsys) == (
        1,
        {
            f"WRONG {K0}mlp.experts.w13_weight": [
                f"tp {t}, experts 0-3: holds experts 0-3 each (rows 0-63: gate {rows[t]}, rows"
                f" 64-127: up {rows[t]}), expected experts 0-3 each (rows 0-127: gate {rows[t]}"
                f" and up {rows[t]}, interleaved)"
                for t in (0, 1)
            ]
        },
    )


def test_gpt_oss_w2_bias_on_every_rank(loaded, tmp_path, capsys):
    """tp 1 given the whole w2_bias too (vLLM keeps zeros there): its 4 expert rows named as
    holding tp 0's down biases where zeros are due."""

    def everywhere(ranks):
        assert ranks[0][W2_BIAS].shape == (4, 64) and not ranks[1][W2_BIAS].any()
        ranks[1][W2_BIAS] = ranks[0][W2_BIAS].clone()

    dump = planted(loaded, "gpt-oss", tmp_path, everywhere)
    assert diagnose(loaded / "gpt-oss" / "ckpt", dump, capsys) == (
        1,
        {f"WRONG {K0}mlp.experts.w2_bias": [
            "tp 1, rows 0-3: holds tp 0's experts 0-3 down bias, expected zeros"
        ]},
    )  # fmt: skip


def test_gpt_oss_sinks_unsharded(loaded, tmp_path, capsys):
    """Both ranks given all 8 heads' sinks: shape [8] where [4] is due, said to be the whole
    tensor, with the heads each rank is due."""
    whole = checkpoint(loaded, "gpt-oss")["model.layers.0.self_attn.sinks"]

    def unsharded(ranks):
        assert whole.shape == (8,) and ranks[1][SINKS].shape == (4,)
        for tensors in ranks:
            tensors[SINKS] = whole.clone()

    dump = planted(loaded, "gpt-oss", tmp_path, unsharded)
    assert diagnose(loaded / "gpt-oss" / "ckpt", dump, capsys) == (
        1,
        {
            f"WRONG {K0}attn.sinks": [
                f"tp {t}: shape [8], the whole tensor's (unsharded), expected [4]: Q heads"
                f" {4 * t}-{4 * t + 3} sink"
                for t in (0, 1)
            ]
        },
    )
