"""Output files of the command line: checked before any work, written atomically.

:func:`checked_output` refuses a bad ``-o`` path before the sync runs (wrong
suffix, a folder, a missing or unwritable folder); :func:`atomic_output` hands
out a temporary file beside the target and renames it into place only when the
writer finished, so an error, Ctrl-C or SIGTERM never leaves a partial file.

>>> import pathlib, tempfile
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> target = checked_output(str(folder / "x.png"), (".png", ".svg"))
>>> with atomic_output(target) as tmp:
...     _ = tmp.write_bytes(b"png")
>>> sorted(p.name for p in folder.iterdir())
['x.png']
>>> checked_output(str(folder / "no" / "x.png"), (".png",))
Traceback (most recent call last):
...
syncviz.errors.SyncvizError: --output folder '...' does not exist: create it first ...
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from syncviz.errors import SyncvizError
from syncviz.files import replacing


def checked_output(path: str, suffixes: tuple[str, ...]) -> Path:
    """``path`` as a Path, once it is sure a file can be written there."""
    target = Path(path)
    shown = repr(path)
    if target.suffix.lower() not in suffixes:
        raise SyncvizError(
            f"--output {shown} must end in {' or '.join(suffixes)}",
            fix=f"name the file e.g. diagram{suffixes[0]}",
        )
    if target.is_dir():
        raise SyncvizError(f"--output {shown} is a folder", fix="give a file name inside it")
    parent = target.parent
    if not parent.exists():
        raise SyncvizError(
            f"--output folder {str(parent)!r} does not exist",
            fix="create it first (syncviz does not create folders)",
        )
    if not parent.is_dir():
        raise SyncvizError(
            f"--output {shown}: {str(parent)!r} is not a folder", fix="choose another path"
        )
    if target.exists() and not target.is_file():
        raise SyncvizError(f"--output {shown} is not a regular file", fix="choose another path")
    try:  # the real test: can a file be created there (read-only mount, /proc, rights)?
        fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{target.name}.", suffix=target.suffix)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise SyncvizError(
            f"--output {shown} cannot be written ({err.strerror or err})",
            fix="choose a folder you can write to",
        ) from None
    return target


@contextlib.contextmanager
def atomic_output(target: Path) -> Iterator[Path]:
    """A temporary path beside ``target`` (same suffix), renamed onto it on success."""
    try:
        with replacing(target) as tmp:
            yield tmp
    except OSError as err:
        raise SyncvizError(
            f"--output {str(target)!r} could not be written ({err.strerror or err})",
            fix="check the free space, the file size limit and the folder's rights",
        ) from None
