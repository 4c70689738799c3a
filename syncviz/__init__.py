"""syncviz: see, check and explain how weights move from a Megatron trainer to vLLM ranks.

>>> import syncviz
>>> spec = syncviz.preset("llama3-8b")
>>> spec.num_query_groups
8

Importing this package loads torch only; matplotlib, ipywidgets and ray are
imported by the front ends that need them.
"""

from syncviz.errors import SyncvizError
from syncviz.parallel import Parallel
from syncviz.presets import PRESETS, preset
from syncviz.spec import ModelSpec

__all__ = ["PRESETS", "ModelSpec", "Parallel", "SyncvizError", "preset"]
__version__ = "0.1.0"
