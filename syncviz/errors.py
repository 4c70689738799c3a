"""The one error class of syncviz, and its variant for a run that itself failed.

``SyncvizError`` is bad input (the command line exits 2); ``RunFailed`` is the same
error for a run that could not finish (a rank died or stalled, the synchronizer
could not be loaded: exit 3).

>>> from syncviz.errors import SyncvizError
>>> err = SyncvizError("dst tp (3) must divide heads (32)", fix="use 1, 2, 4, 8, 16 or 32")
>>> str(err.with_context(param="qkv", rank=2))
'dst tp (3) must divide heads (32): use 1, 2, 4, 8, 16 or 32 [param=qkv, rank=2]'
"""

from __future__ import annotations

from typing import Any


class SyncvizError(ValueError):
    """Bad input or an impossible layout, told in one line: what, why, and the fix.

    Subclasses ``ValueError`` so callers that already catch bad-value errors keep
    working. Context (parameter, rank, sizes) is added where the user called in,
    with :meth:`with_context`, never deep inside the core.
    """

    exit_code = 2  # what the command line exits with

    def __init__(self, message: str, *, fix: str | None = None, **context: Any) -> None:
        self.message = message
        self.fix = fix
        self.context: dict[str, Any] = dict(context)
        super().__init__(self._render())

    def _render(self) -> str:
        text = self.message
        if self.fix:
            text += f": {self.fix}"
        if self.context:
            text += " [" + ", ".join(f"{k}={v}" for k, v in self.context.items()) + "]"
        return text

    def with_context(self, **context: Any) -> SyncvizError:
        """Return the same error with more context; keys already present win."""
        merged = {**context, **self.context}
        return type(self)(self.message, fix=self.fix, **merged)


class RunFailed(SyncvizError):
    """The run itself failed: a rank died or stalled, or the synchronizer could not load.

    >>> RunFailed("rank 3 stopped answering", fix="raise --timeout").exit_code
    3
    """

    exit_code = 3


def shown(value: object) -> str:
    """``repr`` cut to a readable length for a one-line message.

    >>> shown("x" * 100)[-5:], len(shown("x" * 100)), shown(3)
    ('xx...', 60, '3')
    """
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
