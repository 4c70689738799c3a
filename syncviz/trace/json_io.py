"""SyncTrace <-> JSON, with a strict reader: only JSON is parsed and every field is checked.

A bad file raises SyncvizError naming the field path (``params[0].ops[2].inputs[0].shape``).
Parsing is bounded (:func:`parse_json`): a document nested deeper than ``MAX_DEPTH``
levels, an integer longer than ``MAX_INT_DIGITS`` digits, a trace file larger than
``MAX_TRACE_BYTES`` or a folder of them larger than ``MAX_TRACE_FOLDER_BYTES`` in all
(:func:`check_folder_size`) is refused before it is parsed, so no input reaches Python's
recursion limit or fills the memory. Every failure, the file's own included (missing,
a folder, not UTF-8), is a SyncvizError.

>>> from syncviz.trace.model import SyncTrace
>>> text = trace_to_json(SyncTrace(metadata={"b": 1, "a": [2, 3]}))
>>> trace_fields(text)["metadata"]
{'a': [2, 3], 'b': 1}
>>> import json
>>> data = json.loads(trace_to_json(SyncTrace()))
>>> data["warnings"] = [3]
>>> trace_fields(json.dumps(data))
Traceback (most recent call last):
...
syncviz.errors.SyncvizError: trace field warnings[0] must be a string, got 3: ...
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import asdict
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from syncviz.errors import SyncvizError
from syncviz.trace.records import (
    SCHEMA_NAME,
    SCHEMA_VERSION,
    CollectiveRecord,
    JSONValue,
    OpRecord,
    ParamTrace,
    SourceRecord,
    TensorRef,
)

if TYPE_CHECKING:
    from syncviz.trace.model import SyncTrace

T = TypeVar("T")

MAX_DEPTH = 64  # nesting levels of lists and objects in any document syncviz reads
MAX_INT_DIGITS = 30  # no size or id in a trace or config needs more
MAX_TRACE_BYTES = 256 << 20  # a whole-model trace is a few MiB; parsing costs ~5x its size
MAX_TRACE_FOLDER_BYTES = 512 << 20  # every trace of one run together (a folder of rank files)
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}

_FIX = f"the file is not a valid {SCHEMA_NAME} version {SCHEMA_VERSION} document; re-record it"


def trace_to_json(trace: SyncTrace) -> str:
    """Serialise ``trace``: keys sorted, one value per line, so two runs diff cleanly.

    >>> from syncviz.trace.model import SyncTrace
    >>> trace_to_json(SyncTrace()).splitlines()[:4]
    ['{', ' "collectives": [],', ' "metadata": {},', ' "params": [],']
    """
    data: dict[str, Any] = {"schema": SCHEMA_NAME, "version": SCHEMA_VERSION, **asdict(trace)}
    # Validate before writing, so a bad metadata value is named here rather than
    # surfacing later as an unreadable file.
    _read_trace(data)
    return json.dumps(data, sort_keys=True, indent=1, allow_nan=False)


def trace_fields(text: str) -> dict[str, Any]:
    """Parse ``text`` (JSON only) into the fields of a SyncTrace, validating every field.

    >>> trace_fields("[]")
    Traceback (most recent call last):
    ...
    syncviz.errors.SyncvizError: trace field <document> must be an object, got []: ...
    """
    if not isinstance(text, str):
        raise SyncvizError(
            f"trace field <document> must be JSON text, got a {type(text).__name__}",
            fix=_FIX,
            field="<document>",
        )
    return _read_trace(parse_json(text, "trace field <document>", fix=_FIX))


def read_trace_fields(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The fields of the SyncTrace in a file written by ``SyncTrace.save``; every failure is
    a SyncvizError.

    >>> read_trace_fields("/no/such/trace.json")
    Traceback (most recent call last):
    ...
    syncviz.errors.SyncvizError: trace file '/no/such/trace.json' does not exist: ...
    """
    text = read_text_file(path, "trace file", MAX_TRACE_BYTES, fix="pass a trace saved by syncviz")
    return trace_fields(text)


