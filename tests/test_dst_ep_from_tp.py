"""Destination expert parallel from a trainer tp above 1: whole experts by the corrected sync."""

from __future__ import annotations

import pytest
import torch

from syncviz.check import check
from syncviz.cli import main
from syncviz.errors import SyncvizError
from syncviz.parallel import Parallel
from syncviz.run.inprocess import run_sync
from syncviz.spec import ModelSpec

L0 = "model.model.layers.0."
W13, W2 = L0 + "mlp.experts.w13_weight", L0 + "mlp.experts.w2_weight"

# Written out by hand from vLLM's placement (8 experts over ep 4), not from the oracle:
# linear gives rank r experts 2r, 2r + 1; round_robin gives r, r + 4.
HELD = {
    "linear": [[0, 1], [2, 3], [4, 5], [6, 7]],
    "round_robin": [[0, 4], [1, 5], [2, 6], [3, 7]],
}


def tiny(experts: int = 8) -> ModelSpec:
    """A tiny Qwen3-MoE: hidden 8, 4 heads of 2 (2 K/V heads), experts of FFN 4."""
    return ModelSpec(
        "t", "qwen3-moe", 1, 8, 4, 2, 8, 64, head_dim=2, num_experts=experts,
        moe_ffn_hidden_size=4,
    )  # fmt: skip


