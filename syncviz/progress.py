"""A small progress bar on stderr for whole-model runs (no dependency).

>>> list(progress([1, 2, 3], "demo", enabled=False))
[1, 2, 3]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(
    items: Iterable[T], label: str, *, enabled: bool = True, width: int = 30
) -> Iterator[T]:
    """Yield ``items``, drawing ``label [#####.....] k/n`` on stderr at most 10 times a second.

    Drawn only when stderr is a terminal, so logs and pipes stay clean.
    """
    seq = list(items)
    if not enabled or not seq or not sys.stderr.isatty():
        yield from seq
        return
    total, last = len(seq), 0.0
    for done, item in enumerate(seq, 1):
        yield item
        now = time.monotonic()
        if now - last > 0.1 or done == total:
            last = now
            filled = width * done // total
            bar = "#" * filled + "." * (width - filled)
            sys.stderr.write(f"\r{label:>8} [{bar}] {done}/{total}")
            if done == total:
                sys.stderr.write("\n")
            sys.stderr.flush()
