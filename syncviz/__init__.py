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

__all__ = ["PRESETS", "ModelSpec", "Parallel", "SyncvizError", "diagnose", "preset", "record"]


def __getattr__(name: str):
    # Loaded on first use, so `import syncviz` stays light (no safetensors).
    # Both modules are callable: syncviz.diagnose(...) and syncviz.record(...).
    if name in ("diagnose", "record"):
        import importlib

        return importlib.import_module(f"syncviz.{name}")
    raise AttributeError(f"module 'syncviz' has no attribute {name!r}")


__version__ = "0.1.0"