def whole_experts_ids(experts: list[int], per_expert: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The ids a rank holds when local expert k is global expert ``experts[k]``, whole."""
    rows = [torch.arange(per_expert, dtype=torch.float64) + e * per_expert for e in experts]
    return torch.stack(rows).reshape(len(experts), *shape)


@pytest.mark.parametrize("comm", ["allgather", "alltoall"])
@pytest.mark.parametrize("placement", ["linear", "round_robin"])
@pytest.mark.parametrize("src_ep", [1, 2])
def test_tiny_tp2_to_tp4_ep4_holds_hand_worked_experts(src_ep, placement, comm):
    """8 experts, trainer tp 2 (ep 1, 2) -> vLLM tp 4 ep 4: vLLM rank r holds exactly the
    experts written out in HELD, each whole (w13 [2, 8, 8] as [gate; up] of all FFN rows,
    w2 [2, 8, 4] of all FFN columns), and check agrees (oracle) with 0 findings."""
    src = Parallel(tp=2, ep=src_ep)
    dst = Parallel(tp=4, ep=4, expert_placement=placement)
    result = run_sync(tiny(), src, dst, synchronizer="corrected", expert_comm=comm)
    assert result.findings == []
    dst_worlds = [r.world for r in result.plan.roles if r.side == "dst"]
    assert len(dst_worlds) == 4
    for r, world in enumerate(dst_worlds):
        held = HELD[placement][r]
        # w13 global [8, 2 * 4, 8]: 64 ids an expert; w2 global [8, 8, 4]: 32 ids an expert.
        assert torch.equal(result.local_ids(world, W13), whole_experts_ids(held, 64, (8, 8)))
        assert torch.equal(result.local_ids(world, W2), whole_experts_ids(held, 32, (8, 4)))
    report = check(result)
    assert report.ok, report.text()


@pytest.mark.parametrize("placement", ["linear", "round_robin"])
def test_tiny_equal_tp_with_dst_ep(placement):
    """Trainer tp 2 ep 2 -> vLLM tp 2 ep 2 (one destination rank per trainer tp rank, no
    regroup): rank 0 holds experts 0-3 (linear) or 0, 2, 4, 6 (round_robin), whole."""
    dst = Parallel(tp=2, ep=2, expert_placement=placement)
    result = run_sync(tiny(), Parallel(tp=2, ep=2), dst, synchronizer="corrected")
    held = {"linear": [[0, 1, 2, 3], [4, 5, 6, 7]], "round_robin": [[0, 2, 4, 6], [1, 3, 5, 7]]}
    worlds = [r.world for r in result.plan.roles if r.side == "dst"]
    for r, world in enumerate(worlds):
        expected = whole_experts_ids(held[placement][r], 64, (8, 8))
        assert torch.equal(result.local_ids(world, W13), expected)
    assert check(result).ok


def test_tiny_gpt_oss_biases_from_tp2():
    """gpt-oss (interleaved w13 rows, w13 and w2 biases) from trainer tp 2 ep 2 -> vLLM tp 4
    ep 4: every tensor as the oracle says, each rank its own experts' w2 bias."""
    from syncviz.diagnose.fixtures import tiny_spec

    spec = tiny_spec("gpt-oss")
    for placement in ("linear", "round_robin"):
        dst = Parallel(tp=4, ep=4, expert_placement=placement)
        report = check(run_sync(spec, Parallel(tp=2, ep=2), dst, synchronizer="corrected"))
        assert report.ok, report.text()


def test_hep_trainer_tp2_to_dst_ep():
    """A HEP trainer (Qwen2-MoE: whole experts over tp * ep ranks) at tp 2 ep 2 -> vLLM tp 4
    ep 4, both exchanges and placements: OK."""
    spec = ModelSpec(
        "h", "qwen2-moe", 1, 8, 4, 4, 8, 64, num_experts=8, moe_ffn_hidden_size=4,
        shared_expert_ffn_hidden_size=4,
    )  # fmt: skip
    for comm in ("allgather", "alltoall"):
        for placement in ("linear", "round_robin"):
            dst = Parallel(tp=4, ep=4, expert_placement=placement)
            result = run_sync(spec, Parallel(tp=2, ep=2), dst, synchronizer="corrected",
                              expert_comm=comm)  # fmt: skip
            report = check(result)
            assert report.ok, (comm, placement, report.text())


def test_uneven_experts_still_refused():
    """6 experts on dst ep 4 from trainer tp 2: refused up front (equal chunks), as from tp 1."""
    with pytest.raises(SyncvizError, match=r"ranks hold 2 or 1 experts.*equal chunks"):
        run_sync(tiny(6), Parallel(tp=2), Parallel(tp=4, ep=4), synchronizer="corrected")


def test_dp_attention_from_tp2_still_refused():
    """DP attention from trainer tp 2 stays refused, saying a rank's attention shard holds heads
    of trainer ranks other than the one it receives from."""
    dst = Parallel(tp=4, engine="sglang", dp_attention=2)
    with pytest.raises(SyncvizError, match=r"needs src tp 1.*attention shard r mod 2.*other than"):
        run_sync(tiny(), Parallel(tp=2), dst, synchronizer="corrected")


@pytest.mark.parametrize(
    "argv",
    [
        ["--preset", "qwen3-30b-a3b", "--src-tp", "2", "--src-ep", "2", "--dst-tp", "4"],
        ["--preset", "qwen3-30b-a3b", "--src-tp", "4", "--src-ep", "2", "--dst-tp", "8"],
        ["--preset", "deepseek-v3", "--src-tp", "2", "--src-ep", "4", "--dst-tp", "4"],
    ],
)
@pytest.mark.parametrize("placement", ["linear", "round_robin"])
def test_check_cli_scaled(argv, placement, capsys):
    """`check --scaled --dst-ep = dst tp` from trainer tp > 1, corrected: exit 0, every tensor OK
    (DeepSeek-V3's layers 2-3: the last dense layer and the first MoE one)."""
    layers = "2-3" if "deepseek-v3" in argv else "0-1"
    dst_tp = argv[argv.index("--dst-tp") + 1]
    rc = main(["check", *argv, "--dst-ep", dst_tp, "--dst-expert-placement", placement,
               "--scaled", "--layers", layers, "--synchronizer", "corrected"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"ep{dst_tp}" in out.splitlines()[0] and ": OK (" in out.splitlines()[0]


def test_check_cli_real_sizes(capsys):
    """`check` at real sizes: Qwen3-30B-A3B layers 0-1, trainer tp 2 ep 2 -> vLLM tp 4 ep 4
    (round_robin), and DeepSeek-V3 layer 3 (its first MoE layer), trainer tp 4 ep 8 -> vLLM
    tp 8 ep 8: exit 0."""
    qwen = ["check", "--preset", "qwen3-30b-a3b", "--src-tp", "2", "--src-ep", "2", "--dst-tp",
            "4", "--dst-ep", "4", "--dst-expert-placement", "round_robin", "--layers", "0-1",
            "--synchronizer", "corrected"]  # fmt: skip
    assert main(qwen) == 0, capsys.readouterr().out
    deepseek = ["check", "--preset", "deepseek-v3", "--src-tp", "4", "--src-ep", "8", "--dst-tp",
                "8", "--dst-ep", "8", "--layers", "3", "--synchronizer", "corrected"]  # fmt: skip
    assert main(deepseek) == 0, capsys.readouterr().out