def check_folder_size(files: list[Path], folder: str | os.PathLike[str]) -> None:
    """Refuse trace files that hold more than ``MAX_TRACE_FOLDER_BYTES`` together.

    >>> import pathlib, tempfile
    >>> big = pathlib.Path(tempfile.mkdtemp()) / "rank0.json"
    >>> with open(big, "wb") as fh:
    ...     _ = fh.truncate(MAX_TRACE_FOLDER_BYTES + 1)  # sparse: no disk spent
    >>> check_folder_size([big], big.parent)
    Traceback (most recent call last):
    ...
    syncviz.errors.SyncvizError: trace folder '...' holds 512 MiB of traces in 1 file(s), ...
    """
    total = 0
    for path in files:
        try:
            total += os.stat(path).st_size
        except OSError:
            continue  # named when the file itself is read
    if total > MAX_TRACE_FOLDER_BYTES:
        raise SyncvizError(
            f"trace folder {str(folder)!r} holds {total / 2**20:.0f} MiB of traces in"
            f" {len(files)} file(s), more than the {MAX_TRACE_FOLDER_BYTES >> 20} MiB syncviz"
            " reads in all",
            fix="pass a folder with the traces of one run only",
        )


def read_text_file(path: str | os.PathLike[str], what: str, max_bytes: int, *, fix: str) -> str:
    """The UTF-8 text of a regular file of at most ``max_bytes``, or a SyncvizError.

    >>> read_text_file("/", "config file", 10, fix="pass a file")
    Traceback (most recent call last):
    ...
    syncviz.errors.SyncvizError: config file '/' is a directory, not a file: pass a file
    """
    shown = repr(str(path))
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise SyncvizError(f"{what} {shown} does not exist", fix=fix) from None
    except (OSError, ValueError) as err:
        raise SyncvizError(f"{what} {shown} cannot be read ({_reason(err)})", fix=fix) from None
    if Path(path).is_dir():
        raise SyncvizError(f"{what} {shown} is a directory, not a file", fix=fix)
    if not Path(path).is_file():  # a FIFO or device would block or never end
        raise SyncvizError(f"{what} {shown} is not a regular file", fix=fix)
    if info.st_size > max_bytes:
        raise SyncvizError(
            f"{what} {shown} is {info.st_size / 2**20:.0f} MiB, more than the"
            f" {max_bytes / 2**20:.0f} MiB syncviz reads",
            fix=f"check it is the right file; {what}s this large are not supported",
        )
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as err:
        raise SyncvizError(f"{what} {shown} cannot be read ({_reason(err)})", fix=fix) from None
    if len(data) > max_bytes:  # it grew since the stat
        raise SyncvizError(f"{what} {shown} is larger than {max_bytes} bytes", fix=fix)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SyncvizError(
            f"{what} {shown} is not UTF-8 text (byte {err.start} is {data[err.start]:#04x})",
            fix=f"{fix}; syncviz reads JSON text only, never pickles or binary files",
        ) from None


def parse_json(text: str, what: str, *, fix: str) -> Any:
    """``json.loads`` with bounded depth and integer length; errors name ``what``.

    The depth is measured first, without recursion, so a hostile document never
    reaches the parser's recursion limit.

    >>> parse_json('{"a": [1, 2]}', "config", fix="-")
    {'a': [1, 2]}
    >>> parse_json("[" * 100 + "]" * 100, "config", fix="flatten it")
    Traceback (most recent call last):
    ...
    syncviz.errors.SyncvizError: config is nested 100 levels deep, more than 64: flatten it
    """
    depth = json_depth(text)
    if depth > MAX_DEPTH:
        raise SyncvizError(f"{what} is nested {depth} levels deep, more than {MAX_DEPTH}", fix=fix)
    try:
        return json.loads(text, parse_int=_bounded_int)
    except _LongInteger as err:
        raise SyncvizError(
            f"{what} holds an integer of {err.args[0]} digits, more than {MAX_INT_DIGITS}",
            fix=fix,
        ) from None
    except json.JSONDecodeError as err:
        raise SyncvizError(
            f"{what} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})",
            fix=fix,
        ) from None
    except (ValueError, RecursionError) as err:  # anything else json refuses
        raise SyncvizError(f"{what} is not valid JSON ({_reason(err)})", fix=fix) from None


