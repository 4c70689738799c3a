"""The ipywidgets front end (imported only on use, so ``import syncviz`` stays light).

>>> import sys
>>> import syncviz.widgets
>>> "ipywidgets" in sys.modules or "Explorer" in syncviz.widgets.__all__
True
"""

from __future__ import annotations

from typing import Any

__all__ = ["Explorer"]


def __getattr__(name: str) -> Any:
    if name == "Explorer":
        from syncviz.widgets.explorer import Explorer

        return Explorer
    raise AttributeError(f"module 'syncviz.widgets' has no attribute {name!r}")
