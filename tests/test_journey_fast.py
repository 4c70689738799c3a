"""The journey's map questions asked all at once equal the element-wise answers: per row
whether a map holds an id of a block (``rows_meeting``), model-wide ids read back as a
parameter's local ids (``local_map``), whether two maps agree where either holds the block
(``maps_agree_on``), and which recorded ops carry a block (``block_journey``'s moves) on
small maps whose every element is read for the reference."""

from __future__ import annotations

import pytest
import torch

import syncviz.journey as journey
from syncviz import Parallel
from syncviz.idset import IdSet
from syncviz.journey import block_journey, local_map, maps_agree_on, param_steps, rows_meeting
from syncviz.oracle.index import Box
from syncviz.provenance import Region, RegionMap
from syncviz.run.inprocess import run_sync
from syncviz.run.values import FOREIGN_ID, PADDING_ID, UNWRITTEN_ID
from syncviz.spec import ModelSpec

SPEC = ModelSpec("tiny", "llama-mcore", 1, 8, 4, 2, 8, 64, head_dim=2)
IDS = RegionMap.affine((8, 6), 0, (6, 1))  # the ids of an [8, 6] parameter, row-major
WHOLE = Box((0, 0), (8, 6))


def _maps() -> dict[str, RegionMap]:
    """[6, 8]-ish maps of every kind of region: rows in order, shifted, transposed (columns
    step by 6 ids), reversed, a reshape of whole rows, constants and markers."""
    rows = IDS.slice(0, 2, 6)  # [4, 6]: rows 2-5
    pad = RegionMap.constant((1, 6), PADDING_ID)
    unwritten = RegionMap.constant((2, 6), UNWRITTEN_ID)
    return {
        "rows": rows,
        "with markers": RegionMap.cat([pad, rows, unwritten], 0),
        "transposed": IDS.permute((1, 0)),  # [6, 8]: no region runs along its rows
        "reversed rows": IDS.take(0, 7, -1, 8),
        "reversed columns": IDS.take(1, 5, -1, 6),
        "reshaped": IDS.reshape((12, 4)),  # rows of 4 cut across the parameter's rows of 6
        "a constant id": RegionMap.cat([RegionMap.constant((2, 6), 13), pad], 0),
        "columns swapped": RegionMap.cat([IDS.slice(1, 3, 6), IDS.slice(1, 0, 3)], 1),
    }


BOXES = [Box((0, 0), (8, 2)), Box((2, 1), (4, 5)), Box((5, 3), (6, 4)), Box((7, 0), (8, 6))]


def _rows_reference(m: RegionMap, box: Box) -> list[bool]:
    """Per row of the materialized map: does any element hold an id of the box."""
    ids = box.ids((8, 6))
    values = m.materialize().to(torch.int64)
    return torch.isin(values, ids).reshape(values.shape[0], -1).any(1).tolist()


@pytest.mark.parametrize("name", list(_maps()))
def test_rows_meeting_equals_rows_read_element_by_element(name):
    """Every map of every kind, every box: the rows holding an id of the box, asked all at
    once from the regions, equal those of the materialized ids."""
    m = _maps()[name]
    for box in BOXES:
        ids = IdSet.of_box(box.start, box.stop, (8, 6))
        assert rows_meeting(m, ids).tolist() == _rows_reference(m, box), (name, box)


def test_rows_meeting_past_its_line_budget_asks_as_cells(monkeypatch):
    """With room for two lines only, every map is asked cell by cell instead: the same rows."""
    monkeypatch.setattr(journey, "LINES_AT_ONCE", 2)
    for name, m in _maps().items():
        for box in BOXES:
            ids = IdSet.of_box(box.start, box.stop, (8, 6))
            assert rows_meeting(m, ids).tolist() == _rows_reference(m, box), (name, box)


