"""The one registry of families, and tables derived from it that follow every registration.

The built-in families are added when ``syncviz.families`` is imported; a user's own
family (a file, or a record built in a notebook cell) joins later through
:func:`register`. Every table that lists families (architectures, conventions,
presets, checkpoint names, corrected classes...) is a :class:`Derived` view: built
from the registry when first read, rebuilt after the registry changes, so a family
registered late is seen everywhere without a module being re-imported.

>>> from syncviz.families.registry import FAMILY, derived
>>> architectures = derived(lambda infos: {f.architecture: f.name for f in infos})
>>> all(architectures[f.architecture] for f in FAMILY.values())
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import TypeVar, overload

from syncviz.errors import SyncvizError
from syncviz.families.record import FamilyInfo

K = TypeVar("K")
V = TypeVar("V")

_FAMILIES: dict[str, FamilyInfo] = {}
_BUILT_IN: set[str] = set()
# Every record a name was ever registered with: tables elsewhere cache by family name,
# so a name may come back (after unregister) only with the same facts.
_EVER: dict[str, FamilyInfo] = {}
_ORIGIN: dict[str, str] = {}
_generation = 0

FAMILY: Mapping[str, FamilyInfo] = MappingProxyType(_FAMILIES)
"""Family name -> its facts, in registration order (a live view of the registry)."""


def add_built_in(info: FamilyInfo) -> None:
    """Add a family shipped in ``syncviz/families/`` (at import, in registry order)."""
    global _generation
    _FAMILIES[info.name] = info
    _BUILT_IN.add(info.name)
    _EVER[info.name] = info
    _ORIGIN[info.name] = f"syncviz/families/{info.name.replace('-', '_')}.py"
    _generation += 1


def is_built_in(name: str) -> bool:
    """Whether ``name`` is a family shipped with syncviz (never replaced or removed)."""
    return name in _BUILT_IN


def origin(name: str) -> str:
    """Where the family ``name`` was declared (its file, or "a Python record")."""
    return _ORIGIN.get(name, "")


def register(
    info: FamilyInfo,
    *,
    origin: str = "a Python record",
    check: Callable[[FamilyInfo], None] | None = None,
) -> FamilyInfo:
    """Add a user's family to the registry; return it. Clashes are refused: a built-in
    name, an architecture or ``model_type`` read as another family, a preset name taken.
    ``check`` runs with the family registered (checks that need it known, such as
    building its specs); if it raises, the family is taken out again. The record's own
    facts are checked by ``syncviz.family_file.register_family``, which calls this.

    Registering the same record again changes nothing (a notebook cell run twice).

    >>> from syncviz.families import FAMILY
    >>> from syncviz.families.registry import register
    >>> try:
    ...     register(next(iter(FAMILY.values())))
    ... except SyncvizError as err:
    ...     print(str(err).split(":")[1])
     family name 'llama-legacy' is a built-in family
    """
    global _generation
    if not isinstance(info, FamilyInfo):
        raise SyncvizError(
            f"{origin} gives a {type(info).__name__}, not a FamilyInfo",
            fix="build it with syncviz.families.FamilyInfo(...)",
        )
    name = info.name
    if name in _BUILT_IN:
        raise SyncvizError(
            f"{origin}: family name {name!r} is a built-in family",
            fix=f"give your family its own name (e.g. {name + '-custom'!r})",
        )
    earlier = _EVER.get(name)
    if earlier is not None and earlier != info:
        raise SyncvizError(
            f"{origin}: family {name!r} was registered earlier with other facts"
            f" (from {_ORIGIN.get(name) or 'a Python record'})",
            fix="give the changed family a new name, or restart Python to redefine it",
        )
    if name in _FAMILIES:
        return _FAMILIES[name]
    for other in _FAMILIES.values():
        _refuse_clash(info, other, origin)
    _FAMILIES[name] = info
    _generation += 1
    if check is not None:
        try:
            check(info)
        except BaseException:
            del _FAMILIES[name]
            _generation += 1
            raise
    _EVER[name] = info
    _ORIGIN[name] = origin
    return info


def _refuse_clash(info: FamilyInfo, other: FamilyInfo, origin: str) -> None:
    """A Hugging Face name read as two families, or a preset name twice, is refused."""
    where = f"{origin}: family {info.name!r}"
    if info.hf_default and other.hf_default:
        for field, mine, theirs in (
            ("architecture", info.architecture, other.architecture),
            ("model_type", info.model_type, other.model_type),
        ):
            if mine == theirs:
                raise SyncvizError(
                    f"{where}: {field} {mine!r} is already read as family {other.name!r}",
                    fix=f"use your model's own {field}, or set hf_default to false so a"
                    f" checkpoint of {mine!r} stays read as {other.name!r}",
                )
    taken = {p.name for p in other.presets}
    for preset in info.presets:
        if preset.name in taken:
            raise SyncvizError(
                f"{where}: preset name {preset.name!r} is already a preset of {other.name!r}",
                fix="give the preset another name",
            )


def own_families() -> tuple[tuple[FamilyInfo, str], ...]:
    """The families registered by a file or a record, each with where it came from (what
    another process, e.g. a Ray rank, registers to know them too)."""
    return tuple((f, _ORIGIN[f.name]) for f in _FAMILIES.values() if f.name not in _BUILT_IN)


def unregister(name: str) -> None:
    """Remove a family registered by a file or a record (built-in families stay).

    >>> try:
    ...     unregister("no-such-family")
    ... except SyncvizError as err:
    ...     print(err)
    family 'no-such-family' is not registered: nothing to remove
    """
    global _generation
    if name in _BUILT_IN:
        raise SyncvizError(f"family {name!r} is built in", fix="only a user's family can go")
    if name not in _FAMILIES:
        raise SyncvizError(f"family {name!r} is not registered", fix="nothing to remove")
    del _FAMILIES[name]
    _generation += 1


class Derived(Mapping[K, V]):
    """A table built from the registered families (in registry order) by ``build``; built
    when first read and rebuilt after the registry changes."""

    def __init__(self, build: Callable[[Iterable[FamilyInfo]], Mapping[K, V]]) -> None:
        self._build = build
        self._table: dict[K, V] = {}
        self._built_at = -1

    def _current(self) -> dict[K, V]:
        if self._built_at != _generation:
            self._table = dict(self._build(tuple(_FAMILIES.values())))
            self._built_at = _generation
        return self._table

    def __getitem__(self, key: K) -> V:
        return self._current()[key]

    def __iter__(self) -> Iterator[K]:
        return iter(tuple(self._current()))

    def __len__(self) -> int:
        return len(self._current())

    def __contains__(self, key: object) -> bool:
        return key in self._current()

    def __repr__(self) -> str:
        return f"Derived({self._current()!r})"


def derived(build: Callable[[Iterable[FamilyInfo]], Mapping[K, V]]) -> Derived[K, V]:
    """A :class:`Derived` table: ``build`` maps the registered families to the table."""
    return Derived(build)


class FamilyNames(Sequence[str]):
    """Every registered family name, in registry order (a live sequence)."""

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        return tuple(_FAMILIES)[index]

    def __len__(self) -> int:
        return len(_FAMILIES)

    def __contains__(self, name: object) -> bool:
        return name in _FAMILIES

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(_FAMILIES))

    def __repr__(self) -> str:
        return repr(tuple(_FAMILIES))
