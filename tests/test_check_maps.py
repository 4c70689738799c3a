"""Map-against-map comparison counts exactly what comparing the elements counts."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from syncviz.check import compare_maps
from syncviz.provenance import RegionMap, SymbolicTensor, row_major
from syncviz.run.values import UNWRITTEN_ID
from tests.test_provenance import _UNARY


def by_elements(actual: RegionMap, expected: RegionMap) -> tuple[int, int, list[tuple[int, int]]]:
    """(unwritten, wrong, wrong row runs) counted on the materialized ids."""
    got, want = actual.materialize(), expected.materialize()
    unwritten = got == UNWRITTEN_ID
    wrong = (got != want) & ~unwritten
    rows = wrong.reshape(wrong.shape[0], -1).any(dim=1) if wrong.dim() else wrong.reshape(1)
    runs: list[tuple[int, int]] = []
    for i in torch.nonzero(rows).flatten().tolist():
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return int(unwritten.sum()), int(wrong.sum()), runs


def assert_exact(actual: RegionMap, expected: RegionMap) -> None:
    diff = compare_maps(actual, expected)
    assert (diff.unwritten, diff.wrong, diff.wrong_rows) == by_elements(actual, expected)


def test_column_split_bug_counts_exact_elements():
    """o_proj split along rows instead of columns (blocks differ along dim 1): exact count."""
    trainer = RegionMap.affine((64, 4), 0, (8, 1))  # columns 0-3 of a [64, 8] weight
    got = trainer.slice(0, 0, 32).reshape((64, 2))  # rows 0-31 seen as the [64, 2] needed
    want = RegionMap.affine((64, 2), 0, (8, 1))  # columns 0-1, all rows
    assert type(got).__name__ == "ReshapedMap"
    diff = compare_maps(got, want)
    assert diff.wrong == 126 and diff.wrong_rows == [(1, 64)]  # row 0 holds ids 0, 1: right
    assert_exact(got, want)


def test_columns_swapped_count_exact_elements():
    """Two column blocks swapped: every element wrong, counted along dim 1."""
    want = RegionMap.affine((3, 6), 0, (6, 1))
    got = RegionMap.cat([want.slice(1, 3, 6), want.slice(1, 0, 3)], 1)
    assert_exact(got, want)
    assert compare_maps(got, want).wrong == 18


def test_transposed_copy_agrees_on_the_diagonal():
    """A square block copied transposed: only its diagonal is right."""
    want = RegionMap.affine((5, 5), 0, (5, 1))
    got = want.permute((1, 0))
    assert compare_maps(got, want).wrong == 20
    assert_exact(got, want)


def _chain(shape, steps):
    sym = SymbolicTensor.from_map(RegionMap.affine(shape, 100, row_major(shape)))
    for which, d in steps:
        _, ok, op = _UNARY[which]
        if ok(sym) and sym.numel() <= 2000:
            sym = op(sym, d)
    return sym.region_map()


steps = st.lists(st.tuples(st.integers(0, len(_UNARY) - 1), st.integers(0, 9)), max_size=8)


@settings(max_examples=300, deadline=None)
@given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    got_steps=steps,
    view=st.sampled_from(["same", "flat", "rows2", "cols2"]),
    offset=st.integers(-3, 3),
)
def test_random_maps_compare_as_their_elements(shape, got_steps, view, offset):
    """Random op chains against the row-major ids of their shape, seen in several shapes:
    unwritten, wrong and wrong rows are the element counts, whatever the dims differ."""
    got = _chain(tuple(shape), got_steps)
    if not got.numel:
        return
    n = got.numel
    target = {
        "same": got.shape,
        "flat": (n,),
        "rows2": (2, n // 2) if n % 2 == 0 else got.shape,
        "cols2": (n // 2, 2) if n % 2 == 0 else got.shape,
    }[view]
    got = got.reshape(target)
    want = RegionMap.affine(target, 100 + offset, row_major(target))
    assert_exact(got, want)
    assert_exact(want, got)


@pytest.mark.parametrize("rows", [(0, 64), (1, 63), (3, 4), (5, 40)])
def test_row_runs_of_a_lazy_view_compare_exactly(rows):
    """Runs of rows cut from a lazy view (as the checker cuts them) still compare exactly."""
    got = RegionMap.affine((64, 4), 0, (8, 1)).slice(0, 0, 32).reshape((64, 2))
    a, b = rows
    part = got.take(0, a, 1, b - a)
    want = RegionMap.affine((64, 2), 0, (8, 1)).take(0, a, 1, b - a)
    assert_exact(part, want)


@settings(max_examples=150, deadline=None)
@given(
    rows=st.integers(8, 48),
    cols=st.sampled_from([4, 6, 8, 12]),
    split=st.sampled_from([1, 2, 3]),
    offset=st.integers(-2, 2),
)
def test_lazy_views_compare_as_their_elements(rows, cols, split, offset):
    """Half the columns of a weight seen in a narrower row width (lazy views, as a
    row-for-column split bug makes them) against several expected layouts: exact counts."""
    width = cols // 2
    if width % split:
        return
    block = RegionMap.affine((rows, width), 7, (cols, 1))  # columns 0.. of a [rows, cols]
    shape = (rows * split, width // split)
    got = block.reshape(shape)
    for strides in (row_major(shape), (cols, 1), (width, 1)):
        want = RegionMap.affine(shape, 7 + offset, strides)
        assert_exact(got, want)
        assert_exact(got.take(0, 1, 1, shape[0] - 1), want.take(0, 1, 1, shape[0] - 1))
