"""The expert view, read from maps: known words of wrong cells, no slot read element by element
where its pieces are wholly right or wrong, real sizes."""

from __future__ import annotations

import pytest

from syncviz import Parallel, preset
from syncviz.diagram import experts
from syncviz.diagram.experts import expert_diagram, expert_text
from syncviz.run.inprocess import run_sync

SIZES = [
    (Parallel(tp=2, ep=2), Parallel(tp=4)),
    (Parallel(tp=2), Parallel(tp=4)),
    (Parallel(tp=1, ep=2), Parallel(tp=2)),
]


def _texts(name, src, dst, synchronizer, comm, kind="experts_"):
    spec = preset(name).scaled(src, dst)
    result = run_sync(spec, src, dst, synchronizer=synchronizer, layers=[0],
                      expert_comm=comm, trace=False)  # fmt: skip
    keys = [p.key for p in result.plan.layout if p.kind.startswith(kind)]
    return result, [expert_text(expert_diagram(result, k)) for k in keys]


def test_wrong_cells_are_covered():
    """Wrong cells are worded with what they hold: chatlearn's alltoall exchange on
    qwen2-57b-a14b tp2 ep2 -> tp4 puts other experts' rows in place."""
    _, texts = _texts("qwen2-57b-a14b", *SIZES[0], "chatlearn", "alltoall")
    assert "wrong: holds expert 0 up rows 0-3 (from trainer rank 0)" in texts[0]


def _refuse(*args):
    raise AssertionError("a slot was read element by element")


@pytest.mark.parametrize("synchronizer", ["chatlearn", "corrected"])
def test_whole_pieces_read_from_maps(synchronizer, monkeypatch):
    """Slots whose pieces are wholly right or wholly wrong (here chatlearn's alltoall w13,
    which holds other experts' rows, and corrected's, all right) are worded from maps alone,
    no slot read element by element."""
    case = ("qwen2-57b-a14b", *SIZES[0], synchronizer, "alltoall")
    monkeypatch.setattr(experts, "_materialized_cell", _refuse)
    _, got = _texts(*case, kind="experts_w13")
    assert len(got) == 1
    assert ("wrong: holds expert" in got[0]) == (synchronizer == "chatlearn")


def test_real_size_corrected_all_ok(monkeypatch):
    """qwen2-57b-a14b at real sizes, tp2 ep2 -> tp4 layer 0, corrected: every vLLM cell of
    w13 and w2 is ok, each rank holding its quarter of the 2560 FFN rows (w13) or columns
    (w2) of all 64 experts, each trainer rank holds 16 experts whole; no slot is read
    element by element."""
    monkeypatch.setattr(experts, "_materialized_cell", _refuse)
    src, dst = Parallel(tp=2, ep=2), Parallel(tp=4)
    result = run_sync(preset("qwen2-57b-a14b"), src, dst, synchronizer="corrected",
                      layers=[0], provenance="symbolic", trace=False)  # fmt: skip
    w13, w2 = (p.key for p in result.plan.layout if p.kind.startswith("experts_"))
    for key, words in (
        (w13, [f"gate rows {a}-{a + 639}, up rows {a}-{a + 639}" for a in range(0, 2560, 640)]),
        (w2, [f"cols {a}-{a + 639}" for a in range(0, 2560, 640)]),
    ):
        d = expert_diagram(result, key)
        assert [r.label for r in d.rows] == [
            f"experts {k}-{k + 15} (16, all ok)" for k in range(0, 64, 16)
        ]
        assert all([c.key for c in r.after] == [("ok", w) for w in words] for r in d.rows)
        assert [[c.text for c in r.before] for r in d.rows] == [
            ["whole" if j == k else "" for j in range(4)] for k in range(4)
        ]
