"""What one cell of a layout picture holds, should hold, and where it came from, in words.

The Explorer asks this when the pointer rests on a cell; the words come from
the diagram model, the oracle and the recorded steps, never from the widget.

>>> from syncviz.run.inprocess import tiny_run
>>> from syncviz.diagram.model import layout_diagram
>>> result = tiny_run()
>>> d = layout_diagram(result, "model.model.layers.0.self_attn.qkv_proj.weight")
>>> for part in cell_words(result, d, "vLLM holds", 2, 0, 3).split("; "):
...     print(part.replace("the stage-2 send", "..."))
vLLM tp 1 (rank 2) row 0 col 3 holds K head 0 row 0 col 3, expected Q head 2 row 0 col 3: WRONG
came from trainer tp 0 (rank 0) row 4 col 3 via steps 1, 7, 10, 11, 12, 13, 15 and ...
"""

from __future__ import annotations

import math

from syncviz.diagram.model import LayoutDiagram, Panel, Replayed
from syncviz.diagram.raster import map_value
from syncviz.geometry import unravel
from syncviz.oracle.index import Box, map_pieces
from syncviz.provenance import RegionMap
from syncviz.run.values import FOREIGN_ID, UNWRITTEN_ID

SIDES = ("trainer", "vLLM holds", "vLLM expected")
UNWRITTEN = int(UNWRITTEN_ID)


def _panel(d: LayoutDiagram, side: str, rank: int) -> Panel:
    panels = d.src if side == "trainer" else d.dst
    return next(p for p in panels if p.rank == rank)


def _element(panel: Panel, i: int, j: int) -> tuple[int, int]:
    """The element (row, col of the drawn grid) a cell starts at."""
    r0, _, c0, _ = panel.actual.span(i, j)
    return r0, c0


def _where_text(shape: tuple[int, ...], row: int, col: int) -> str:
    """``row 4 col 3`` (``expert 2 row 1 col 3`` for stacked tensors, ``element 5`` for 1-D)."""
    if len(shape) == 1:
        return f"element {col}"
    if len(shape) == 3:
        return f"expert {row // shape[1]} row {row % shape[1]} col {col}"
    return f"row {row} col {col}"


def _held(result, param, rank: int, name: str, row: int, col: int) -> int:
    """The local id vLLM rank ``rank`` holds at grid element (row, col), read from its map
    (nothing materialized)."""
    raw = result.dst_tensors[rank][name]
    value = map_value(raw.region_map(), row, col)
    base, numel = result.plan.id_base[param.key], math.prod(param.global_shape)
    if value < 0:
        return value
    return value - base if base <= value < base + numel else int(FOREIGN_ID)


def cell_words(result, d: LayoutDiagram, side: str, rank: int, i: int, j: int) -> str:
    """One line on cell (i, j) of the panel of world rank ``rank`` on ``side``."""
    panel = _panel(d, side, rank)
    row, col = _element(panel, i, j)
    key = d.key
    param = result.plan.layout.param(key)
    if side == "trainer":
        shard = next(s for s in param.src if _src_rank(result, s) == rank)
        held = map_value(shard.index, row, col)
        where = _where_text(shard.index.shape, row, col)
        return f"{panel.title} {where} holds {_decode(param, held)}"
    t = next(t for t in param.dst if _dst_rank(result, t) == rank)
    got = _held(result, param, rank, t.name, row, col)
    want = map_value(t.index, row, col)
    where = _where_text(t.index.shape, row, col)
    if got == UNWRITTEN and want != UNWRITTEN:  # nothing came: no origin, no path to tell
        return f"{panel.title} {where}: never written (it should hold {_decode(param, want)})"
    verdict = "right" if got == want else "WRONG"
    words = (
        f"{panel.title} {where} holds {_decode(param, got)}, expected {_decode(param, want)}:"
        f" {verdict}"
    )
    holds = side == "vLLM holds"
    origin = _origin(result, d, param, got if holds else want, rank)
    if origin and not holds:  # the expected element's source, which may not be where it went
        origin = "should come from" + origin.removeprefix("came from")
    return f"{words}; {origin}" if origin else words


def _decode(param, element: int) -> str:
    return {-1: "padding", -2: "nothing (never written)", -3: "another parameter's data"}.get(
        element
    ) or param.decode(element)


def _src_rank(result, shard) -> int:
    from syncviz.diagram.ranks import src_world

    return src_world(result.plan, shard.pp, shard.tp, shard.ep)


def _dst_rank(result, t) -> int:
    from syncviz.diagram.ranks import dst_world

    return dst_world(result.plan, t.pp, t.tp)


def _origin(result, d: LayoutDiagram, param, element: int, rank: int) -> str:
    """``came from trainer ... row r col c via steps 3, 7 and the stage-1 broadcast``."""
    if element < 0:
        return ""
    for shard in param.src:
        found = locate(shard.index, param.global_shape, element)
        if found is None:
            continue
        r, c = found
        src = _src_rank(result, shard)
        title = next((p.title for p in d.src if p.rank == src), f"trainer rank {src}")
        recorded = _recorded(result, d)
        steps = [n for n, s in enumerate(recorded or (), 1) if s.holds(element)]
        via = f" via steps {', '.join(map(str, steps))}" if steps else ""
        send = _send(result, rank)
        if send:
            via += (" and " if via else " via ") + send
        if recorded is None:
            via += " (its steps are not replayed at this size)"
        return f"came from {title} {_where_text(shard.index.shape, r, c)}{via}"
    return ""


REPLAY_LIMIT = 1 << 22  # elements of a parameter up to which a hover replays its steps


def _recorded(result, d: LayoutDiagram):
    """The diagram's steps, or None for a big parameter whose steps are not replayed yet:
    replaying reads every element (a 70B QKV: about a minute and 4 GiB), too much for a
    pointer resting on a cell."""
    big = math.prod(d.global_shape) > REPLAY_LIMIT
    if isinstance(d.steps, Replayed) and not d.steps.done and big:
        return None
    return d.steps


def locate(index: RegionMap, global_shape: tuple[int, ...], element: int) -> tuple[int, int] | None:
    """Where (row, col of the drawn grid) a local tensor first holds global id ``element``,
    read from the oracle's pieces (nothing materialized); None when it does not hold it.

    >>> from syncviz.oracle.index import Pad, boxes_map
    >>> locate(boxes_map((4, 6), (3, 2), [Box((0, 2), (2, 4)), Pad(2)]), (4, 6), 9)
    (1, 1)
    """
    coords = unravel(element, global_shape, check=True)
    flat = 0
    for piece in map_pieces(index, global_shape) or ():
        if isinstance(piece, Box) and all(
            a <= x < b for a, b, x in zip(piece.start, piece.stop, coords, strict=True)
        ):
            inside = 0
            for dim in piece.dims:  # the box's own layout order, outermost first
                inside = (
                    inside * (piece.stop[dim] - piece.start[dim]) + coords[dim] - piece.start[dim]
                )
            shape = index.shape
            grid_cols = shape[-1] if len(shape) <= 3 else math.prod(shape[1:])
            return divmod(flat + inside, grid_cols)
        flat += piece.numel
    return None


def _send(result, rank: int) -> str:
    plan = result.plan
    if any(b == rank for _, b in plan.stage1):
        return "the stage-1 broadcast" if plan.comm == "broadcast" else "the stage-1 send"
    if any(b == rank for _, b in plan.stage2):
        return "the stage-2 send"
    return ""