def _local_reference(m: RegionMap, base: int, numel: int) -> torch.Tensor:
    """Model-wide ids read back element by element: markers kept, others' ids -3."""
    values = m.materialize()
    local = values - base
    out = torch.where((local >= 0) & (local < numel), local, torch.full_like(values, FOREIGN_ID))
    return torch.where(values < 0, values, out)


def test_local_map_equals_local_ids_read_element_by_element():
    """The parameter holds model-wide ids 100..147: maps wholly its own, with markers, wholly
    another's, and straddling its bounds (halved until each part is one or the other) read
    back as the materialized ids do."""
    base, numel = 100, 48
    cases = {
        "its own": RegionMap.affine((8, 6), base, (6, 1)),
        "its own, transposed": RegionMap.affine((6, 8), base, (1, 6)),
        "with markers": RegionMap.cat(
            [RegionMap.affine((2, 6), base + 6, (6, 1)), RegionMap.constant((1, 6), -2)], 0
        ),
        "another's": RegionMap.affine((2, 6), 500, (6, 1)),
        "straddling both ends": RegionMap.affine((3, 20), 90, (20, 1)),
        "reversed across the start": RegionMap.affine((4, 5), 110, (-5, 1)),
        "shifted reshape": RegionMap.affine((8, 6), base, (6, 1)).reshape((12, 4)),
    }
    for name, m in cases.items():
        got = local_map(m, base, numel).materialize()
        assert torch.equal(got, _local_reference(m, base, numel)), name


def test_local_map_of_a_map_wholly_its_own_is_the_map_shifted_and_merged():
    """Ranks holding alike maps at other ids (a reshape of 2-row pieces at ids 1000 and
    7000, as vLLM ranks of a row-parallel weight do) get exactly the regions of their
    own ids shifted by the base and merged, the second from the first one's merged form."""
    journey._local_forms.clear()
    for first in (1000, 7000):
        pieces = [Region((2 * i, 0), (2 * i + 2, 4), first + 40 * i, (4, 1)) for i in range(5)] + [
            Region((10, 0), (12, 4), first + 3, (4, 1))
        ]
        m = RegionMap((12, 4), pieces, merge=False)
        base = first - 10
        shifted = [Region(r.start, r.stop, r.offset - base, r.strides) for r in pieces]
        got = local_map(m, base, 10_000)
        assert sorted(got.regions) == sorted(RegionMap((12, 4), shifted).regions), first
    assert len(journey._local_forms) == 1  # one structure, merged once


def _agree_reference(got: RegionMap, want: RegionMap, box: Box, shape) -> bool:
    """Element by element: equal wherever either side holds an id of the box."""
    ids = box.ids(shape)
    a, b = got.materialize().to(torch.int64), want.materialize().to(torch.int64)
    touched = torch.isin(a, ids) | torch.isin(b, ids)
    return bool((a[touched] == b[touched]).all())


def test_maps_agree_on_equals_the_element_wise_comparison():
    """Every map against the ids in order, the ids reversed by rows and columns swapped
    (overlaps that agree on one line are read element by element, many at once), every
    box: the verdict is the element-wise one, and both verdicts occur."""
    maps = _maps()
    pairs = [(maps["rows"], IDS.slice(0, 2, 6)), (maps["rows"], IDS.slice(0, 0, 4))]
    for m in (IDS, maps["reversed rows"], maps["reversed columns"], maps["columns swapped"]):
        pairs += [(m, IDS), (IDS, m)]
    seen = set()
    for got, want in pairs:
        for box in [*BOXES, WHOLE]:
            verdict = maps_agree_on(got, want, box, (8, 6))
            assert verdict == _agree_reference(got, want, box, (8, 6)), (got, want, box)
            seen.add(verdict)
    assert seen == {True, False}


