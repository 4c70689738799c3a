"""Destination expert parallel: whole experts per rank, linear and round-robin placement."""

from __future__ import annotations

import pytest
import torch

from syncviz.check import check
from syncviz.cli import main
from syncviz.errors import SyncvizError
from syncviz.oracle import model_layout
from syncviz.oracle.dest import experts_of_rank
from syncviz.parallel import Parallel, validate
from syncviz.run.inprocess import run_sync
from syncviz.spec import ModelSpec
from syncviz.sync.corrected import CorrectedMegatronVllmMCoreSync

L0 = "model.model.layers.0."


def moe(experts: int, ffn: int = 8) -> ModelSpec:
    """A small Qwen3-MoE: 4 heads of 4 (2 K/V heads), hidden 16, ``experts`` experts of ``ffn``."""
    return ModelSpec(
        "moe", "qwen3-moe", 1, 16, 4, 2, 8, 64, head_dim=4, num_experts=experts,
        moe_ffn_hidden_size=ffn,
    )  # fmt: skip


def held_experts(layout, key: str, rank: int) -> list[int]:
    """The global expert of each local expert a rank holds, read from its ids."""
    param = layout.param(key)
    ids = param.dst[rank].index.ids()
    per_expert = param.global_shape[1] * param.global_shape[2]
    firsts = ids.reshape(ids.shape[0], -1)
    for local in range(ids.shape[0]):  # each local expert is one whole global expert
        row = firsts[local]
        assert torch.equal(row, torch.arange(per_expert) + int(row[0]))
    return [int(i) // per_expert for i in firsts[:, 0]]


def test_linear_six_experts_on_four_ranks():
    """E=6, ep=4, linear: ranks hold 2, 2, 1, 1 experts: [0,1], [2,3], [4], [5], whole."""
    assert [experts_of_rank(6, 4, r) for r in range(4)] == [[0, 1], [2, 3], [4], [5]]
    layout = model_layout(moe(6), Parallel(tp=1), Parallel(tp=4, ep=4), layers=[0])
    for kind in ("w13", "w2"):
        held = [held_experts(layout, L0 + f"mlp.experts.{kind}_weight", r) for r in range(4)]
        assert held == [[0, 1], [2, 3], [4], [5]]
    w13 = layout.param(L0 + "mlp.experts.w13_weight")
    assert [t.shape for t in w13.dst] == [(2, 16, 16), (2, 16, 16), (1, 16, 16), (1, 16, 16)]
    w2 = layout.param(L0 + "mlp.experts.w2_weight")
    assert [t.shape for t in w2.dst] == [(2, 16, 8), (2, 16, 8), (1, 16, 8), (1, 16, 8)]


def test_round_robin_six_experts_on_four_ranks():
    """E=6, ep=4, round_robin: rank r holds r, r+4: [0,4], [1,5], [2], [3]."""
    assert [experts_of_rank(6, 4, r, "round_robin") for r in range(4)] == [[0, 4], [1, 5], [2], [3]]
    dst = Parallel(tp=4, ep=4, expert_placement="round_robin")
    layout = model_layout(moe(6), Parallel(tp=1), dst, layers=[0])
    held = [held_experts(layout, L0 + "mlp.experts.w13_weight", r) for r in range(4)]
    assert held == [[0, 4], [1, 5], [2], [3]]


def test_dst_ep_leaves_the_rest_over_tp():
    """With dst ep, attention still splits over tp and the router stays whole on each rank."""
    layout = model_layout(moe(4), Parallel(tp=1), Parallel(tp=2, ep=2), layers=[0])
    assert [t.shape for t in layout.param(L0 + "self_attn.qkv_proj.weight").dst] == [(16, 16)] * 2
    assert [t.shape for t in layout.param(L0 + "mlp.gate.weight").dst] == [(4, 16)] * 2


def test_dst_ep_size_rules():
    """dst ep is 1 or dst tp, at most the experts, 1 on a dense model; an expert's FFN need not
    split over tp once experts are whole."""
    validate(moe(4, ffn=6), Parallel(tp=1), Parallel(tp=4, ep=4))  # 6 % 4 != 0, still valid
    with pytest.raises(SyncvizError, match=r"dst tp \(4\) must divide moe_ffn_hidden_size \(6\)"):
        validate(moe(4, ffn=6), Parallel(tp=1), Parallel(tp=4))
    with pytest.raises(SyncvizError, match=r"dst ep \(2\) must be 1 or dst tp \(4\)"):
        validate(moe(4), Parallel(tp=1), Parallel(tp=4, ep=2))
    with pytest.raises(SyncvizError, match=r"dst ep \(4\) must be at most num_experts \(2\)"):
        validate(moe(2), Parallel(tp=1), Parallel(tp=4, ep=4))
    dense = ModelSpec("d", "qwen3", 1, 16, 4, 2, 8, 64, head_dim=4)
    with pytest.raises(SyncvizError, match=r"dst ep \(2\) must be 1 for a dense model"):
        validate(dense, Parallel(tp=1), Parallel(tp=2, ep=2))
    with pytest.raises(SyncvizError, match=r"expert_placement \('striped'\)"):
        Parallel(tp=2, ep=2, expert_placement="striped")


@pytest.mark.parametrize("placement", ["linear", "round_robin"])
@pytest.mark.parametrize("src_ep", [1, 2])
def test_corrected_sync_sends_whole_experts(placement, src_ep):
    """The corrected synchronizer fills every rank as the oracle says, for either placement."""
    dst = Parallel(tp=4, ep=4, expert_placement=placement)
    result = run_sync(moe(8), Parallel(tp=1, ep=src_ep), dst, synchronizer="corrected")
    report = check(result)
    assert report.ok, report.text()
    assert report.dst == "tp4 ep4" + (" round_robin" if placement == "round_robin" else "")


class LinearOnly(CorrectedMegatronVllmMCoreSync):
    """A planted bug: whole experts always placed linearly, whatever the engine asks."""

    def _dst_expert_order(self, experts):
        return list(range(experts))


def test_planted_misplacement_is_found():
    """Linear placement where round_robin is expected: the expert tensors are wrong, and the
    words say which expert a rank holds and which it should."""
    dst = Parallel(tp=4, ep=4, expert_placement="round_robin")
    report = check(run_sync(moe(8), Parallel(tp=1), dst, synchronizer=LinearOnly))
    assert not report.ok
    assert sorted(p.key for p in report.bad()) == [
        L0 + "mlp.experts.w13_weight",
        L0 + "mlp.experts.w2_weight",
    ]
    lines = [line.strip() for line in report.bad()[0].lines()]
    # rank 0 (world 1) holds experts [0, 1]; round robin gives it [0, 4].
    assert (
        "dst rank 1 (tp 0): holds experts 0, 1; the round_robin placement over dst ep 4 gives"
        " it experts 0, 4 (it holds the linear placement's)"
    ) in lines, lines
    assert "vLLM tp 0 (rank 1): holds experts 0, 1; the round_robin" in report.text()


def test_check_cli_with_dst_ep(capsys):
    """`check --dst-ep`: exit 0 with the corrected synchronizer (from trainer tp 1 or 2);
    sizes the rules refuse: 2."""
    base = ["check", "--preset", "qwen3-30b-a3b", "--scaled", "--layers", "0", "--dst-tp", "4"]
    assert main([*base, "--dst-ep", "4", "--dst-expert-placement", "round_robin",
                 "--synchronizer", "corrected"]) == 0  # fmt: skip
    assert "dst tp4 ep4 round_robin" in capsys.readouterr().out
    assert main([*base, "--src-tp", "2", "--dst-ep", "4", "--synchronizer", "corrected"]) == 0
    assert "src tp2 -> dst tp4 ep4, synchronizer corrected: OK" in capsys.readouterr().out
    assert main([*base, "--dst-ep", "3", "--synchronizer", "corrected"]) == 2
    assert "dst ep (3) must be 1 or dst tp (4)" in capsys.readouterr().err


def test_uneven_experts_layout_but_no_sync(capsys):
    """E=6 on ep=4: `layout` shows it; a sync refuses it, saying why (equal chunks)."""
    spec = moe(6)
    with pytest.raises(SyncvizError, match=r"ranks hold 2 or 1 experts.*equal chunks"):
        run_sync(spec, Parallel(tp=1), Parallel(tp=4, ep=4), synchronizer="corrected")
    base = ["layout", "--preset", "qwen3-30b-a3b", "--dst-tp", "4", "--dst-ep", "4"]
    assert main([*base, "--dst-expert-placement", "round_robin"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith("-> vLLM tp=4 pp=1 ep=4 (round_robin)")
    assert "expert 31 (rows 0-1535: expert 127)" in out


@pytest.fixture(scope="module")
def moe_checkpoint(tmp_path_factory):
    from syncviz.diagnose.fixtures import write_checkpoint

    folder = tmp_path_factory.mktemp("moe8")
    write_checkpoint(moe(8), folder)
    return folder


def test_diagnose_dump_under_dst_ep(moe_checkpoint, tmp_path):
    """A dump of 8 experts on ep 4 round_robin is OK judged as such; judged as linear, the
    experts of every rank but the experts it shares are wrong, and found where they are."""
    from syncviz.diagnose import diagnose
    from syncviz.diagnose.fixtures import write_dumps

    dump = tmp_path / "dump"
    write_dumps(moe(8), moe_checkpoint, dump, tp=4, ep=4, expert_placement="round_robin")
    right = diagnose(moe_checkpoint, dump, 4, dst_ep=4, expert_placement="round_robin")
    assert right.ok, right.text()
    assert "-> dst tp4 ep4 round_robin, synchronizer as dumped" in right.text()
    wrong = diagnose(moe_checkpoint, dump, 4, dst_ep=4)  # linear expected
    assert sorted(p.key for p in wrong.bad()) == [
        L0 + "mlp.experts.w13_weight",
        L0 + "mlp.experts.w2_weight",
    ]
    text = " ".join(wrong.bad()[0].lines())
    # tp 0 holds [0, 4] where linear wants [0, 1]: its local expert 1 holds expert 4.
    assert "tp 0" in text and "expert 4" in text, text
    argv = [
        "diagnose",
        "--reference",
        str(moe_checkpoint),
        "--dump",
        str(dump),
        "--dst-tp",
        "4",
        "--dst-ep",
        "4",
        "--dst-expert-placement",
        "round_robin",
        "--json",
    ]
    assert main(argv) == 0  # fmt: skip


def test_experts_view_under_dst_ep():
    """The experts view at E=8, ep=4 round_robin: each expert is ok on the one rank holding it
    (r holds r, r+4) and blank elsewhere, never "unwritten"; a misplacement shows as wrong."""
    from syncviz.diagram.experts import expert_diagram

    dst = Parallel(tp=4, ep=4, expert_placement="round_robin")
    key = L0 + "mlp.experts.w13_weight"
    d = expert_diagram(run_sync(moe(8), Parallel(tp=1), dst, synchronizer="corrected"), key)
    statuses = {}
    for row in d.rows:
        for e in range(row.first, row.last + 1):
            statuses[e] = [c.status for c in row.after]
    assert statuses == {e: ["ok" if r == e % 4 else "none" for r in range(4)] for e in range(8)}
    bad = expert_diagram(run_sync(moe(8), Parallel(tp=1), dst, synchronizer=LinearOnly), key)
    wrong = {(e, c.rank) for r in bad.rows for e in range(r.first, r.last + 1)
             for c in r.after if c.status == "wrong"}  # fmt: skip
    # linear puts expert 1 on tp 0 (world 1) where round robin wants expert 4: wrong there.
    assert (4, 1) in wrong and all(c != "unwritten" for r in bad.rows for c in
                                   [x.status for x in r.after])  # fmt: skip
