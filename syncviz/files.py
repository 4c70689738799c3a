"""Files written whole or not at all: a temporary file beside the target, renamed onto it.

A reader (or a user's next command) never sees half a trace or half a PNG, and a
failed write leaves the previous file as it was.

>>> import pathlib, tempfile
>>> target = pathlib.Path(tempfile.mkdtemp()) / "out.json"
>>> with replacing(target) as tmp:
...     _ = tmp.write_text("{}")
>>> target.read_text(), sorted(p.name for p in target.parent.iterdir())
('{}', ['out.json'])
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replacing(target: Path) -> Iterator[Path]:
    """A temporary path beside ``target`` (same suffix), renamed onto it when the block ends.

    On an exception the temporary file is removed and ``target`` is left untouched.
    """
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=target.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
