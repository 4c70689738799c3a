"""A user's own family: one small file (Python or JSON) read, checked and registered.

A model syncviz has never seen is declared once: a Python file defining
``FAMILY = FamilyInfo(...)`` exactly as a file of ``syncviz/families/`` does, or a JSON
file holding one object with the same fields (:func:`json_fields`; lists where the
record has tuples). :func:`load_family` reads it, checks it (every field's type, the
synchronizer classes it names, names for every parameter kind its sizes lay out, its
presets and tiny spec as model specs) and registers it: then presets, config.json
reading, the oracle, the corrected synchronizer, pictures, the Explorer and diagnose
all know it. A record built in a notebook cell goes through :func:`register_family`.
A bad file is bad input, told in one line naming the file, the field and the value.

>>> import json, pathlib, tempfile
>>> path = pathlib.Path(tempfile.mkdtemp()) / "mine.json"
>>> _ = path.write_text(json.dumps({"name": "mine", "qk_nrom": True}))
>>> try:
...     load_family(path)
... except SyncvizError as err:
...     print(str(err).split("mine.json': ")[1])
unknown field 'qk_nrom' (= True): did you mean qk_norm?
>>> print(json_fields()["experts"])
one of 'none', 'hep', 'sequential' (default "none")
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import json
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from syncviz.errors import SyncvizError, shown
from syncviz.families import FamilyInfo, record, registry
from syncviz.oracle.blocks import GLOBAL_KINDS, KINDS
from syncviz.oracle.layout import layer_kinds
from syncviz.presets import shipped_configs
from syncviz.spec import ModelSpec
from syncviz.trace.json_io import json_object

__all__ = ["json_fields", "load_family", "read_family", "register_family", "use_family"]

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
NAME_TABLES = ("src_names", "dst_names", "hf_names")
EXAMPLE = "syncviz/families/qwen3.py"


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, globalns=vars(record))


def json_fields() -> dict[str, str]:
    """The fields of a family file (``FamilyInfo``'s), each with what it holds in JSON.

    >>> json_fields()["name"], json_fields()["qk_norm"]
    ('a string (required)', 'true or false (default false)')
    """
    out = {}
    for f in dataclasses.fields(FamilyInfo):
        default = _default(f)
        said = "required" if default is dataclasses.MISSING else f"default {json.dumps(default)}"
        out[f.name] = f"{_spoken(_hints(FamilyInfo)[f.name])} ({said})"
    return out


def _default(f: dataclasses.Field) -> object:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


_PLAIN_WORDS = {str: "a string", bool: "true or false", int: "an integer", type(None): "null"}


def _spoken(hint: Any) -> str:
    """What a value of ``hint`` is, in words (for the fields table and for errors)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in _PLAIN_WORDS:
        return _PLAIN_WORDS[hint]
    if hint is Any:
        return "any value"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_spoken(a) for a in args)
    if origin is tuple:
        if not (len(args) == 2 and args[1] is Ellipsis):
            return f"a list of {len(args)}: " + ", ".join(_spoken(a) for a in args)
        return "a list of " + _plural(args[0])
    if origin in (Mapping, dict):
        return "an object" if args[1] is Any else f"an object of {_plural(args[1])} by kind"
    if dataclasses.is_dataclass(hint):
        return "an object with " + ", ".join(f.name for f in dataclasses.fields(hint))
    return str(hint)


def _plural(hint: Any) -> str:
    words = _spoken(hint)
    for one, many in (("a string", "strings"), ("a list of", "lists of"), ("an object", "objects")):
        words = words.replace(one, many)
    return words


class _Bad(Exception):
    """A value that does not fit its field: where in the record, and what it should be
    (or, for a field that should not be there or is missing, the words and the fix)."""

    def __init__(
        self, where: str, value: object, expected: str, message: str = "", fix: str = ""
    ) -> None:
        super().__init__(where)
        self.where, self.value, self.expected = where, value, expected
        self.message, self.fix = message, fix


