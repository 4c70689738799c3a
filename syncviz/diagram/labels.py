"""Which block labels a panel shows, and where: plain data, read by both renderers.

Labels sit on the axis that carries the blocks, one per run of cell lines
holding the same block, at the run's middle. They are placed first for a run
that starts a new family (the first K head after the Q heads), then for the
rest in order, and a label goes only where it is at least ``min_gap`` (one
line of text, in the renderer's units) from every label already placed, so
labels never overprint.

>>> from syncviz.run.inprocess import tiny_run
>>> from syncviz.diagram.raster import BlockTable, raster
>>> qkv = tiny_run().plan.layout.params[1]
>>> r = raster(qkv.src[0].index.ids(), BlockTable(qkv))
>>> [(x.text, x.at) for x in panel_labels(r, 0, lambda mid: mid, min_gap=3)]
[('Q0', 1.0), ('K0', 5.0), ('Q2', 9.0), ('K1', 13.0)]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

SPECIAL_LABELS = {-1: "pad", -2: "unwritten", -3: "other param"}
MIXED_LINE = -100
"""The block of a line of cells that read different blocks: never labelled."""


@dataclass(frozen=True)
class Label:
    """One shown label: ``mid`` the element position along the block axis (the run's
    middle), ``at`` that position in the renderer's units, ``text`` the words."""

    mid: float
    at: float
    text: str


def short_label(table, b: int) -> str | None:
    """A label short enough for the axis: ``Q4``, ``K0``, ``h5``, ``e12 up``, ``pad``.

    >>> from syncviz.run.inprocess import tiny_run
    >>> from syncviz.diagram.raster import BlockTable
    >>> table = BlockTable(tiny_run().plan.layout.params[2])
    >>> short_label(table, 3), short_label(table, -1)
    ('h3', 'pad')
    """
    if b < 0:
        return SPECIAL_LABELS.get(b)
    block = table.blocks[b]
    if block.family in ("q", "k", "v") and block.index is not None:
        text = f"{block.family.upper()}{block.index}"
        # MLA's heads have parts: "Q4 nope", "Q4 rope", "K4 k_nope" (a v part is just "V4").
        part = getattr(block, "part", None)  # tables of bare namespaces carry no parts
        return f"{text} {part}" if part and part != block.family else text
    if block.family == "o":
        return f"h{block.index}"
    if block.family == "expert":
        return f"e{block.index} {block.part}"
    return block.label


def block_runs(r, axis: int) -> list[tuple[int, int, int]]:
    """Runs of cell lines along ``axis`` holding one block: (start, stop, block), in elements;
    a line whose cells read different blocks, or are all mixed and not right, is
    ``MIXED_LINE``, which gets no label.

    >>> from syncviz.run.inprocess import tiny_run
    >>> from syncviz.diagram.raster import BlockTable, raster
    >>> o = tiny_run().plan.layout.params[2]
    >>> block_runs(raster(o.dst[1].index.ids(), BlockTable(o)), 1)
    [(0, 2, 2), (2, 4, 3)]
    """
    nr, nc = r.cells
    lines, mixed, wrong = (t if axis == 0 else t.T for t in (r.block, r.mixed, r.status != 0))
    # A line whose cells read different blocks (o_proj split by rows: every head down
    # each column) has no block a label could name; nor has one whose every cell is mixed
    # and not right (the same split drawn at real sizes, each cell many rows: its first
    # element's block is an accident of where the cell starts).
    one_block = (lines == lines[:, :1]).all(dim=1) & ~(mixed & wrong).all(dim=1)
    one_block = one_block.tolist()
    firsts = lines[:, 0].tolist()
    runs: list[list[int]] = []
    for i in range(nr if axis == 0 else nc):
        r0, r1, c0, c1 = r.span(i, 0) if axis == 0 else r.span(0, i)
        start, stop = (r0, r1) if axis == 0 else (c0, c1)
        b = firsts[i] if one_block[i] else MIXED_LINE
        if runs and runs[-1][2] == b:
            runs[-1][1] = stop
        else:
            runs.append([start, stop, b])
    return [(a, z, b) for a, z, b in runs]


def choose(
    runs: list[tuple[int, int, int]],
    table,
    place: Callable[[float], float],
    min_gap: float,
) -> list[Label]:
    """The labels of ``runs`` that fit, ``min_gap`` apart once placed by ``place``
    (element position -> renderer units), sorted by position.

    >>> from types import SimpleNamespace
    >>> t = SimpleNamespace(families=["q", "q", "k"], blocks=[
    ...     SimpleNamespace(family="q", index=0), SimpleNamespace(family="q", index=1),
    ...     SimpleNamespace(family="k", index=0)])
    >>> [x.text for x in choose([(0, 2, 0), (2, 4, 1), (4, 6, 2)], t, lambda m: m, 2.5)]
    ['Q0', 'K0']
    >>> [x.text for x in choose([(0, 2, 0), (2, 4, 1), (4, 6, 2)], t, lambda m: m, 2)]
    ['Q0', 'Q1', 'K0']
    """
    items = []
    for k, (start, stop, b) in enumerate(runs):
        text = short_label(table, b)
        if text is None:
            continue
        new_family = k == 0 or _family(table, runs[k - 1][2]) != _family(table, b)
        mid = (start + stop) / 2
        items.append((0 if new_family else 1, k, mid, place(mid), text))
    placed: list[Label] = []
    for _prio, _k, mid, at, text in sorted(items):
        if any(abs(at - q.at) < min_gap for q in placed):
            continue
        placed.append(Label(mid, at, text))
    return sorted(placed, key=lambda x: x.at)


def panel_labels(r, axis: int, place: Callable[[float], float], min_gap: float) -> list[Label]:
    """The labels a panel (raster ``r``, blocks along ``axis``) shows: see :func:`choose`."""
    return choose(block_runs(r, axis), r.table, place, min_gap)


def _family(table, b: int) -> str:
    return table.families[b] if b >= 0 else str(b)
