"""Segment look-up: fingerprints only propose, exact comparison decides."""

from __future__ import annotations

import pytest
import torch

from syncviz.diagnose.segments import SegmentIndex, compare, segment_length, segment_starts
from syncviz.oracle.slicing import cols_map, padded_rows_map


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_find_exact_in_every_dtype(dtype):
    """Rows are found at their start ids; a row present nowhere gives -1."""
    g = torch.randn(50, 8).to(dtype)
    index = SegmentIndex(g, 8)
    queries = torch.stack([g[3], g[49], torch.full((8,), 0.5, dtype=dtype)])
    assert index.find(queries).tolist() == [24, 392, -1]


def test_fingerprint_collisions_are_resolved_exactly():
    """Segments equal at every sampled element but differing elsewhere are told apart."""
    a = torch.randn(32).to(torch.bfloat16)
    b, c = a.clone(), a.clone()
    b[1] = b[1] + 1  # element 1 is not among the 16 sampled of 32
    c[3] = c[3] + 1  # nor is element 3
    g = torch.stack([a, b, torch.randn(32).to(torch.bfloat16)])
    found = SegmentIndex(g, 32).find(torch.stack([b, a, c]))
    assert found.tolist() == [32, 0, -1]


def test_compare_pads_and_columns():
    """Column blocks are compared segment by segment; padding must be zero."""
    g = torch.arange(24, dtype=torch.float32).view(6, 4)
    cols = cols_map((6, 4), 1, 2)
    assert segment_length(cols, (6, 4)) == 2
    assert segment_starts(cols, (6, 4), 2).tolist() == [2, 6, 10, 14, 18, 22]
    local = g[:, 2:].clone()
    local[4, 1] = -1.0
    assert compare(local, g, cols, 2).tolist() == [True, True, True, True, False, True]
    padded = padded_rows_map((6, 4), 8, 1, 2)  # rows 4-5 real, rows 6-7 padding
    rows = torch.cat([g[4:6], torch.zeros(2, 4)])
    assert compare(rows, g, padded, 4).tolist() == [True, True, True, True]
    rows[3, 0] = 1.0
    assert compare(rows, g, padded, 4).tolist() == [True, True, True, False]
