"""Python's cycle collector paused around work that makes many short-lived objects.

Region maps and a traced run's records come by the hundred thousand and hold no cycles
worth collecting while they are made; every automatic collection in between walks every
object of the process. :func:`gc_paused` is the one way syncviz pauses the collector:
:func:`syncviz.provenance.regions.map_work` and the in-process sync use it.

>>> import gc
>>> with gc_paused():
...     gc.isenabled()
False
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused(collect_after: int | None = None) -> Iterator[None]:
    """The cycle collector paused inside, and as it was after; when it was on and more than
    ``collect_after`` objects were made meanwhile (gc's youngest count), one full
    collection follows (left to itself, the collector would scan them several times as
    they age through its generations).

    >>> was = gc.isenabled()
    >>> with gc_paused(collect_after=10):
    ...     made = [[] for _ in range(100)]
    >>> gc.isenabled() == was
    True
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
            if collect_after is not None and gc.get_count()[0] > collect_after:
                gc.collect()
