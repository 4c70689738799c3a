"""Symbolic provenance: tensors whose ids are compact maps, at any size.

Floor: beside the tracer (errors and torch only; no oracle, no synchronizer).

>>> import torch
>>> from syncviz.provenance import RegionMap, SymbolicTensor
>>> w = SymbolicTensor.from_map(RegionMap.affine((53248, 16384), 0, (16384, 1)))
>>> up, gate = w.chunk(2)
>>> len(torch.cat([gate, up]).region_map().regions)
2
"""

from syncviz.geometry import row_major
from syncviz.provenance.regions import MAX_REGIONS, Region, RegionMap, ids_map
from syncviz.provenance.tensor import (
    SMALL,
    UNWRITTEN,
    SymbolicTensor,
    as_symbolic,
    copy_whole,
    is_symbolic,
    map_of,
    symbolic_factories,
)

__all__ = [
    "MAX_REGIONS",
    "SMALL",
    "UNWRITTEN",
    "Region",
    "RegionMap",
    "SymbolicTensor",
    "as_symbolic",
    "copy_whole",
    "ids_map",
    "is_symbolic",
    "map_of",
    "row_major",
    "symbolic_factories",
]
