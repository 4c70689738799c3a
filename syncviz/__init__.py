"""syncviz: see, check and explain how weights move from a Megatron trainer to vLLM ranks.

>>> import syncviz
>>> spec = syncviz.preset("llama3-8b")
>>> spec.num_query_groups
8

Importing this package loads torch only; matplotlib, ipywidgets and ray are
imported by the front ends that need them.
"""

import os as _os
import signal as _signal
import sys as _sys


def _stop_while_starting(signum: int, frame: object) -> None:
    word = b"interrupted" if signum == _signal.SIGINT else b"terminated"
    _os.write(2, b"syncviz: " + word + b"\n")
    _os._exit(128 + signum)


# The `syncviz` console script imports this package first: from here on, Ctrl-C or
# SIGTERM while it starts ends it with 130 / 143 and its one line, as at any later
# moment (syncviz.cli.main takes the signals over; see syncviz.cli.interrupts).
_script = getattr(_sys.modules.get("__main__"), "__file__", None) or ""
if _os.path.basename(_script) == "syncviz" and _sys.argv[:1] == [_script]:
    for _sig in (_signal.SIGINT, _signal.SIGTERM):
        _signal.signal(_sig, _stop_while_starting)

from syncviz.errors import SyncvizError  # noqa: E402
from syncviz.parallel import Parallel  # noqa: E402
from syncviz.presets import PRESETS, preset  # noqa: E402
from syncviz.spec import ModelSpec  # noqa: E402

__all__ = ["PRESETS", "ModelSpec", "Parallel", "SyncvizError", "diagnose", "preset", "record"]


def __getattr__(name: str):
    # Loaded on first use, so `import syncviz` stays light (no safetensors).
    # Both modules are callable: syncviz.diagnose(...) and syncviz.record(...).
    if name in ("diagnose", "record"):
        import importlib

        return importlib.import_module(f"syncviz.{name}")
    raise AttributeError(f"module 'syncviz' has no attribute {name!r}")


__version__ = "0.1.0"