def test_maps_agree_on_reads_many_overlaps_a_batch_at_a_time(monkeypatch):
    """With room for one overlap per batch, each small overlap is read alone: the same
    verdicts as the element-wise comparison."""
    monkeypatch.setattr(journey, "READ_AT_ONCE", 1)
    reversed_rows = _maps()["reversed rows"]
    for box in [*BOXES, WHOLE]:
        want = _agree_reference(reversed_rows, IDS, box, (8, 6))
        assert maps_agree_on(reversed_rows, IDS, box, (8, 6)) == want, box


@pytest.fixture(scope="module")
def run():
    return run_sync(SPEC, Parallel(tp=1), Parallel(tp=2), layers=[0])


def _holds(outputs, ids: torch.Tensor) -> bool:
    """Whether any replayed result holds one of ``ids`` (local ids), element by element."""
    return any(bool(torch.isin(o.to(torch.int64), ids).any()) for o in outputs)


def test_journey_moves_are_the_steps_whose_results_hold_the_block(run):
    """Every block of every layer-0 parameter of the tiny GQA case 1 -> 2: the trainer ops
    a journey lists are the replayed steps on its trainer ranks whose results hold an id of
    a block of that label, each result read element by element."""
    carried = 0
    for param in run.plan.layout.params:
        steps = param_steps(run, param.key)
        for number, block in enumerate(param.blocks):
            same = [b.box.ids(param.global_shape) for b in param.blocks if b.label == block.label]
            ids = torch.cat(same)
            found = block_journey(run, param.key, number)
            want = [
                f"{s.phase}: {s.op.op}"
                for s in steps
                if s.rank in found.src_ranks and s.outputs is not None and _holds(s.outputs, ids)
            ]
            moved = [
                p.op
                for p in found.path
                if p.side == "op" and p.rank in found.src_ranks and "not replayed" not in p.op
            ]
            assert moved == want, (param.key, block.label)
            carried += len(moved)
    assert carried  # some ops carry blocks


def test_local_maps_kept_for_the_next_block_are_read_anew_when_a_tensor_changes():
    """Tiny 1 -> 2, corrected, symbolic: o_proj's head 0 arrives right, twice alike (the
    second journey reads the local maps kept from the first); once vLLM tp 0's tensor is
    replaced by tp 1's, the journey reads the new one and says wrong."""
    from syncviz.provenance import SymbolicTensor

    key = "model.model.layers.0.self_attn.o_proj.weight"
    result = run_sync(
        SPEC, Parallel(tp=1), Parallel(tp=2), layers=[0], synchronizer="corrected",
        provenance="symbolic",
    )  # fmt: skip
    first = block_journey(result, key, 0)
    assert first.ok and block_journey(result, key, 0).text() == first.text()
    plan, param = result.plan, result.plan.layout.param(key)
    other = param.dst[1].index.shifted(plan.id_base[key])
    world = plan.world_rank("dst", 0, 0)
    result.dst_tensors[world][result.name_on(param, world)] = SymbolicTensor.from_map(other)
    assert not block_journey(result, key, 0).ok


def test_journey_and_replay_run_as_map_work(monkeypatch):
    """A journey and a replay run with the cycle collector paused and one torch thread
    (their 10^5 short-lived regions set off no collector runs), both restored after; a
    collector paused before stays paused."""
    import gc

    result = run_sync(SPEC, Parallel(tp=1), Parallel(tp=2), layers=[0])
    key = "model.model.layers.0.self_attn.o_proj.weight"
    seen = []
    inner = journey.where_in_map

    def watched(*args, **kwargs):
        seen.append((gc.isenabled(), torch.get_num_threads()))
        return inner(*args, **kwargs)

    monkeypatch.setattr(journey, "where_in_map", watched)  # read inside the journey
    threads = torch.get_num_threads()
    assert gc.isenabled()
    block_journey(result, key, 0)
    assert seen and set(seen) == {(False, 1)}
    assert gc.isenabled() and torch.get_num_threads() == threads
    gc.disable()
    try:
        param_steps(result, key)
        assert not gc.isenabled()
    finally:
        gc.enable()
