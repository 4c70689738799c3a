"""Safetensors files read without memory maps: tensor by tensor, through the header's offsets.

A file that another process rewrites while diagnose reads it must neither kill the
process (a memory-mapped page cut off by truncation raises SIGBUS) nor hand back a
mix of two files. So each tensor is copied out with ``os.pread`` into memory of
its own (memory stays at one tensor), and the file's identity (device, inode,
size, modification and change times) is compared with the one its header was read
under, before and after every read: a change is bad input naming the file.

>>> import pathlib, tempfile, torch
>>> from safetensors.torch import save_file
>>> path = pathlib.Path(tempfile.mkdtemp()) / "tp0.safetensors"
>>> save_file({"w": torch.arange(6.0).view(2, 3)}, str(path))
>>> f = TensorFile(path, "dump file", changed_fix="write dumps to a new folder")
>>> f.entries["w"].shape, f.read("w").tolist()
((2, 3), [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
>>> _ = path.write_bytes(path.read_bytes() + b" ")
>>> f.read("w")
Traceback (most recent call last):
...
syncviz.errors.SyncvizError: tp0.safetensors changed while it was read: write dumps to a new folder
"""

from __future__ import annotations

import ctypes
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import torch

from syncviz.errors import SyncvizError
from syncviz.trace.json_io import parse_json

FLOAT_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
}
"""The safetensors dtypes syncviz compares (exactly, in the dump's dtype)."""

MAX_HEADER_BYTES = 100_000_000  # the safetensors format's own bound on its JSON header
_NOT_SAFETENSORS = "is not a readable safetensors file"


@dataclass(frozen=True)
class Entry:
    """One tensor of a file: its dtype (safetensors' name), shape, and absolute byte range."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def _identity(info: os.stat_result) -> tuple[int, ...]:
    """What changes when a file is replaced, cut or rewritten (as far as stat can tell)."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _pread_into(fd: int, view: memoryview, offset: int) -> int:
    """Fill ``view`` from ``offset`` (short only at the end of the file); bytes read."""
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got == 0:
            break
        done += got
    return done


