"""Findings as data, and the words for them, once: who, where, what it holds and should hold.

A finding names its parameter, its rank (world number, tp, and pp where the engine
spells it), the span of the tensor it is about, what the span holds, what it
should hold and its status. Every line of ``check`` and ``diagnose`` is worded
from one, here; grouping (identical findings over ranks and over layers) reads
the data, never the words back.

>>> f = Finding("model.layers.0.o_proj.weight", 1, "wrong", tp=0,
...             span=Span("column", 0, 3, "heads 0-1"), holds="heads 0-3", expected="heads 0-1")
>>> f.line()
'dst rank 1 (tp 0), columns 0-3 (heads 0-1): hold heads 0-3, expected heads 0-1'
>>> f.what()
'columns 0-3 (heads 0-1): hold heads 0-3, expected heads 0-1'
>>> Finding("k", 2, "missing", tp=1, pp=0, spelling="engine", note="missing from x").line()
'pp 0 tp 1: missing from x'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

LOCAL_UNITS = ("row", "element", "col")
"""Units of a local place that a single-piece description drops (``rows 0-3: Q head 1``)."""

LAYER_SLOT = "layers.{layer}."
"""Where a layer number stands in a key, in the words of a group of layers."""


@dataclass(frozen=True)
class Span:
    """A run of a local tensor: ``unit`` row | column | element | expert, ``first`` to
    ``last`` (inclusive), and the blocks it should carry when worth saying.

    >>> str(Span("row", 4, 4)), str(Span("column", 0, 31, "heads 8-15"))
    ('row 4', 'columns 0-31 (heads 8-15)')
    """

    unit: str
    first: int
    last: int
    blocks: str = ""

    def __str__(self) -> str:
        where = f"{self.unit} {self.first}"
        if self.last > self.first:
            where = f"{self.unit}s {self.first}-{self.last}"
        return f"{where} ({self.blocks})" if self.blocks else where


def holds_words(span: Span | None, holds: str, expected: str | None) -> str:
    """``holds X, expected Y`` (``hold`` for several columns of a row-parallel shard).

    >>> holds_words(Span("row", 0, 3), "K head 0", "Q head 1")
    'holds K head 0, expected Q head 1'
    """
    several = span is not None and span.unit == "column" and span.last > span.first
    text = f"{'hold' if several else 'holds'} {holds}"
    return text if expected is None else f"{text}, expected {expected}"


@dataclass(frozen=True)
class Finding:
    """One thing wrong with one rank's tensor of one parameter (or one error of the flow).

    ``status``: wrong | unwritten | rewritten | error | missing | uncheckable.
    ``holds`` / ``expected`` say what the span holds and should hold (``expected``
    None: not said); ``note`` is any other statement ("never written"), said in their
    place. An error's ``note`` is the message of the ``stage`` that raised.
    ``spelling``: how its rank is said: ``world`` (the checker's ``dst rank 5 (tp 1)``)
    or ``engine`` (a dump's, ``tp 1``, ``pp 0 tp 1`` when ``pp`` is given).
    ``layers``: the layers of other parameters its words name (grouping over layers
    reads them as one).
    """

    param: str
    world: int
    status: str
    tp: int = -1
    span: Span | None = None
    holds: str = ""
    expected: str | None = None
    note: str = ""
    stage: str = ""
    pp: int | None = None
    spelling: str = "world"
    layers: tuple[int, ...] = ()

    def rank_words(self) -> str:
        """The rank, as this finding's line says it."""
        if self.status == "error":
            return f"rank {self.world}"
        if self.spelling == "engine":
            return engine_rank(self.tp, self.pp)
        return f"dst rank {self.world} (tp {self.tp})"

    def what(self) -> str:
        """The finding without its rank: what a group of ranks shares."""
        if self.status == "error":
            return f"{self.stage}: {self.note}"
        body = self.note or holds_words(self.span, self.holds, self.expected)
        return f"{self.span}: {body}" if self.span is not None else body

    def line(self) -> str:
        """The finding in one line, its rank first."""
        sep = " " if self.status == "error" else (", " if self.span is not None else ": ")
        return f"{self.rank_words()}{sep}{self.what()}"


def engine_rank(tp: int, pp: int | None = None) -> str:
    """A destination rank as a dump names it: ``tp 1``, or ``pp 0 tp 1`` when ``pp`` is given.

    >>> engine_rank(1), engine_rank(1, 0)
    ('tp 1', 'pp 0 tp 1')
    """
    return f"tp {tp}" if pp is None else f"pp {pp} tp {tp}"


def more_runs(count: int, unit: str) -> str:
    """The note for runs past those spelled out.

    >>> more_runs(3, "row")
    '... 3 more wrong row runs'
    """
    return f"... {count} more wrong {unit} runs"


def drop_local_place(text: str, units: Sequence[str] = LOCAL_UNITS) -> str:
    """A single-piece description without its local place: the span says it already.

    >>> drop_local_place("rows 0-3: Q head 1"), drop_local_place("row 0: a; row 1: b")
    ('Q head 1', 'row 0: a; row 1: b')
    >>> drop_local_place("experts 0-1: whole experts 2-3", (*LOCAL_UNITS, "expert"))
    'whole experts 2-3'
    """
    if "; " in text:
        return text
    head, sep, rest = text.partition(": ")
    word, _, numbers = head.partition(" ")
    plain = numbers and all(c.isdigit() or c == "-" for c in numbers)
    if sep and plain and word.removesuffix("s") in units:
        return rest
    return text


MAX_REGION_WORDS = 160  # longer descriptions of a region are cut to its first and last row


def region_words(rows_words: Callable[[int, int], str | None], a: int, b: int) -> str | None:
    """Words for rows a..b-1 from ``rows_words(x, y)`` (the words of rows x..y-1, e.g.
    :func:`~syncviz.check.map_words` of a map's rows): a long irregular region is named
    by its first and last row.

    >>> region_words(lambda x, y: "Q head 0" if y - x > 1 else f"row {x}", 0, 4)
    'Q head 0'
    >>> region_words(lambda x, y: "x" * 200 if y - x > 1 else f"row {x}", 0, 4)
    'row 0 in its first, ..., row 3 in its last'
    """
    text = rows_words(a, b)
    if text is None or len(text) <= MAX_REGION_WORDS or b - a < 3:
        return text
    return f"{rows_words(a, a + 1)} in its first, ..., {rows_words(b - 1, b)} in its last"


@dataclass(frozen=True)
class Region:
    """A run of rows (experts, elements, columns) of one tensor that is not right, in words:
    what the pictures mark and the checker says.

    >>> Region("column", 0, 4, "heads 0-3", "heads 0-1", "heads 0-1").text
    'columns 0-3 (heads 0-1): hold heads 0-3, expected heads 0-1'
    """

    unit: str  # row | expert | element | column (a row-parallel shard's)
    start: int
    stop: int
    holds: str
    expected: str
    blocks: str = ""  # the blocks these rows or columns should carry, when worth saying

    @property
    def where(self) -> Span:
        return Span(self.unit, self.start, self.stop - 1, self.blocks)

    @property
    def span(self) -> str:
        return str(self.where)

    @property
    def text(self) -> str:
        return f"{self.span}: {holds_words(self.where, self.holds, str(self.expected))}"


# ---------------------------------------------------------------- ranks by role


@dataclass(frozen=True)
class Role:
    """A rank named by its role: ``vLLM tp 3``, ``trainer pp 1 tp 0 ep 1``.

    >>> role = Role("trainer", 3, pp=1)
    >>> str(role), role.words(tp="0-3")
    ('trainer pp 1 tp 3', 'trainer pp 1 tp 0-3')
    """

    name: str  # trainer, or the engine's name
    tp: int
    pp: int | None = None  # said when its side has pp > 1
    ep: int | None = None  # said for a trainer with ep > 1

    @property
    def stem(self) -> tuple:
        """All but tp: ranks of one stem are told together, their tps as spans."""
        return (self.name, self.pp, self.ep)

    def words(self, tp: str | None = None) -> str:
        parts = [self.name] + ([f"pp {self.pp}"] if self.pp is not None else [])
        parts.append(f"tp {self.tp if tp is None else tp}")
        return " ".join(parts + ([f"ep {self.ep}"] if self.ep is not None else []))

    def __str__(self) -> str:
        return self.words()


def spans(numbers: Iterable[int]) -> str:
    """Numbers as runs.

    >>> spans([0, 1, 2, 3, 7])
    '0-3,7'
    """
    out: list[list[int]] = []
    for n in sorted(numbers):
        if out and out[-1][1] == n - 1:
            out[-1][1] = n
        else:
            out.append([n, n])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in out)


def _named(roles: dict[int, Role], world: int) -> str:
    role = roles.get(world)
    return f"{role if role is not None else 'rank'} (rank {world})"


def who(worlds: list[int], roles: dict[int, Role]) -> str:
    """``vLLM tp 0-15 (ranks 8-23): `` for ranks differing in tp only, else each by name.

    >>> roles = {1: Role("vLLM", 0), 2: Role("vLLM", 1), 0: Role("trainer", 0)}
    >>> who([1, 2], roles), who([0, 2], roles)
    ('vLLM tp 0-1 (ranks 1-2): ', 'trainer tp 0 (rank 0), vLLM tp 1 (rank 2): ')
    """
    if worlds == [-1] or not roles:
        return ""
    if len(worlds) == 1:
        return f"{_named(roles, worlds[0])}: "
    named = [roles.get(w) for w in worlds]
    if all(r is not None for r in named) and len({r.stem for r in named if r}) == 1:
        first = named[0]
        assert first is not None
        tps = spans(r.tp for r in named if r)
        return f"{first.words(tps)} (ranks {spans(worlds)}): "
    return ", ".join(_named(roles, w) for w in worlds) + ": "


def ranks_legend(roles: dict[int, Role]) -> str:
    """``trainer tp 0-7 = ranks 0-7; vLLM tp 0-15 = ranks 8-23``.

    >>> ranks_legend({0: Role("trainer", 0), 1: Role("vLLM", 0), 2: Role("vLLM", 1)})
    'trainer tp 0 = rank 0; vLLM tp 0-1 = ranks 1-2'
    """
    by_stem: dict[tuple, list[tuple[int, Role]]] = {}
    for world, role in sorted(roles.items()):
        by_stem.setdefault(role.stem, []).append((world, role))
    parts = []
    for members in by_stem.values():
        tps, worlds = [r.tp for _, r in members], [w for w, _ in members]
        word = "rank" if len(worlds) == 1 else "ranks"
        parts.append(f"{members[0][1].words(spans(tps))} = {word} {spans(worlds)}")
    return "; ".join(parts)


# ---------------------------------------------------------------- grouped text

LEGEND = {
    "error": "the synchronizer raised",
    "wrong": "it wrote the wrong data",
    "unwritten": "never written (the data is missing)",
    "rewritten": "written more than once",
}
"""What each status word in a report means."""

GROUP_LINES = 6  # lines shown per group of identical findings; --verbose shows all


@dataclass(frozen=True)
class Told:
    """One line of a parameter's findings as a report tells it: its words and the ranks
    they hold for, with the layers they name."""

    words: str
    worlds: tuple[int, ...]
    layers: tuple[int, ...]

    def same_on_every_layer(self) -> str:
        """The words with every layer they name as a slot: equal on each layer alike."""
        text = self.words
        for n in self.layers:
            text = text.replace(f"layers.{n}.", LAYER_SLOT)
        return text


def tell(findings: Iterable[Finding], layer: int | None, by_role: bool) -> list[Told]:
    """Findings as lines: one per distinct text, its ranks merged. ``by_role``: the ranks
    are named apart (by :func:`who`), so the text is the finding's :meth:`~Finding.what`;
    else its whole line.

    >>> fs = [Finding("k", w, "unwritten", tp=w - 1, note="never written") for w in (1, 2)]
    >>> [(t.words, t.worlds) for t in tell(fs, None, True)]
    [('never written', (1, 2))]
    >>> [t.words for t in tell(fs, None, False)]
    ['dst rank 1 (tp 0): never written', 'dst rank 2 (tp 1): never written']
    """
    merged: dict[str, tuple[list[int], tuple[int, ...]]] = {}
    own = () if layer is None else (layer,)
    for f in findings:
        words = f.what() if by_role else f.line()
        worlds, _ = merged.setdefault(words, ([], (*own, *f.layers)))
        worlds.append(f.world)
    return [Told(w, tuple(sorted(set(ws))), ls) for w, (ws, ls) in merged.items()]


class Checked(Protocol):
    """What grouping reads of a parameter's check (:class:`~syncviz.check.ParamCheck`)."""

    key: str
    status: str
    layer: int | None

    def findings(self) -> list[Finding]: ...


@dataclass
class Group:
    """Parameters of one kind whose findings are the same on every layer they cover."""

    status: str
    name: str  # the key after its layer number (the whole key outside the layers)
    layers: list[int]
    keys: list[str]
    told: list[Told]

    def text(self, roles: dict[int, Role]) -> list[str]:
        if len(self.keys) == 1:
            head = f"{self.status.upper()} {self.keys[0]}"
        else:
            head = f"{self.status.upper()} layers {spans(self.layers)}: {self.name}"
        lines = [head]
        for t in self.told[:GROUP_LINES]:
            lines.append(f"  {who(list(t.worlds), roles)}{t.words}")
        if len(self.told) > GROUP_LINES:
            more = len(self.told) - GROUP_LINES
            lines.append(f"  ... {more} more (--verbose lists them)")
        return lines


def groups(bad: Sequence[Checked], by_role: bool) -> list[Group]:
    """Bad parameters grouped by kind, status and findings (layer numbers aside).

    >>> class P:
    ...     def __init__(self, layer): self.key, self.layer = f"m.layers.{layer}.w", layer
    ...     status = "unwritten"
    ...     def findings(self): return [Finding(self.key, 1, "unwritten", 0, note="never written")]
    >>> [g.text({}) for g in groups([P(0), P(1), P(3)], by_role=True)]
    [['UNWRITTEN layers 0-1,3: w', '  never written']]
    """
    found: dict[tuple, Group] = {}
    for p in bad:
        mark = f"layers.{p.layer}."
        in_layer = p.layer is not None and mark in p.key
        template = p.key.replace(mark, LAYER_SLOT, 1) if in_layer else p.key
        told = tell(p.findings(), p.layer, by_role)
        same = tuple((t.same_on_every_layer(), t.worlds) for t in told)
        key = (p.status, template, same)
        if key not in found:
            name = template.split(LAYER_SLOT, 1)[-1]
            found[key] = Group(p.status, name, [], [], told)
        found[key].layers.append(p.layer if in_layer and p.layer is not None else -1)
        found[key].keys.append(p.key)
    return list(found.values())
