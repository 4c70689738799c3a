"""Ctrl-C and SIGTERM as exceptions, so every clean-up (Ray, temp files) runs before exit.

SIGTERM is turned into :class:`Terminated`, a ``KeyboardInterrupt``: code that
already cleans up after Ctrl-C does the same for it. The command line exits 130
after Ctrl-C and 143 after SIGTERM (128 + the signal number, as a shell reports a
process killed by it).

>>> import signal
>>> with handle_signals():
...     signal.getsignal(signal.SIGTERM) is _raise_terminated
True
>>> exit_code(Terminated()), exit_code(KeyboardInterrupt())
(143, 130)
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """The process was asked to stop (SIGTERM)."""


# Set once SIGTERM arrived: libraries that turn a pending signal into a plain
# KeyboardInterrupt (Ray's blocking waits do) must not make it read as Ctrl-C.
_terminated = threading.Event()


def _raise_terminated(signum: int, frame: object) -> None:
    _terminated.set()
    raise Terminated()


@contextmanager
def handle_signals() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` and SIGINT KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, _raise_terminated),
        signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
    }
    _terminated.clear()
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """130 for Ctrl-C, 143 for SIGTERM (also when a library re-raised it as Ctrl-C)."""
    terminated = isinstance(interrupt, Terminated) or _terminated.is_set()
    return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
