"""Files written whole or not at all: a temporary file beside the target, renamed onto it.

A reader (or a user's next command) never sees half a trace or half a PNG, and a
failed write leaves the previous file as it was. The file ends with the rights a
plain ``open(path, "w")`` gives it (0666 less the umask, 0644 usually), or those of
the file it replaces; a read-only target is refused (``PermissionError``), never
silently replaced.

>>> import pathlib, stat, tempfile
>>> target = pathlib.Path(tempfile.mkdtemp()) / "out.json"
>>> with replacing(target) as tmp:
...     _ = tmp.write_text("{}")
>>> target.read_text(), sorted(p.name for p in target.parent.iterdir())
('{}', ['out.json'])
>>> oct(stat.S_IMODE(target.stat().st_mode)) == oct(0o666 & ~umask())
True
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replacing(target: Path) -> Iterator[Path]:
    """A temporary path beside ``target`` (same suffix), renamed onto it when the block ends.

    On an exception the temporary file is removed and ``target`` is left untouched.
    A ``target`` that exists read-only raises ``PermissionError`` before anything is
    written.
    """
    mode = _mode_for(target)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=target.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, mode)  # mkstemp made it 0600
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def read_only(path: Path) -> bool:
    """Whether ``path`` exists and may not be written (by its rights, also for root).

    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "x"
    >>> _ = path.write_text("x"); read_only(path)
    False
    >>> path.chmod(0o444); read_only(path)
    True
    """
    try:
        info = os.stat(path)
    except OSError:
        return False
    # root may write anything: the rights still say the owner meant it to stay as it is
    return not stat.S_ISDIR(info.st_mode) and (
        not info.st_mode & 0o222 or not os.access(path, os.W_OK)
    )


def _mode_for(target: Path) -> int:
    """The rights the written file gets: the replaced file's, else 0666 less the umask."""
    if read_only(target):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(target))
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        return 0o666 & ~umask()


def umask() -> int:
    """The process's umask, read without changing it where Linux tells it (else set back)."""
    with (
        contextlib.suppress(OSError, ValueError),
        open("/proc/self/status", encoding="ascii", errors="replace") as fh,
    ):
        for line in fh:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
