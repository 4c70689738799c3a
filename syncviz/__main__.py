"""``python -m syncviz``: the command line.

See :mod:`syncviz.cli`. The signal handlers are installed before any command
(and torch with it) is loaded, so Ctrl-C or SIGTERM while starting up exits
130 / 143 with one line, like at any later moment. Python puts the current
directory first on ``sys.path`` for ``-m``; it is taken off again, so that
``python -m syncviz`` and the ``syncviz`` script import the same modules: the
current directory is searched only for a ``--synchronizer module:Class``, as
documented (see :func:`syncviz.cli.args.synchronizer_choice`).

:func:`syncviz.cli.main` ends the process itself, as it does under the
``syncviz`` script (see :mod:`syncviz.cli.interrupts`).
"""

import os
import sys

from syncviz.cli.interrupts import handle_signals


def _run() -> None:
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]
    with handle_signals(owns_process=True):  # a signal while importing: 130 / 143 at once
        from syncviz.cli import main

        main()


if __name__ == "__main__":
    _run()
