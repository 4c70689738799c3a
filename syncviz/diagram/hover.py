"""What one cell of a layout picture holds, should hold, and where it came from, in words.

The Explorer asks this when the pointer rests on a cell; the words come from
the diagram model, the oracle and the recorded steps, never from the widget.

>>> from syncviz import Parallel
>>> from syncviz.spec import ModelSpec
>>> from syncviz.run.inprocess import run_sync
>>> from syncviz.diagram.model import layout_diagram
>>> spec = ModelSpec("tiny", "llama-mcore", 1, 8, 4, 2, 8, 64, head_dim=2)
>>> result = run_sync(spec, Parallel(tp=1), Parallel(tp=2), layers=[0])
>>> d = layout_diagram(result, "model.model.layers.0.self_attn.qkv_proj.weight")
>>> for part in cell_words(result, d, "vLLM holds", 2, 0, 3).split("; "):
...     print(part.replace("the stage-2 send", "..."))
vLLM pp0 tp1 (rank 2) row 0 col 3 holds K head 0 row 0 col 3, expected Q head 2 row 0 col 3: WRONG
came from trainer pp0 tp0 (rank 0) row 4 col 3 via steps 1, 7, 10, 11, 12, 13, 15 and ...
"""

from __future__ import annotations

import torch

from syncviz.diagram.model import LayoutDiagram, Panel

SIDES = ("trainer", "vLLM holds", "vLLM expected")


def _panel(d: LayoutDiagram, side: str, rank: int) -> Panel:
    panels = d.src if side == "trainer" else d.dst
    return next(p for p in panels if p.rank == rank)


def _element(panel: Panel, i: int, j: int) -> tuple[int, int]:
    """The element (row, col of the drawn grid) a cell starts at."""
    r0, _, c0, _ = panel.actual.span(i, j)
    return r0, c0


def _at(ids: torch.Tensor, row: int, col: int) -> int:
    grid = ids.reshape(-1, ids.shape[-1]) if ids.dim() > 1 else ids.reshape(1, -1)
    return int(grid[row, col])


def _where_text(ids: torch.Tensor, row: int, col: int) -> str:
    """``row 4 col 3`` (``expert 2 row 1 col 3`` for stacked tensors, ``element 5`` for 1-D)."""
    if ids.dim() == 1:
        return f"element {col}"
    if ids.dim() == 3:
        return f"expert {row // ids.shape[1]} row {row % ids.shape[1]} col {col}"
    return f"row {row} col {col}"


def cell_words(result, d: LayoutDiagram, side: str, rank: int, i: int, j: int) -> str:
    """One line on cell (i, j) of the panel of world rank ``rank`` on ``side``."""
    panel = _panel(d, side, rank)
    row, col = _element(panel, i, j)
    key = d.key
    param = result.plan.layout.param(key)
    if side == "trainer":
        shard = next(s for s in param.src if _src_rank(result, s) == rank)
        held = _at(shard.index.ids(), row, col)
        where = _where_text(shard.index.ids(), row, col)
        return f"{panel.title} {where} holds {_decode(param, held)}"
    t = next(t for t in param.dst if _dst_rank(result, t) == rank)
    actual = result.local_ids(rank, key).to(torch.int64)
    got, want = _at(actual, row, col), _at(t.index.ids(), row, col)
    where = _where_text(actual, row, col)
    verdict = "right" if got == want else "WRONG"
    words = (
        f"{panel.title} {where} holds {_decode(param, got)}, expected {_decode(param, want)}:"
        f" {verdict}"
    )
    shown = got if side == "vLLM holds" else want
    origin = _origin(result, d, param, shown, rank)
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
        ids = shard.index.ids()
        hits = torch.nonzero(ids.reshape(-1, ids.shape[-1]) == element) if ids.dim() > 1 else None
        if ids.dim() == 1:
            flat = torch.nonzero(ids == element).flatten()
            hits = torch.stack([torch.zeros_like(flat), flat], dim=1) if flat.numel() else None
        if hits is None or not hits.numel():
            continue
        r, c = (int(x) for x in hits[0])
        src = _src_rank(result, shard)
        title = next((p.title for p in d.src if p.rank == src), f"trainer rank {src}")
        steps = [
            n
            for n, s in enumerate(d.steps, 1)
            if s.outputs is not None and any(bool((o == element).any()) for o in s.outputs)
        ]
        via = f" via steps {', '.join(map(str, steps))}" if steps else ""
        send = _send(result, rank)
        if send:
            via += (" and " if via else " via ") + send
        return f"came from {title} {_where_text(ids, r, c)}{via}"
    return ""


def _send(result, rank: int) -> str:
    plan = result.plan
    if any(b == rank for _, b in plan.stage1):
        return "the stage-1 broadcast" if plan.comm == "broadcast" else "the stage-1 send"
    if any(b == rank for _, b in plan.stage2):
        return "the stage-2 send"
    return ""
