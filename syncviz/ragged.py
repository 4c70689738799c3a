"""Ragged expansions: many rows of different lengths, or many rectangles of cells, as flat
index tensors, so that per-row work is one tensor op however many rows there are.

>>> # rows 0-1 x columns 0-1, and row 1 x columns 2-3
>>> which, i, j = rect_cells(*torch.tensor([[0, 1], [2, 2], [0, 2], [2, 4]]))
>>> which.tolist(), i.tolist(), j.tolist()
([0, 0, 0, 0, 1, 1], [0, 0, 1, 1, 1, 1], [0, 1, 0, 1, 2, 3])
"""

from __future__ import annotations

import torch


def ragged(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For ``counts[i]`` items of each row ``i``: per item its row and its place in the row.

    >>> [x.tolist() for x in ragged(torch.tensor([2, 0, 3]))]
    [[0, 0, 2, 2, 2], [0, 1, 0, 1, 2]]
    """
    which = torch.repeat_interleave(torch.arange(len(counts)), counts)
    starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    return which, torch.arange(len(which)) - starts


def rect_cells(i0: torch.Tensor, i1: torch.Tensor, j0: torch.Tensor, j1: torch.Tensor):
    """Every cell of the rectangles rows ``i0..i1-1`` by columns ``j0..j1-1`` (an empty
    one has none): per cell its rectangle, row and column."""
    height, width = (i1 - i0).clamp(min=0), (j1 - j0).clamp(min=0)
    which, k = ragged(height * width)
    w = width[which]
    return which, i0[which] + k // w, j0[which] + k % w
