"""Diagrams: plain-data models, text rendering, and (lazily) matplotlib rendering.

>>> from syncviz import Parallel, preset
>>> from syncviz.diagram import transfer_diagram, transfer_text
>>> from syncviz.run.inprocess import run_sync
>>> result = run_sync(preset("llama3-8b").scaled(), Parallel(1), Parallel(2), layers=[0])
>>> transfer_text(transfer_diagram(result)).splitlines()[0]
'transfer llama3-8b (scaled): src tp1 -> dst tp2'
"""

from syncviz.diagram.experts import ExpertDiagram, expert_diagram, expert_text
from syncviz.diagram.model import (
    Edge,
    Exchange,
    LayoutDiagram,
    Panel,
    RankBox,
    Rect,
    Step,
    TransferDiagram,
    layout_diagram,
    transfer_diagram,
)
from syncviz.diagram.text import layout_text, transfer_text

__all__ = [
    "Edge",
    "Exchange",
    "ExpertDiagram",
    "LayoutDiagram",
    "Panel",
    "RankBox",
    "Rect",
    "Step",
    "TransferDiagram",
    "expert_diagram",
    "expert_text",
    "layout_diagram",
    "layout_text",
    "render",
    "transfer_diagram",
    "transfer_text",
]


def render(diagram, **kwargs):
    """Draw a diagram with matplotlib (imported only now); returns an ``mpl.Figure``."""
    from syncviz.diagram.mpl import render as _render

    return _render(diagram, **kwargs)
