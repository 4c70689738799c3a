"""Diagrams: plain-data models, text rendering, and (lazily) matplotlib rendering.

>>> from syncviz.diagram import layout_diagram, transfer_diagram, layout_text, transfer_text
>>> callable(layout_diagram) and callable(transfer_text)
True
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
