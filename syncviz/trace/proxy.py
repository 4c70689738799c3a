"""A stand-in for any object whose method calls the tracer should scope, unedited.

>>> import torch
>>> from syncviz.trace import Tracer
>>> class Halver:
...     factor = 2
...     def split(self, name, t):
...         return t.chunk(self.factor)
>>> tr = Tracer()
>>> proxy = tr.traced(Halver())
>>> isinstance(proxy, Halver), proxy.factor
(True, 2)
>>> parts = proxy.split("w", tr.track(torch.ones(4), "src"))
>>> tr.trace.params[0].call
'Halver.split'
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any


class TracedProxy:
    """Stands in for ``target``: each method call goes through ``call_in_scope(method,
    qualified name, method name, args, kwargs)``; attribute reads, writes and deletes
    reach ``target`` itself, and ``isinstance`` sees ``target``'s class.

    >>> calls = []
    >>> proxy = TracedProxy([3, 1], lambda fn, *rest: calls.append(rest[0]) or fn())
    >>> proxy.copy(), calls, isinstance(proxy, list)
    ([3, 1], ['list.copy'], True)
    """

    __slots__ = ("_syncviz_call", "_syncviz_target")

    def __init__(self, target: Any, call_in_scope: Callable[..., Any]) -> None:
        object.__setattr__(self, "_syncviz_target", target)
        object.__setattr__(self, "_syncviz_call", call_in_scope)

    def __getattr__(self, name: str) -> Any:
        target = object.__getattribute__(self, "_syncviz_target")
        value = getattr(target, name)
        if not inspect.isroutine(value):
            return value
        call_in_scope = object.__getattribute__(self, "_syncviz_call")
        qualified = f"{type(target).__name__}.{name}"

        @functools.wraps(value)
        def method(*args: Any, **kwargs: Any) -> Any:
            return call_in_scope(value, qualified, name, args, kwargs)

        return method

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(object.__getattribute__(self, "_syncviz_target"), name, value)

    def __delattr__(self, name: str) -> None:
        delattr(object.__getattribute__(self, "_syncviz_target"), name)

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        # isinstance(proxy, TheClass) holds, so code that checks types still accepts it.
        return type(object.__getattribute__(self, "_syncviz_target"))

    @property
    def __wrapped__(self) -> Any:
        """The object behind the proxy."""
        return object.__getattribute__(self, "_syncviz_target")

    def __repr__(self) -> str:
        return f"traced({object.__getattribute__(self, '_syncviz_target')!r})"
