"""A decoded tensor read as a map of model-wide ids, and its wrong segments decided by the
checker's comparison (``compare.compare_maps``) of that map against the oracle's.

Hand-worked cases first: a parameter of base id 100 (its neighbour's ids start at 0), a
[2, 6] tensor cut into six 2-element segments whose expected starts are 0, 2, ..., 10.
Then planted bugs of several families: the map equals the element-by-element reading of
the segments, and the comparison's wrong segments are exactly those whose source or start
differs from what the oracle expects.
"""

from __future__ import annotations

import pytest
import torch

from syncviz.diagnose import diagnose
from syncviz.diagnose.core import (
    NOT_FOUND,
    NOT_FOUND_ID,
    REORDERED,
    STALE,
    ZEROS,
    Decoded,
    decoded_map,
    run_diagnosis,
    wrong_segments,
)
from syncviz.diagnose.fixtures import planted
from syncviz.provenance import RegionMap, ids_map
from syncviz.run.plan import id_bases
from syncviz.run.result import SyncResult
from syncviz.run.values import UNWRITTEN_ID

BASES = torch.tensor([0, 100])  # parameter 0's ids start at 0, parameter 1's at 100


def _decoded(source: list[int], start: list[int]) -> Decoded:
    """Parameter 1's [2, 6] tensor, segments of 2, decoded as ``source`` / ``start``."""
    dec = Decoded(1, 0, 0, (2, 6), 2, torch.tensor([0, 2, 4, 6, 8, 10]))
    dec.source, dec.start = torch.tensor(source), torch.tensor(start)
    return dec


def test_decoded_map_reads_every_kind_of_segment():
    """Own ids in and out of place, a neighbour's ids, zeros, not found and stale, by hand."""
    dec = _decoded([1, 1, 0, ZEROS, NOT_FOUND, STALE], [0, 6, 4, -1, -1, 8])
    got = decoded_map(dec, BASES)
    nf = NOT_FOUND_ID
    assert got.shape == (2, 6)
    assert got.materialize().tolist() == [
        [100.0, 101.0, 106.0, 107.0, 4.0, 5.0],
        [-1.0, -1.0, nf, nf, nf, nf],
    ]
    flat = decoded_map(dec, BASES, (6, 2))  # one segment a row
    assert flat.materialize().tolist() == got.materialize().reshape(6, 2).tolist()


def test_decoded_map_padding_reordered_and_never_judged():
    """Expected padding held as zeros reads -1, a reordered segment -4, a missing tensor -2."""
    dec = Decoded(0, 0, 0, (4,), 2, torch.tensor([0, -1]))
    dec.source, dec.start = torch.tensor([REORDERED, 0]), torch.tensor([-1, -1])
    assert decoded_map(dec, BASES).materialize().tolist() == [NOT_FOUND_ID] * 2 + [-1.0] * 2
    missing = Decoded(0, 0, 0, (4,), 2, torch.tensor([0, 2]), status="missing")
    assert decoded_map(missing, BASES).materialize().tolist() == [UNWRITTEN_ID] * 4


def test_wrong_segments_by_hand():
    """Own ids in place are right; out of place, a neighbour's same local ids, markers: wrong."""
    expected = RegionMap.affine((2, 6), 100, (6, 1))  # the oracle's map, model-wide
    dec = _decoded([1, 1, 0, ZEROS, NOT_FOUND, 1], [0, 6, 4, -1, -1, 10])
    assert wrong_segments(dec, expected, BASES).tolist() == [False, True, True, True, True, False]
    swapped = _decoded([1] * 6, [6, 8, 10, 0, 2, 4])  # the two rows exchanged
    assert wrong_segments(swapped, expected, BASES).tolist() == [True] * 6


def test_wrong_segments_padding_is_right_when_held_as_padding():
    """A tensor whose last segment is padding: zeros there are right, a stray id is wrong."""
    expected = RegionMap.cat([RegionMap.affine((4,), 100, (1,)), RegionMap.constant((2,), -1)], 0)
    dec = Decoded(1, 0, 0, (6,), 2, torch.tensor([0, 2, -1]))
    dec.source, dec.start = torch.tensor([1, 1, 1]), torch.tensor([0, 2, -1])
    assert wrong_segments(dec, expected, BASES).tolist() == [False, False, False]
    dec.start = torch.tensor([0, 2, 0])  # the padding holds the first ids again
    assert wrong_segments(dec, expected, BASES).tolist() == [False, False, True]


PLANTED = [
    ("llama-mcore", {"qkv": "shard0"}),
    ("llama-mcore", {"qkv": "swap_kv", "lm_head": "tp0"}),
    ("llama-mcore", {"gate_up": "swap_halves"}),
    ("qwen2", {"input_norm": "regroup_qkv", "lm_head": "missing"}),
    ("mixtral", {"experts_w13": "swap_experts", "router": "noise"}),
    ("qwen3", {"q_norm": "exchange", "down": "rows"}),
    ("gpt-oss", {"experts_w13": "rows", "qkv": "shard0"}),
    ("deepseek-v3", {"experts_w2": "shard0", "embed": "tp0"}),
]


@pytest.mark.parametrize(("family", "bugs"), PLANTED)
def test_planted_bugs_verdict_and_map(family, bugs):
    """Every wrong tensor: the comparison's wrong segments are those whose source or start is
    not the oracle's, and its map is the element-by-element reading of its segments."""
    ref, dump = planted(family, tp=2, bugs=bugs)
    diagnosis = run_diagnosis(ref, dump, 2)
    bases = id_bases(diagnosis.layout)
    firsts = torch.tensor([bases[p.key] for p in diagnosis.layout.params])
    judged = 0
    for per_rank in diagnosis.decoded:
        for dec in per_rank:
            if dec.status != "wrong":
                assert dec.wrong is None
                continue
            judged += 1
            assert dec.source is not None and dec.start is not None and dec.wrong is not None
            rule = (dec.source != dec.param) | (dec.start != dec.expected)
            assert torch.equal(dec.wrong, rule)
            assert bool(dec.wrong.any())
            ids = (firsts[dec.source.clamp(min=0)] + dec.start).double()[:, None]
            ids = ids + torch.arange(dec.length, dtype=torch.float64)
            ids[dec.source == ZEROS] = -1.0
            nowhere = (dec.source == NOT_FOUND) | (dec.source == REORDERED) | (dec.source <= STALE)
            ids[nowhere] = NOT_FOUND_ID
            ids[(dec.source >= 0) & (dec.start < 0)] = -1.0
            got = decoded_map(dec, firsts)
            assert torch.equal(got.materialize(), ids.view(dec.shape))
            assert got.regions == ids_map(ids.view(dec.shape)).regions  # the pictures' form
    assert judged


def test_report_declares_the_result_and_keeps_it_out_of_json():
    """diagnose's report holds the decoded SyncResult as a declared field, not in its JSON."""
    ref, dump = planted("qwen2", tp=2, bugs={"lm_head": "tp0"})
    report = diagnose(ref, dump, 2)
    assert isinstance(report.result, SyncResult)
    assert "result" not in report.as_dict()
    assert '"result"' not in report.to_json()
    lm_head = [report.result.local_ids(tp, "model.lm_head.weight") for tp in (0, 1)]
    assert torch.equal(lm_head[1], lm_head[0])  # tp 1 holds tp 0's rows
