"""Ctrl-C and SIGTERM as exceptions, so every clean-up (Ray, temp files) runs before exit.

SIGTERM is turned into :class:`Terminated`, a ``KeyboardInterrupt``: code that
already cleans up after Ctrl-C does the same for it. The command line exits 130
after Ctrl-C and 143 after SIGTERM (128 + the signal number, as a shell reports a
process killed by it).

When the command line owns the process (the ``syncviz`` script, ``python -m
syncviz``), a signal raises only while a command runs (inside :func:`running`);
before it starts and once it returned, the signal ends the process at once with
its one line, and :func:`end_process` ends it without the interpreter's teardown.
That teardown is what aborted the console script: the rank threads of an
interrupted run are daemons still inside torch, and while the interpreter
finalizes, CPython 3.11 ends a daemon thread that asks for the GIL back with
``pthread_exit``, whose unwinding through torch's ``noexcept`` C++ frames calls
``std::terminate`` ("terminate called without an active exception", exit 134).
A signal that comes while a module is being imported raises once the import is
done (within :data:`IMPORT_GRACE_S`): raised inside torch's start-up it aborted the
process or was swallowed by it.

>>> import signal
>>> with handle_signals():
...     signal.getsignal(signal.SIGTERM) is _on_signal
True
>>> exit_code(Terminated()), exit_code(KeyboardInterrupt())
(143, 130)
"""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

PROG = "syncviz"


class Terminated(KeyboardInterrupt):
    """The process was asked to stop (SIGTERM)."""


# Set once SIGTERM arrived: libraries that turn a pending signal into a plain
# KeyboardInterrupt (Ray's blocking waits do) must not make it read as Ctrl-C.
_terminated = threading.Event()


class _State:
    owns_process = False  # the command line owns the process: outside a command, exit at once
    running = 0  # depth of running() blocks: a signal raises inside them
    said = False  # the one "interrupted" line was printed
    pending: int | None = None  # a signal raised as an exception that has not reached main yet
    forced = False  # an import outlasted IMPORT_GRACE_S: raise in it after all


# How long a signal waits for the import it came in to finish (a module that loops at
# import time must not make Ctrl-C wait forever).
IMPORT_GRACE_S = 5.0


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if signum == signal.SIGTERM:
        _terminated.set()
    if _State.owns_process and not _State.running:
        _exit_now(128 + signum)
    _State.pending = signum
    if _importing(frame) and not _State.forced:
        # An exception raised inside an import can land in C code that does not expect
        # it: torch's start-up aborts (SIGABRT) or swallows it. Raise once it is done.
        _redeliver_after_import(signum)
        return
    _State.forced = False
    if signum == signal.SIGTERM:
        raise Terminated()
    raise KeyboardInterrupt()


def _importing(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _redeliver_after_import(signum: int) -> None:
    def wait() -> None:
        main = threading.main_thread().ident
        end = time.monotonic() + IMPORT_GRACE_S
        while time.monotonic() < end:
            frame = sys._current_frames().get(main or 0)
            if frame is None or not _importing(frame):
                break
            time.sleep(0.02)
        else:
            _State.forced = True
        if _State.pending == signum:  # not raised by a checkpoint meanwhile
            _thread.interrupt_main(signum)

    threading.Thread(target=wait, name="syncviz-signal", daemon=True).start()


def checkpoint() -> None:
    """Raise a signal that is still pending: one that came during an import (raised
    here rather than by the watcher thread, if this comes first), or one whose
    exception was swallowed on its way out.

    Some C code catches whatever an import raises and goes on: torch's start-up
    imports numpy and, when that fails (also by a KeyboardInterrupt raised in it),
    clears the error and carries on without numpy. Called after the heavy imports of
    a command and when a command returns, this stops it as the signal asked.

    >>> checkpoint()  # nothing pending: nothing happens
    """
    signum, _State.pending = _State.pending, None
    if signum == signal.SIGTERM:
        raise Terminated()
    if signum is not None:
        raise KeyboardInterrupt()


def _exit_now(code: int) -> None:
    """End the process now with ``code``, its one line said (a signal outside a command)."""
    if not _State.said:
        _State.said = True
        with contextlib.suppress(OSError):
            os.write(2, f"{PROG}: {stop_word(code)}\n".encode())
    _flush_and_exit(code)


def _flush_and_exit(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        # A closed pipe, or a flush the signal interrupted (a reentrant call): nothing
        # more can be said.
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def interrupted_code() -> int | None:
    """130 / 143 when a signal's exception was raised but never arrived (swallowed, or
    turned into another error on its way out: that error is the signal's doing), else None.
    """
    signum, _State.pending = _State.pending, None
    return None if signum is None else 128 + signum


def stop_word(code: int) -> str:
    """``terminated`` for 143 (SIGTERM), else ``interrupted``.

    >>> stop_word(143), stop_word(130)
    ('terminated', 'interrupted')
    """
    return "terminated" if code == 128 + signal.SIGTERM else "interrupted"


def say_stopped(code: int) -> None:
    """Print the one line for an interrupted command (once per process)."""
    _State.pending = None  # the signal's exception arrived
    if not _State.said:
        _State.said = True
        print(f"{PROG}: {stop_word(code)}", file=sys.stderr)


@contextmanager
def handle_signals(*, owns_process: bool = False) -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` and SIGINT KeyboardInterrupt.

    With ``owns_process`` they raise only inside :func:`running`; elsewhere in the
    block they end the process at once (exit 130 / 143, one line).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _terminated.clear()
    outer = _State.owns_process
    _State.owns_process, _State.said, _State.pending = owns_process, False, None
    previous = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, _on_signal),
        signal.SIGINT: signal.signal(signal.SIGINT, _on_signal),
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _State.owns_process = outer


@contextmanager
def running() -> Iterator[None]:
    """The block of a command: signals raise in it, so its clean-up runs."""
    _State.running += 1
    try:
        yield
        checkpoint()  # the command went on although a signal came: it stops here
    finally:
        _State.running -= 1


def end_process(code: int) -> None:
    """Flush stdout and stderr and end the process with ``code``, skipping the interpreter's
    teardown (see the module's words): called once the command has cleaned up after itself.
    """
    _State.running = 0  # a signal from here on exits at once, with the code it means
    _State.owns_process = True
    _flush_and_exit(code)


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """130 for Ctrl-C, 143 for SIGTERM (also when a library re-raised it as Ctrl-C)."""
    terminated = isinstance(interrupt, Terminated) or _terminated.is_set()
    return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
