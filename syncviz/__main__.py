"""``python -m syncviz``: the command line.

See :mod:`syncviz.cli`. The signal handlers are installed before the command line
(and torch with it) is imported, so Ctrl-C or SIGTERM while starting up exits
130 / 143 with one line, like at any later moment. Python puts the current
directory first on ``sys.path`` for ``-m``; it is taken off again, so that
``python -m syncviz`` and the ``syncviz`` script import the same modules (a
``--synchronizer`` module is found on PYTHONPATH, never in the current directory).
"""

import os
import sys

from syncviz.interrupts import exit_code, handle_signals


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


if __name__ == "__main__":
    raise SystemExit(_run())
