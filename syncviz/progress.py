"""A small progress bar on stderr for whole-model runs (no dependency).

Two ways to feed it: :func:`progress` wraps an iterable; :class:`Ticker` is called
once per item from any thread (the in-process sync's ranks).

>>> list(progress([1, 2, 3], "demo", enabled=False))
[1, 2, 3]
>>> tick = Ticker(3, "sync", enabled=False)
>>> tick(); tick(); tick.done
2
"""

from __future__ import annotations

import sys
import threading
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
            _draw(label, done, total, width, f" {done}/{total}")
            if done == total:
                sys.stderr.write("\n")
            sys.stderr.flush()


def _draw(label: str, done: int, total: int, width: int, suffix: str) -> None:
    filled = width * min(done, total) // total
    bar = "#" * filled + "." * (width - filled)
    sys.stderr.write(f"\r{label:>8} [{bar}]{suffix}")


class Ticker:
    """A bar advanced by calls, from any thread; drawn at most 10 times a second, only
    on a terminal. Pickled (sent to another process) it is a silent no-op."""

    def __init__(self, total: int, label: str, *, enabled: bool = True, suffix: str = "") -> None:
        self.total, self.label, self.suffix = total, label, suffix
        self.enabled = enabled and total > 0 and sys.stderr.isatty()
        self.done = 0
        self.last = 0.0
        self.lock = threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            self.done += 1
            if not self.enabled:
                return
            now = time.monotonic()
            if now - self.last > 0.1:
                self.last = now
                _draw(self.label, self.done, self.total, 30, self.suffix)
                sys.stderr.flush()

    def close(self) -> None:
        """Draw the full bar and end its line."""
        if self.enabled:
            _draw(self.label, self.total, self.total, 30, self.suffix)
            sys.stderr.write("\n")
            sys.stderr.flush()

    def __getstate__(self) -> dict[str, object]:
        return {"total": 0, "label": self.label, "suffix": "", "enabled": False, "done": 0,
                "last": 0.0}  # fmt: skip

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self.lock = threading.Lock()
