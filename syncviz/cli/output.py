r"""What the command line writes: text made safe for a terminal, and output files.

Every line of text a command prints goes through :func:`say` (one line) or
:func:`report_text` (a check or diagnose report): a name read from a file (a
tensor name, a config's ``_name_or_path``) can hold a newline, a carriage return
or an escape sequence, and is shown escaped (``\n``, ``\x1b``), so it can neither
forge a line of the report nor drive the terminal.

>>> terminal_safe("qkv\n<model>: OK\x1b[2J")
'qkv\\n<model>: OK\\x1b[2J'

Output files: :func:`checked_output` refuses a bad ``-o`` path before the sync runs
(wrong suffix, a folder, a missing or unwritable folder); :func:`atomic_output`
hands out a temporary file beside the target and renames it into place only when
the writer finished, so an error, Ctrl-C or SIGTERM never leaves a partial file.

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
import dataclasses
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO, TypeVar

from syncviz.errors import SyncvizError
from syncviz.files import read_only, replacing

T = TypeVar("T")

# C0 and C1 controls (newline, CR, ESC, DEL, CSI ...), the Unicode line and paragraph
# separators, and the bidirectional overrides that make text read other than it is.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_safe(text: str) -> str:
    r"""``text`` with every control character shown escaped, on one line.

    >>> terminal_safe("tp1\rOK\u202e"), terminal_safe("plain names stay as they are")
    ('tp1\\rOK\\u202e', 'plain names stay as they are')
    """
    return _UNSAFE.sub(_escape, text)


def say(text: object = "", file: TextIO | None = None) -> None:
    r"""Print one line, made safe for a terminal (:func:`terminal_safe`).

    >>> say("model.layers.0.\x1b[2Jweight")
    model.layers.0.\x1b[2Jweight
    """
    print(terminal_safe(str(text)), file=sys.stdout if file is None else file)


def report_text(report: Any, **options: Any) -> str:
    """``report.text(**options)`` with every string the report holds made safe first, so
    its lines are the report's own and nothing inside them starts another."""
    return _made_safe(report).text(**options)


def _made_safe(value: T) -> T:
    """A copy of ``value`` (dataclasses, lists, tuples, dicts) with every string escaped."""
    if isinstance(value, str):
        return terminal_safe(value)  # type: ignore[return-value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {
            f.name: _made_safe(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init
        }
        return dataclasses.replace(value, **changes)  # type: ignore[type-var]
    if isinstance(value, list):
        return [_made_safe(v) for v in value]  # type: ignore[return-value]
    if isinstance(value, tuple):
        return tuple(_made_safe(v) for v in value)  # type: ignore[return-value]
    if isinstance(value, dict):
        return {_made_safe(k): _made_safe(v) for k, v in value.items()}  # type: ignore[return-value]
    return value


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
    if read_only(target):  # replacing it would drop rights its owner set on purpose
        raise SyncvizError(
            f"--output {shown} is read-only (permission denied)",
            fix="choose another path, or make the file writable first (chmod u+w)",
        )
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
