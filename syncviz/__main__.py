"""``python -m syncviz``: the command line.

See :mod:`syncviz.cli`.
"""

from syncviz.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