def _convert(value: Any, hint: Any, where: str) -> Any:
    """``value`` as the record holds it (lists become tuples), or :class:`_Bad`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if hint is bool or hint is str or hint is type(None):
        if type(value) is hint:  # of exactly that type (only None is of NoneType)
            return value
        raise _Bad(where, value, _spoken(hint))
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Bad(where, value, _spoken(hint))
    if origin is typing.Literal:
        if value in args and type(value) is type(args[0]):
            return value
        raise _Bad(where, value, _spoken(hint))
    if origin in (typing.Union, types.UnionType):
        for arm in args:
            try:
                return _convert(value, arm, where)
            except _Bad:
                continue
        raise _Bad(where, value, _spoken(hint))
    if origin is tuple:
        fixed = not (len(args) == 2 and args[1] is Ellipsis)  # tuple[int, int] vs tuple[int, ...]
        if not isinstance(value, (list, tuple)) or (fixed and len(value) != len(args)):
            raise _Bad(where, value, _spoken(hint))
        hints = args if fixed else (args[0],) * len(value)
        pairs = enumerate(zip(value, hints, strict=True))
        return tuple(_convert(v, h, f"{where}[{n}]") for n, (v, h) in pairs)
    if origin in (Mapping, dict):
        if not isinstance(value, Mapping):
            raise _Bad(where, value, _spoken(hint))
        return {
            _convert(k, args[0], where): _convert(v, args[1], f"{where}.{k}")
            for k, v in value.items()
        }
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            value = {f.name: getattr(value, f.name) for f in dataclasses.fields(hint)}
        if not isinstance(value, Mapping):
            raise _Bad(where, value, _spoken(hint))
        return hint(**_fields_of(hint, value, where))
    raise _Bad(where, value, _spoken(hint))  # a field kind this reader does not know


def _fields_of(cls: type, data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The record fields of ``cls`` in ``data``, converted; unknown or missing ones refused."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    prefix = f"{where}." if where else ""
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            fix = f"did you mean {close[0]}?" if close else "the fields are " + ", ".join(fields)
            raise _Bad(f"{prefix}{key}", value, "", f"unknown field {prefix}{key!r}", fix)
    hints = _hints(cls)
    out = {}
    for name, f in fields.items():
        if name not in data:
            if _default(f) is dataclasses.MISSING:
                expected = _spoken(hints[name])
                raise _Bad(
                    f"{prefix}{name}",
                    None,
                    expected,
                    f"missing field {prefix}{name!r}",
                    f"add {name!r}: {expected} (see {EXAMPLE})",
                )
            continue
        out[name] = _convert(data[name], hints[name], f"{prefix}{name}")
    return out


def _error(origin: str, bad: _Bad) -> SyncvizError:
    """The one-line error for ``bad`` in the file (or record) ``origin``."""
    if bad.message:
        said = "" if bad.value is None else f" (= {shown(bad.value)})"
        return SyncvizError(f"{origin}: {bad.message}{said}", fix=bad.fix)
    return SyncvizError(
        f"{origin}: field {bad.where!r} is {shown(bad.value)}",
        fix=f"make it {bad.expected} (see {EXAMPLE})",
    )


# ------------------------------------------------------------------ reading a file


def read_family(path: str | Path) -> FamilyInfo:
    """The family a ``.py`` or ``.json`` file declares, its fields checked (not registered)."""
    file = Path(path)
    origin = f"family file {str(file)!r}"
    if not file.is_file():
        raise SyncvizError(
            f"{origin} does not exist" if not file.exists() else f"{origin} is not a file",
            fix="give the path of a .py or .json family file",
        )
    if file.suffix == ".json":
        return _from_json(file, origin)
    if file.suffix == ".py":
        return _from_python(file, origin)
    raise SyncvizError(
        f"{origin} is neither .py nor .json",
        fix=f"write the family as Python (FAMILY = FamilyInfo(...), as {EXAMPLE}) or JSON",
    )


def _from_json(file: Path, origin: str) -> FamilyInfo:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise SyncvizError(
            f"{origin}: line {err.lineno}, column {err.colno}: {err.msg}",
            fix="correct the JSON there (one object of FamilyInfo fields)",
        ) from None
    except UnicodeDecodeError:
        raise SyncvizError(f"{origin} is not UTF-8 text", fix="save it as UTF-8 JSON") from None
    data = json_object(
        data, origin, fix='write one object: {"name": ..., "architecture": ..., ...}'
    )
    try:
        return FamilyInfo(**_fields_of(FamilyInfo, data, ""))
    except _Bad as bad:
        raise _error(origin, bad) from None


_UNKNOWN_KEYWORD = re.compile(r"unexpected keyword argument '(\w+)'")


def _from_python(file: Path, origin: str) -> FamilyInfo:
    name = "syncviz_user_family_" + re.sub(r"\W", "_", file.stem)
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise SyncvizError(f"{origin} cannot be imported", fix="give a Python source file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as err:
        raise SyncvizError(
            f"{origin}: line {err.lineno}, column {err.offset}: {err.msg}",
            fix="correct the Python there",
        ) from None
    except SyncvizError as err:
        raise SyncvizError(f"{origin}: {err.message}", fix=err.fix) from None
    except TypeError as err:
        unknown = _UNKNOWN_KEYWORD.search(str(err))
        if unknown is None:
            raise SyncvizError(f"{origin} raised TypeError: {err}", fix="correct it") from None
        fields = [f.name for f in dataclasses.fields(FamilyInfo)]
        close = difflib.get_close_matches(unknown.group(1), fields, n=1)
        raise SyncvizError(
            f"{origin}: unknown field {unknown.group(1)!r}",
            fix=f"did you mean {close[0]}?" if close else "the fields are " + ", ".join(fields),
        ) from None
    except Exception as err:  # the file's own code failed: still bad input, said in one line
        raise SyncvizError(
            f"{origin} raised {type(err).__name__}: {err}",
            fix=f"run it with python to see where (it should only define FAMILY, as {EXAMPLE})",
        ) from None
    info = getattr(module, "FAMILY", None)
    if not isinstance(info, FamilyInfo):
        what = "defines no FAMILY" if info is None else f"has FAMILY = {shown(info)}"
        raise SyncvizError(
            f"{origin} {what}",
            fix=f"end it with FAMILY = FamilyInfo(...), as {EXAMPLE} does",
        )
    return _checked_fields(info, origin)


def _checked_fields(info: FamilyInfo, origin: str) -> FamilyInfo:
    """``info`` if each field holds what its type says (a Python record is not checked)."""
    data = {f.name: getattr(info, f.name) for f in dataclasses.fields(FamilyInfo)}
    try:
        _fields_of(FamilyInfo, data, "")
    except _Bad as bad:
        raise _error(origin, bad) from None
    return info


# ------------------------------------------------------------------ checking the facts


def _check_facts(info: FamilyInfo, origin: str) -> None:
    """What the types alone do not say: names, classes, kinds, and something to lay out."""
    for field in ("name", "architecture", "model_type"):
        value = getattr(info, field)
        if not NAME.fullmatch(value):
            raise SyncvizError(
                f"{origin}: field {field!r} is {value!r}",
                fix=f"give {field} as letters, digits, '.', '_' or '-' (e.g. 'my-model')",
            )
    from syncviz.sync import corrected as corrected_classes
    from syncviz.sync import megatron_vllm

    for field, module, base in (
        ("corrected", corrected_classes, corrected_classes.CorrectedMegatronVllmSync),
        ("chatlearn", megatron_vllm, megatron_vllm.MegatronVllmSync),
    ):
        value = getattr(info, field)
        found = getattr(module, value, None) if value else None
        if (value or field == "corrected") and not (
            isinstance(found, type) and issubclass(found, base)
        ):
            known = sorted(
                n for n, c in vars(module).items() if isinstance(c, type) and issubclass(c, base)
            )
            raise SyncvizError(
                f"{origin}: field {field!r} is {value!r}, which names no {base.__name__} class",
                fix="use one of " + ", ".join(known) + ("" if field == "corrected" else " or ''"),
            )
    for table in NAME_TABLES:
        for kind, names in getattr(info, table).items():
            if kind not in KINDS:
                close = difflib.get_close_matches(kind, KINDS, n=1)
                raise SyncvizError(
                    f"{origin}: {table} has kind {kind!r}, which syncviz does not lay out",
                    fix=f"did you mean {close[0]}?" if close else "use " + ", ".join(KINDS),
                )
            if not names or (not isinstance(names, str) and not all(names)):
                raise SyncvizError(
                    f"{origin}: {table}[{kind!r}] is {shown(names)}: a kind with no names",
                    fix=f"give the name of {kind} ('{{i}}' for the layer), or leave the kind out",
                )
    if not info.presets and not info.tiny:
        raise SyncvizError(
            f"{origin}: family {info.name!r} has no presets and no tiny spec",
            fix="add tiny = sizes(layers, hidden, heads, kv_heads, ffn, vocab) to lay it out",
        )
    taken = set(shipped_configs())
    for preset in info.presets:
        if preset.name in taken:
            raise SyncvizError(
                f"{origin}: preset name {preset.name!r} is a shipped config",
                fix="give the preset another name",
            )


def _check_layouts(info: FamilyInfo, origin: str) -> None:
    """Each preset and the tiny spec is a valid ModelSpec, and every kind it lays out has
    a trainer, a destination and a checkpoint name (run with ``info`` registered)."""
    specs = [(f"presets[{n}]", p.name, dict(p.sizes)) for n, p in enumerate(info.presets)]
    if info.tiny:
        specs.append(("tiny", str(info.tiny.get("name", info.name + "-tiny")), dict(info.tiny)))
    for where, name, sizes in specs:
        sizes.setdefault("name", name)
        try:
            spec = ModelSpec(family=info.name, **sizes)
        except TypeError as err:
            fields = [f.name for f in dataclasses.fields(ModelSpec)]
            raise SyncvizError(
                f"{origin}: {where} sizes: {err}".replace("ModelSpec.__init__() ", ""),
                fix="use ModelSpec fields: " + ", ".join(fields),
            ) from None
        except SyncvizError as err:
            raise SyncvizError(f"{origin}: {where}: {err.message}", fix=err.fix) from None
        for kind in (*GLOBAL_KINDS, *layer_kinds(spec)):
            for table in NAME_TABLES:
                if kind not in getattr(info, table):
                    raise SyncvizError(
                        f"{origin}: {table} has no {kind!r}, which {where} ({name}) lays out",
                        fix=f"add {kind!r} to {table} (see {EXAMPLE})",
                    )


def register_family(info: FamilyInfo, *, origin: str = "a Python record") -> FamilyInfo:
    """Check ``info`` as a family file is checked, then register it; return it.

    >>> from syncviz.families import FAMILY
    >>> try:
    ...     register_family(FAMILY["qwen3"])
    ... except SyncvizError as err:
    ...     print(err)  # doctest: +ELLIPSIS
    a Python record: family name 'qwen3' is a built-in family: give your family its own name ...
    """
    if isinstance(info, FamilyInfo) and registry.is_built_in(info.name):
        registry.register(info, origin=origin)  # refused, in the registry's words
    info = _checked_fields(info, origin)
    _check_facts(info, origin)
    return registry.register(info, origin=origin, check=lambda i: _check_layouts(i, origin))


def load_family(path: str | Path) -> FamilyInfo:
    """Read, check and register the family a ``.py`` or ``.json`` file declares."""
    info = read_family(path)
    return register_family(info, origin=f"family file {str(path)!r}")


def use_family(family: str | Path | FamilyInfo) -> FamilyInfo:
    """The family given as a registered name, a file path or a record, registered.

    >>> use_family("qwen3").architecture
    'Qwen3ForCausalLM'
    """
    if isinstance(family, FamilyInfo):
        return register_family(family)
    if isinstance(family, str) and family in registry.FAMILY:
        return registry.FAMILY[family]
    return load_family(family)