def json_object(data: Any, what: str, *, fix: str) -> dict[str, Any]:
    """``data`` (parsed JSON) when it is an object; else an error naming ``what`` and what
    it holds instead.

    >>> json_object({"a": 1}, "config", fix="-")
    {'a': 1}
    >>> json_object([1], "c.json", fix="write one object")
    Traceback (most recent call last):
    ...
    syncviz.errors.SyncvizError: c.json holds a JSON list, not an object: write one object
    """
    if not isinstance(data, dict):
        raise SyncvizError(f"{what} holds a JSON {type(data).__name__}, not an object", fix=fix)
    return data


def json_depth(text: str) -> int:
    """Deepest nesting of ``[`` and ``{`` in JSON ``text`` (strings ignored), iteratively.

    >>> json_depth('{"a": [[1], "]]]"]}')
    3
    """
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets), initial=0))


class _LongInteger(Exception):
    pass


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise _LongInteger(len(digits.lstrip("-")))
    return int(digits)


def _reason(err: BaseException) -> str:
    return getattr(err, "strerror", None) or str(err) or type(err).__name__


# --- strict readers: each takes the value and its field path -------------------------


def _bad(path: str, rule: str, value: Any) -> SyncvizError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return SyncvizError(f"trace field {path} must be {rule}, got {shown}", fix=_FIX, field=path)


def _non_negative(value: Any, path: str) -> int:
    # bool is an int subclass in Python; a ref or rank of True is still a bad file.
    if type(value) is not int:
        raise _bad(path, "an integer", value)
    if value < 0:
        raise _bad(path, "a non-negative integer", value)
    return value


def _str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise _bad(path, "a string", value)
    return value


def _optional(reader: Callable[[Any, str], T]) -> Callable[[Any, str], T | None]:
    def read(value: Any, path: str) -> T | None:
        return None if value is None else reader(value, path)

    return read


def _list(value: Any, path: str, reader: Callable[[Any, str], T]) -> list[T]:
    if not isinstance(value, list):
        raise _bad(path, "a list", value)
    return [reader(item, f"{path}[{i}]") for i, item in enumerate(value)]


