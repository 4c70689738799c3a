"""The oracle: what every trainer rank holds and every vLLM rank must hold, from the spec alone.

Derived from the model spec and the layout rules (docs: LAYOUTS.md), never
from synchronizer code. Family differences are data (families.py).

>>> from syncviz import Parallel, preset
>>> from syncviz.oracle import model_layout
>>> layout = model_layout(preset("llama3-70b"), Parallel(tp=8), Parallel(tp=16))
>>> len(layout.params), layout.params[0].key
(483, 'model.model.embed_tokens.weight')
"""

from syncviz.oracle.blocks import (
    BLOCK_FAMILIES,
    KINDS,
    Block,
    block_numbers,
    blocks,
    decode,
    global_shape,
)
from syncviz.oracle.describe import describe, describe_index
from syncviz.oracle.families import FAMILY_CONVENTIONS, Conventions, conventions
from syncviz.oracle.index import Box, Pad, boxes_map, map_pieces, whole_map
from syncviz.oracle.layout import (
    DestTensor,
    ModelLayout,
    ParamLayout,
    SourceShard,
    layer_kinds,
    model_layout,
)
from syncviz.oracle.sizes import check_sizes

__all__ = [
    "BLOCK_FAMILIES",
    "FAMILY_CONVENTIONS",
    "KINDS",
    "Block",
    "Box",
    "Conventions",
    "DestTensor",
    "ModelLayout",
    "Pad",
    "ParamLayout",
    "SourceShard",
    "block_numbers",
    "blocks",
    "boxes_map",
    "check_sizes",
    "conventions",
    "decode",
    "describe",
    "describe_index",
    "global_shape",
    "layer_kinds",
    "map_pieces",
    "model_layout",
    "whole_map",
]