class TensorFile:
    """A safetensors file: its entries from the header, each tensor read on demand.

    ``what`` names the file in messages ("dump file", "checkpoint shard");
    ``changed_fix`` is the advice when it changes while it is read.
    """

    def __init__(self, path: Path, what: str, *, changed_fix: str, fix: str = "") -> None:
        self.path = path
        self.what = what
        self.changed_fix = changed_fix
        self.fix = fix or "write it with safetensors (save_file), whole"
        fd = self._open(fix="pass the folder that holds it")
        try:
            info = os.fstat(fd)
            self._identity = _identity(info)
            try:
                self.entries = self._header(fd, info.st_size)
            except SyncvizError:
                self._unchanged(fd)  # a header half written by another process: say so
                raise
            self._unchanged(fd)
        finally:
            os.close(fd)

    # --- messages -------------------------------------------------------------------

    def _shown(self) -> str:
        return f"{self.what} {str(self.path)!r}"

    def _broken(self, detail: str) -> SyncvizError:
        return SyncvizError(f"{self._shown()} {_NOT_SAFETENSORS} ({detail})", fix=self.fix)

    def _changed(self) -> SyncvizError:
        return SyncvizError(f"{self.path.name} changed while it was read", fix=self.changed_fix)

    # --- reading ----------------------------------------------------------------------

    def _open(self, fix: str | None = None) -> int:
        """A descriptor of the file; never blocks (a FIFO is refused, not waited on).

        A file gone after its header was read (``fix`` None) changed while it was read.
        """
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            if fix is None:
                raise self._changed() from None
            raise SyncvizError(f"{self._shown()} does not exist", fix=fix) from None
        except PermissionError:
            raise SyncvizError(
                f"{self._shown()} cannot be read (permission denied)",
                fix="make it readable (chmod a+r) or run as its owner",
            ) from None
        except OSError as err:
            raise SyncvizError(
                f"{self._shown()} cannot be read ({err.strerror or err})", fix=self.fix
            ) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise SyncvizError(
                f"{self._shown()} is not a regular file",
                fix="put the safetensors file itself there",
            )
        return fd

    def _unchanged(self, fd: int) -> None:
        try:
            now = _identity(os.fstat(fd))
            named = _identity(os.stat(self.path))
        except OSError:
            raise self._changed() from None
        if now != self._identity or named != self._identity:
            raise self._changed()

    def _fill(self, fd: int, view: memoryview, offset: int) -> None:
        try:
            got = _pread_into(fd, view, offset)
        except OSError as err:
            raise SyncvizError(
                f"{self._shown()} cannot be read ({err.strerror or err})", fix=self.fix
            ) from None
        if got != len(view):  # the header promised these bytes: the file was cut since
            raise self._changed()

    def _bytes(self, fd: int, size: int, offset: int) -> bytes:
        buf = bytearray(size)
        self._fill(fd, memoryview(buf), offset)
        return bytes(buf)

    def _tensor_bytes(self, fd: int, size: int, offset: int) -> torch.Tensor:
        """``size`` bytes from ``offset`` into fresh memory, not zeroed first (one pass)."""
        buf = torch.empty(size, dtype=torch.uint8)
        if size:
            self._fill(fd, memoryview((ctypes.c_char * size).from_address(buf.data_ptr())), offset)
        return buf

    def _header(self, fd: int, size: int) -> dict[str, Entry]:
        if size < 8:
            raise self._broken(f"{size} bytes, shorter than the 8-byte header length")
        length = int.from_bytes(self._bytes(fd, 8, 0), "little")
        if length > MAX_HEADER_BYTES:
            raise self._broken(f"its header length {length} is above {MAX_HEADER_BYTES}")
        if 8 + length > size:
            raise SyncvizError(
                f"{self._shown()} is shorter than its header says: the header ends at byte"
                f" {8 + length}, the file has {size}",
                fix="let the writer finish (or write the file again) before diagnose reads it",
            )
        raw = self._bytes(fd, length, 8)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise self._broken(f"its header is not UTF-8 at byte {err.start}") from None
        try:
            header = parse_json(text, "its header", fix=self.fix)
        except SyncvizError as err:
            raise self._broken(err.message) from None
        if not isinstance(header, dict):
            raise self._broken(f"its header is a JSON {type(header).__name__}, not an object")
        data_start, data_size = 8 + length, size - 8 - length
        entries = {}
        for name, value in header.items():
            if name == "__metadata__":
                continue
            entries[name] = self._entry(name, value, data_start, data_size)
        return entries

    def _entry(self, name: str, value: object, data_start: int, data_size: int) -> Entry:
        where = f"header entry {name!r}"
        if not isinstance(value, dict):
            raise self._broken(f"{where} is not an object")
        dtype, shape, offsets = value.get("dtype"), value.get("shape"), value.get("data_offsets")
        if not isinstance(dtype, str):
            raise self._broken(f"{where} has no dtype string")
        if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
            raise self._broken(f"{where} has a shape that is not a list of sizes")
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(type(n) is int for n in offsets)
            and 0 <= offsets[0] <= offsets[1]
        ):
            raise self._broken(f"{where} has data_offsets that are no byte range")
        begin, end = offsets
        if end > data_size:  # what a file still being written (or cut short) looks like
            raise SyncvizError(
                f"{self._shown()} is shorter than its header says: {name!r} ends at byte"
                f" {data_start + end}, the file has {data_start + data_size}",
                fix="let the writer finish (or write the file again) before diagnose reads it",
            )
        known = FLOAT_DTYPES.get(dtype)
        if known is not None:
            need = math.prod(shape) * torch.empty((), dtype=known).element_size()
            if need != end - begin:
                raise self._broken(
                    f"{where} holds {end - begin} bytes, its shape {shape} of {dtype} needs {need}"
                )
        return Entry(dtype, tuple(shape), data_start + begin, data_start + end)

    def dtype(self, name: str) -> torch.dtype:
        """The torch dtype of tensor ``name``; bad input unless syncviz compares it."""
        entry = self.entries[name]
        dtype = FLOAT_DTYPES.get(entry.dtype)
        if dtype is None:
            raise SyncvizError(
                f"{name!r} in {str(self.path)!r} has dtype {entry.dtype}, which syncviz cannot"
                " compare",
                fix=f"syncviz compares float64, float32, float16 and bfloat16 tensors; {self.fix}",
            )
        return dtype

    def read(self, name: str) -> torch.Tensor:
        """Tensor ``name``, copied out of the file; SyncvizError if the file changed."""
        entry, dtype = self.entries[name], self.dtype(name)
        fd = self._open()
        try:
            self._unchanged(fd)
            data = self._tensor_bytes(fd, entry.end - entry.begin, entry.begin)
            self._unchanged(fd)
        finally:
            os.close(fd)
        # safetensors stores little-endian; torch reads the machine's order (little on
        # every platform torch ships for).
        return data.view(dtype).view(entry.shape)
