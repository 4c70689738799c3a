"""One drawn tensor of a diagram (:class:`Panel`): its raster, and for a vLLM rank what the
oracle expects. Below both the diagram model and the step frames, which each build panels.

>>> import dataclasses
>>> [f.name for f in dataclasses.fields(Panel)][:6]
['title', 'rank', 'side', 'shape', 'actual', 'expected']
"""

from __future__ import annotations

from dataclasses import dataclass, field

from syncviz.diagram.raster import Raster
from syncviz.findings import Region
from syncviz.provenance import RegionMap


@dataclass
class Panel:
    """One rank's tensor: its raster, and for vLLM ranks what the oracle expects.

    ``regions`` are the checker's wrong runs (rows, experts) of this tensor in
    words; ``shared`` names, per block label, the other vLLM ranks that hold
    the same (replicated) block.
    """

    title: str
    rank: int
    side: str  # src | dst | step
    shape: tuple[int, ...]
    actual: Raster
    expected: Raster | None = None
    regions: list[Region] = field(default_factory=list)
    shared: dict[str, list[int]] = field(default_factory=dict)
    # The tensor on the raster grid in local ids (None: a trainer panel, or a map too
    # fragmented): step frames ask it which cells hold a step's ids.
    grid: RegionMap | None = field(default=None, repr=False, compare=False)

    @property
    def wrong_cells(self) -> int:
        return int((self.actual.status != 0).sum())