def _json_value(value: Any, path: str, depth: int = 1) -> JSONValue:
    # The depth bound keeps the recursion far from Python's limit, also for values
    # built in memory (trace_to_json validates metadata that never was JSON text).
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if len(str(abs(value))) > MAX_INT_DIGITS:
            raise _bad(path, f"an integer of at most {MAX_INT_DIGITS} digits", value)
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _bad(path, "a finite number", value)
        return value
    if depth > MAX_DEPTH:
        raise _bad(path, f"nested at most {MAX_DEPTH} levels deep", "...")
    if isinstance(value, list):
        return [_json_value(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    if isinstance(value, dict):
        return _json_object(value, path, depth)
    raise _bad(path, "a JSON value (null, bool, number, string, list or object)", value)


def _json_object(value: Any, path: str, depth: int = 1) -> dict[str, JSONValue]:
    if not isinstance(value, dict):
        raise _bad(path, "an object", value)
    out: dict[str, JSONValue] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise _bad(f"{path}.<key>", "a string key", key)
        out[key] = _json_value(item, f"{path}.{key}", depth + 1)
    return out


def _fields(value: Any, path: str, required: set[str], optional: set[str]) -> dict[str, Any]:
    """Check an object has all ``required`` keys and nothing outside required|optional."""
    if not isinstance(value, dict):
        raise _bad(path or "<document>", "an object", value)
    prefix = f"{path}." if path else ""
    for key in sorted(required - value.keys()):
        raise SyncvizError(f"trace field {prefix}{key} is missing", fix=_FIX, field=prefix + key)
    for key in sorted(value.keys() - required - optional):
        raise SyncvizError(
            f"trace field {prefix}{key} is not part of the schema", fix=_FIX, field=prefix + key
        )
    return value


def _tensor_ref(value: Any, path: str) -> TensorRef:
    obj = _fields(value, path, {"ref", "shape", "dtype"}, set())
    return TensorRef(
        ref=_non_negative(obj["ref"], f"{path}.ref"),
        shape=_list(obj["shape"], f"{path}.shape", _non_negative),
        dtype=_str(obj["dtype"], f"{path}.dtype"),
    )


def _source(value: Any, path: str) -> SourceRecord:
    obj = _fields(value, path, {"ref", "label", "shape", "dtype"}, {"param", "rank"})
    return SourceRecord(
        ref=_non_negative(obj["ref"], f"{path}.ref"),
        label=_optional(_str)(obj["label"], f"{path}.label"),
        shape=_list(obj["shape"], f"{path}.shape", _non_negative),
        dtype=_str(obj["dtype"], f"{path}.dtype"),
        param=_optional(_str)(obj.get("param"), f"{path}.param"),
        rank=_optional(_non_negative)(obj.get("rank"), f"{path}.rank"),
    )


def _op(value: Any, path: str) -> OpRecord:
    keys = {"index", "op", "inputs", "args", "kwargs", "outputs", "derived_from", "warnings"}
    obj = _fields(value, path, keys, set())
    return OpRecord(
        index=_non_negative(obj["index"], f"{path}.index"),
        op=_str(obj["op"], f"{path}.op"),
        inputs=_list(obj["inputs"], f"{path}.inputs", _tensor_ref),
        args=_list(obj["args"], f"{path}.args", _json_value),
        kwargs=_json_object(obj["kwargs"], f"{path}.kwargs"),
        outputs=_list(obj["outputs"], f"{path}.outputs", _tensor_ref),
        derived_from=_list(obj["derived_from"], f"{path}.derived_from", _non_negative),
        warnings=_list(obj["warnings"], f"{path}.warnings", _str),
    )


def _collective(value: Any, path: str) -> CollectiveRecord:
    keys = {"index", "kind", "group", "ranks", "rank", "src", "dst", "bytes", "tensors", "label"}
    obj = _fields(value, path, keys, set())
    return CollectiveRecord(
        index=_non_negative(obj["index"], f"{path}.index"),
        kind=_str(obj["kind"], f"{path}.kind"),
        group=_str(obj["group"], f"{path}.group"),
        ranks=_list(obj["ranks"], f"{path}.ranks", _non_negative),
        rank=_optional(_non_negative)(obj["rank"], f"{path}.rank"),
        src=_optional(_non_negative)(obj["src"], f"{path}.src"),
        dst=_optional(_non_negative)(obj["dst"], f"{path}.dst"),
        bytes=_non_negative(obj["bytes"], f"{path}.bytes"),
        tensors=_list(obj["tensors"], f"{path}.tensors", _tensor_ref),
        label=_optional(_str)(obj["label"], f"{path}.label"),
    )


def _param(value: Any, path: str) -> ParamTrace:
    keys = {"param", "rank", "phase", "call", "ops", "collectives", "output_refs"}
    obj = _fields(value, path, keys, set())
    return ParamTrace(
        param=_optional(_str)(obj["param"], f"{path}.param"),
        rank=_optional(_non_negative)(obj["rank"], f"{path}.rank"),
        phase=_optional(_str)(obj["phase"], f"{path}.phase"),
        call=_optional(_str)(obj["call"], f"{path}.call"),
        ops=_list(obj["ops"], f"{path}.ops", _op),
        collectives=_list(obj["collectives"], f"{path}.collectives", _collective),
        output_refs=_list(obj["output_refs"], f"{path}.output_refs", _non_negative),
    )


def _read_trace(data: Any) -> dict[str, Any]:
    keys = {"schema", "version", "metadata", "sources", "params", "collectives", "warnings"}
    if not isinstance(data, dict):
        raise _bad("<document>", "an object", data)
    if data.get("schema") != SCHEMA_NAME:
        raise _bad("schema", repr(SCHEMA_NAME), data.get("schema"))
    if data.get("version") != SCHEMA_VERSION or type(data.get("version")) is not int:
        raise _bad(
            "version", f"{SCHEMA_VERSION} (the version this syncviz reads)", data.get("version")
        )
    obj = _fields(data, "", keys, set())
    return dict(
        metadata=_json_object(obj["metadata"], "metadata"),
        sources=_list(obj["sources"], "sources", _source),
        params=_list(obj["params"], "params", _param),
        collectives=_list(obj["collectives"], "collectives", _collective),
        warnings=_list(obj["warnings"], "warnings", _str),
    )
