"""Pick a synchronizer by name: ``chatlearn`` (faithful), ``corrected``, or ``module:Class``.

>>> from syncviz import Parallel, preset
>>> factory = synchronizer_factory("chatlearn")
>>> type(factory(preset("qwen2-7b"), Parallel(tp=1), Parallel(tp=2))).__name__
'MegatronVllmQWen2Sync'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from syncviz.errors import RunFailed, SyncvizError
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
    """Import ``package.module:ClassName``; this runs the module's code, as any import does.

    A malformed path is bad input (SyncvizError); a module that cannot be found,
    fails while it is imported, or lacks the class is a run that could not load its
    synchronizer (RunFailed).

    >>> _import_class("..foo:X")
    Traceback (most recent call last):
    ...
    syncviz.errors.SyncvizError: synchronizer '..foo:X' must be 'package.module:ClassName' ...
    >>> _import_class("syncviz.spec:ModelSpec")
    Traceback (most recent call last):
    ...
    syncviz.errors.RunFailed: synchronizer 'syncviz.spec:ModelSpec' names a class that ...
    """
    module_name, _, class_name = path.partition(":")
    if not (_dotted(module_name) and _dotted(class_name)):
        raise SyncvizError(
            f"synchronizer {path!r} must be 'package.module:ClassName' (absolute, dotted names)",
            fix="e.g. --synchronizer mypkg.sync:MySync, with mypkg on PYTHONPATH",
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        where = "" if missing == module_name else f" (it imports {missing!r}, which is missing)"
        raise RunFailed(
            f"cannot import module {module_name!r} for synchronizer {path!r}{where}",
            fix="run from the module's folder or put that folder on PYTHONPATH",
        ) from None
    except SyntaxError as exc:
        raise RunFailed(
            f"synchronizer module {module_name!r} has a syntax error"
            f" ({exc.msg}, {exc.filename} line {exc.lineno})",
            fix="fix the module's syntax",
        ) from None
    except (Exception, SystemExit) as exc:  # the module's own code failed while importing
        raise RunFailed(
            f"synchronizer module {module_name!r} raised {type(exc).__name__} while being"
            f" imported: {' '.join(str(exc).split())[:200]}",
            fix="importing a module runs its code: fix the error at its top level",
        ) from None
    obj: object = module
    for part in class_name.split("."):
        if not hasattr(obj, part):
            defined = sorted(
                name
                for name, value in vars(module).items()
                if isinstance(value, type) and issubclass(value, BaseSync)
            )
            hint = f"; it defines {', '.join(defined)}" if defined else ""
            raise RunFailed(
                f"module {module_name!r} has no class {class_name!r} for synchronizer {path!r}",
                fix=f"name a BaseSync subclass defined in {module_name}{hint}",
            )
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, BaseSync)):
        what = (
            f"a class that is not a BaseSync subclass (bases: {obj.__mro__[1].__name__})"
            if isinstance(obj, type)
            else f"a {type(obj).__name__}, not a BaseSync subclass"
        )
        raise RunFailed(
            f"synchronizer {path!r} names {what}",
            fix="subclass syncviz.sync.BaseSync (or one of its Megatron->vLLM classes)",
        )
    return obj


def _dotted(name: str) -> bool:
    return bool(name) and all(part.isidentifier() for part in name.split("."))
