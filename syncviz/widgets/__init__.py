"""The ipywidgets front end (imported only on use, so ``import syncviz`` stays light).

>>> import subprocess, sys
>>> code = "import sys, syncviz.widgets; print('ipywidgets' in sys.modules)"
>>> subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip()
'False'
>>> import syncviz.widgets
>>> syncviz.widgets.Explorer.__name__
'Explorer'
"""

from __future__ import annotations

from typing import Any

__all__ = ["Explorer"]


def __getattr__(name: str) -> Any:
    if name == "Explorer":
        from syncviz.widgets.explorer import Explorer

        return Explorer
    raise AttributeError(f"module 'syncviz.widgets' has no attribute {name!r}")
