"""Pick a synchronizer by name: ``chatlearn`` (faithful), ``corrected``, or ``module:Class``.

>>> from syncviz import Parallel, preset
>>> factory = synchronizer_factory("chatlearn")
>>> type(factory(preset("qwen2-7b"), Parallel(tp=1), Parallel(tp=2))).__name__
'MegatronVllmQWen2Sync'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from syncviz.errors import SyncvizError
from syncviz.parallel import Parallel
from syncviz.spec import ModelSpec
from syncviz.sync.adapter import models_for
from syncviz.sync.base import BaseSync
from syncviz.sync.select import get_synchronizer

SyncFactory = Callable[[ModelSpec, Parallel, Parallel], BaseSync]
BUILTIN = ("chatlearn", "corrected")


def synchronizer_factory(choice: str | type[BaseSync]) -> SyncFactory:
    """A function building the chosen synchronizer for (spec, src, dst).

    ``choice`` is ``"chatlearn"`` (the faithful port, chosen by architecture as the
    original does), ``"corrected"``, a ``BaseSync`` subclass, or ``"module:Class"``.
    """
    if isinstance(choice, type):
        cls = choice
        return lambda spec, src, dst: cls(*models_for(spec, src, dst))
    if choice == "chatlearn":
        return lambda spec, src, dst: get_synchronizer(*models_for(spec, src, dst))
    if choice == "corrected":
        from syncviz.sync.corrected import corrected_synchronizer

        return corrected_synchronizer
    if ":" in choice:
        return synchronizer_factory(_import_class(choice))
    raise SyncvizError(
        f"unknown synchronizer {choice!r}",
        fix="use 'chatlearn', 'corrected' or 'package.module:ClassName'",
    )


def _import_class(path: str) -> type[BaseSync]:
    module_name, _, class_name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SyncvizError(
            f"cannot import module {module_name!r} for synchronizer {path!r} ({exc})",
            fix="check the module is importable (on PYTHONPATH) and spelled right",
        ) from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseSync)):
        raise SyncvizError(
            f"{path!r} is not a BaseSync subclass",
            fix=f"name a class defined in {module_name} that subclasses syncviz.sync.BaseSync",
        )
    return cls
