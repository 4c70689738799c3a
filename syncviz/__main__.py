"""``python -m syncviz``: the command line.

See :mod:`syncviz.cli`. The signal handlers are installed before any command
(and torch with it) is loaded, so Ctrl-C or SIGTERM while starting up exits
130 / 143 with one line, like at any later moment. Python puts the current
directory first on ``sys.path`` for ``-m``; it is taken off again, so that
``python -m syncviz`` and the ``syncviz`` script import the same modules: the
current directory is searched only for a ``--synchronizer module:Class``, as
documented (see :func:`syncviz.cli.args.synchronizer_choice`).

Once the command returned (and cleaned up after itself), the process ends without
the interpreter's teardown: a final garbage collection over everything a run
loaded can take seconds, and a rank thread stuck in user code must not hold the
exit up.
"""

import contextlib
import os
import sys

from syncviz.cli.interrupts import exit_code, handle_signals


def _run() -> int:
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]
    with handle_signals():
        try:
            from syncviz.cli import main
        except KeyboardInterrupt as stop:
            print("syncviz: interrupted while starting", file=sys.stderr)
            return exit_code(stop)
        return main()


def _exit(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit(_run())
