"""The checker: every destination tensor against the oracle, explained in words.

>>> from syncviz import Parallel, preset
>>> from syncviz.run.inprocess import run_sync
>>> result = run_sync(preset("llama2-7b").scaled(), Parallel(tp=2), Parallel(tp=2), layers=[0])
>>> report = check(result)
>>> report.ok, report.counts()
(True, {'ok': 6})
"""

from __future__ import annotations

import bisect
import hashlib
import html
import json
import math
import re
from dataclasses import asdict, dataclass, field, replace

import torch

from syncviz.check_maps import compare_maps, map_index
from syncviz.oracle import ParamLayout, describe
from syncviz.oracle.dest import experts_of_rank
from syncviz.progress import progress
from syncviz.provenance import Region as MapRegion
from syncviz.provenance import RegionMap, is_symbolic
from syncviz.provenance.regions import ReshapedMap
from syncviz.run.result import SyncResult
from syncviz.run.symbolic_state import shard_map
from syncviz.run.values import FOREIGN_ID, UNWRITTEN_ID, owners, to_local_ids
from syncviz.spec import ModelSpec

MAX_RUNS = 4  # wrong row runs spelled out per tensor; the rest are counted
# Symbolic tensors above this many elements are compared map against map (all of them:
# the map comparison gives the element-wise report, and costs regions, not elements).
ELEMENTWISE_LIMIT = 0
DESCRIBE_LIMIT = 2**24  # elements of one wrong run materialized when its map does not compress
MAX_DESCRIBED_ROWS = 250_000  # as IndexMap.from_ids: longer runs are "in no regular order"
_LOCAL_PREFIX = re.compile(r"^(rows?|elements?|cols?) [\d-]+: ")


@dataclass
class TensorCheck:
    """One destination rank's tensor of one parameter."""

    rank: int
    tp: int
    status: str  # ok | wrong | unwritten | rewritten
    wrong: int = 0
    unwritten: int = 0
    writes: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class ParamCheck:
    """One vLLM parameter across all destination ranks, plus synchronizer errors."""

    key: str
    status: str  # ok | wrong | error
    tensors: list[TensorCheck] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"  {e}" for e in self.errors]
        for t in self.tensors:
            out += [f"  {p}" for p in t.problems]
        return out


@dataclass
class CheckReport:
    """OK or the wrong blocks, per parameter; shows itself as text, HTML and JSON."""

    model: str
    src: str
    dst: str
    synchronizer: str
    params: list[ParamCheck]
    flow_errors: list[str] = field(default_factory=list)
    roles: dict[int, str] = field(default_factory=dict)  # world rank -> "vLLM tp 3"
    sizes: list[str] = field(default_factory=list)  # "hidden_size 8192 -> 256" when scaled

    @property
    def ok(self) -> bool:
        return not self.flow_errors and all(p.status == "ok" for p in self.params)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for p in self.params:
            counts[p.status] = counts.get(p.status, 0) + 1
        return counts

    def bad(self) -> list[ParamCheck]:
        return [p for p in self.params if p.status != "ok"]

    def headline(self) -> str:
        """One line: model, sizes, synchronizer, verdict and counts."""
        return (
            f"{self.model}: src {self.src} -> dst {self.dst}, synchronizer {self.synchronizer}: "
            + ("OK" if self.ok else "MISMATCH")
            + " ("
            + ", ".join(f"{n} {s}" for s, n in sorted(self.counts().items()))
            + ")"
        )

    def text(self, *, verbose: bool = False) -> str:
        """The report as text. By default findings that repeat across layers are told
        once (``layers 0-31: self_attn.qkv_proj.weight``) and each group shows at most
        a few lines; ``verbose`` lists every parameter and every line.

        >>> from syncviz import Parallel, preset
        >>> from syncviz.run.inprocess import run_sync
        >>> spec = preset("llama3-8b").scaled(num_layers=4)
        >>> report = check(run_sync(spec, Parallel(1), Parallel(2), trace=False))
        >>> report.counts()
        {'ok': 11, 'error': 12, 'wrong': 4}
        >>> [line for line in report.text().splitlines() if line.startswith("WRONG")]
        ['WRONG layers 0-3: self_attn.o_proj.weight']
        """
        lines = [self.headline()]
        if self.sizes:
            lines.append("sizes (real -> scaled, same layout): " + ", ".join(self.sizes))
        if self.roles:
            lines.append("ranks: " + _ranks_legend(self.roles))
        present = {p.status for p in self.bad()} | {
            t.status for p in self.bad() for t in p.tensors if t.status != "ok"
        }
        said = [f"{word}: {LEGEND[word]}" for word in LEGEND if word in present]
        if said:
            lines.append("; ".join(said))
        lines += [f"flow: {e}" for e in self.flow_errors]
        if verbose:
            for p in self.bad():
                lines.append(f"{p.status.upper()} {p.key}")
                lines += p.lines()
            return "\n".join(lines)
        for group in _groups(self.bad()):
            lines += group.text(self.roles)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    def _repr_html_(self) -> str:
        color = "#1a7f37" if self.ok else "#cf222e"
        esc = html.escape
        rows = []
        for p in self.params:
            mark = "&#10003;" if p.status == "ok" else esc(p.status.upper())
            detail = "<br>".join(esc(line.strip()) for line in p.lines())
            rows.append(
                f"<tr><td>{mark}</td><td><code>{esc(p.key)}</code></td><td>{detail}</td></tr>"
            )
        flow = "".join(f"<p>flow: {esc(e)}</p>" for e in self.flow_errors)
        return (
            f"<div><b style='color:{color}'>{'OK' if self.ok else 'MISMATCH'}</b> "
            f"{esc(self.model)}: src {esc(self.src)} &rarr; dst {esc(self.dst)}, "
            f"synchronizer {esc(self.synchronizer)}{flow}"
            "<table><tr><th></th><th>parameter</th><th>what is wrong</th></tr>"
            + "".join(rows)
            + "</table></div>"
        )


def check(
    result: SyncResult,
    synchronizer: str = "",
    *,
    show_progress: bool = False,
    real: ModelSpec | None = None,
) -> CheckReport:
    """Compare every destination tensor of ``result`` with what the oracle says it must hold.

    ``synchronizer`` (default: the name the run kept) labels the report; ``real`` is the
    model a scaled run stands for, so the report shows both sizes.
    """
    plan = result.plan
    synchronizer = synchronizer or plan.options.synchronizer
    by_param, flow_errors = findings_words(result)
    params = []
    words: dict[tuple, str] = {}  # descriptions of wrong slices, shared across layers
    for param in progress(plan.layout, "check", enabled=show_progress):
        tensors = []
        for t in param.dst:
            world = plan.world_rank("dst", t.pp, t.tp)
            raw = result.dst_tensors[world][t.name]
            writes = result.writes(world).get(t.name, 0)
            if is_symbolic(raw) and raw.numel() > ELEMENTWISE_LIMIT:  # real sizes: maps
                tensors.append(_check_tensor_map(plan, param, t, world, raw, writes, words))
                continue
            actual = to_local_ids(plan, param, raw)
            checked = _check_tensor(param, t.tp, world, actual, t.index.ids(), writes, words)
            if checked.status != "ok" and plan.dst.ep > 1 and param.kind.startswith("experts_"):
                checked.problems.extend(_placement_words(plan, param, t.tp, world, actual))
            foreign = plan.values == "ids" and bool((actual == FOREIGN_ID).any())
            if foreign:  # ids are model-wide: name the other parameters whose data landed here
                for other in owners(plan, raw, exclude=param.key):
                    checked.problems.append(
                        f"dst rank {world} (tp {t.tp}): holds elements of {other}"
                    )
            tensors.append(checked)
        errors = by_param.get(param.key, [])
        status = (
            "error" if errors else ("ok" if all(c.status == "ok" for c in tensors) else "wrong")
        )
        params.append(ParamCheck(param.key, status, tensors, errors))
    roles = {r.world: plan.rank_name(r.world).rsplit(" (rank", 1)[0] for r in plan.roles}
    return CheckReport(
        real.name if real is not None else plan.spec.name,
        plan.src.sizes_text(),
        plan.dst.sizes_text(),
        synchronizer,
        params,
        flow_errors,
        roles,
        _scaled_sizes(real, plan.spec) if real is not None else [],
    )


def _placement_words(plan, param: ParamLayout, tp: int, world: int, actual) -> list[str]:
    """Under destination expert parallel: the experts a rank holds against those its
    placement gives it, naming the placement it holds instead when it is one.

    ``actual`` holds this parameter's global ids; each local expert is named by its first.
    """
    experts, per = param.global_shape[0], math.prod(param.global_shape[1:])
    firsts = actual.reshape(actual.shape[0], -1)[:, 0].tolist()
    held = [int(i) // per if 0 <= i < experts * per else -1 for i in firsts]
    ep, placement = plan.dst.ep, plan.dst.expert_placement
    want = experts_of_rank(experts, ep, tp, placement)
    if held == want:
        return []
    line = (
        f"dst rank {world} (tp {tp}): holds experts {_expert_list(held)}; the {placement}"
        f" placement over dst ep {ep} gives it experts {_expert_list(want)}"
    )
    others = [p for p in ("linear", "round_robin") if p != placement]
    for other in others:
        if held == experts_of_rank(experts, ep, tp, other):
            line += f" (it holds the {other} placement's)"
    return [line]


def _expert_list(experts: list[int]) -> str:
    return ", ".join("?" if e < 0 else str(e) for e in experts)


def findings_words(result: SyncResult) -> tuple[dict[str, list[str]], list[str]]:
    """The run's findings as the report words them: per parameter key, and the flow's."""
    by_param: dict[str, list[str]] = {}
    flow_errors = []
    keys = {p.key for p in result.plan.layout}
    for f in result.findings:
        if f.param not in keys:
            where = "" if f.param == "*" else f" {f.param}"
            flow_errors.append(f"rank {f.rank} {f.stage}{where}: {f.message}")
        else:
            by_param.setdefault(f.param, []).append(f"rank {f.rank} {f.stage}: {f.message}")
    return by_param, flow_errors


def _scaled_sizes(real: ModelSpec, used: ModelSpec) -> list[str]:
    """``name real -> scaled`` for every size the scaled run changed."""
    names = ("hidden_size", "head_dim", "ffn_hidden_size", "moe_ffn_hidden_size",
             "shared_expert_ffn_hidden_size", "vocab_size", "num_layers")  # fmt: skip
    return [
        f"{n} {getattr(real, n)} -> {getattr(used, n)}"
        for n in names
        if getattr(real, n) != getattr(used, n)
    ]


def _check_tensor(
    param: ParamLayout,
    tp: int,
    world: int,
    actual: torch.Tensor,
    expected: torch.Tensor,
    writes: int,
    cache: dict,
) -> TensorCheck:
    got = actual.to(torch.int64)
    status = element_status(actual, expected)
    unwritten = status == UNWRITTEN
    wrong = (status == WRONG) | (status == FOREIGN)
    check = TensorCheck(world, tp, "ok", int(wrong.sum()), int(unwritten.sum()), writes)
    where = f"dst rank {world} (tp {tp})"
    _note_unwritten(check, where, actual.numel())
    if check.wrong:
        check.status = "wrong"
        check.problems += _wrong_runs(param, where, got, expected, wrong, cache)
    _note_rewritten(check, where)
    return check


def _note_unwritten(check: TensorCheck, where: str, numel: int) -> None:
    """Status and words for the elements of a tensor of ``numel`` the sync never wrote."""
    if check.unwritten:
        check.status = "unwritten"
        if check.unwritten == numel:
            check.problems.append(f"{where}: never written")
        else:
            check.problems.append(f"{where}: {check.unwritten} elements never written")


def _note_rewritten(check: TensorCheck, where: str) -> None:
    """Status and words for a tensor the sync wrote more than once."""
    if check.writes > 1:
        check.status = "rewritten" if check.status == "ok" else check.status
        check.problems.append(f"{where}: written {check.writes} times")


def _check_tensor_map(plan, param, t, world, raw, writes, cache) -> TensorCheck:
    """:func:`_check_tensor` for a symbolic tensor: regions overlaid, same words.

    The wrong rows (at most ``MAX_RUNS`` runs of them) are described from their
    maps (:func:`map_words`); no element is read unless a run does not compress.
    """
    base = plan.id_base[param.key]
    # Layers of one kind differ only by their ids' base: each expected map is built,
    # and each pair of maps compared, once per shape (keys count ids from base).
    if ("want", t.index) not in cache:
        rel = shard_map(t.index, 0)
        safe = all(_is_ids(r) or r.is_constant for r in rel.regions)
        cache[("want", t.index)] = (rel, _map_key(rel, 0)) if safe else (None, None)
    rel, want_key = cache[("want", t.index)]
    if rel is None:  # a marker merged with ids at base 0: build this one as it is
        expected = shard_map(t.index, base)
        want_key = _map_key(expected, base)
    else:
        expected = _shifted(rel, base)
    got_map = raw.region_map()
    got_key = _map_key(got_map, base)
    key = ("diff", got_key, want_key)
    if key not in cache:
        found = compare_maps(got_map, expected)
        found.id_ranges = [(low - base, high - base) for low, high in found.id_ranges]
        cache[key] = found
    diff = replace(
        cache[key], id_ranges=[(lo + base, hi + base) for lo, hi in cache[key].id_ranges]
    )
    check = TensorCheck(world, t.tp, "ok", diff.wrong, diff.unwritten, writes)
    where = f"dst rank {world} (tp {t.tp})"
    _note_unwritten(check, where, raw.numel())
    if check.wrong:
        check.status = "wrong"
        unit = "expert" if raw.dim() == 3 else ("row" if raw.dim() == 2 else "element")
        row = math.prod(raw.shape[1:]) if raw.dim() else 1
        runs = diff.wrong_rows
        for a, b in runs[:MAX_RUNS]:
            span = f"{unit}s {a}-{b - 1}" if b - a > 1 else f"{unit} {a}"
            # Layers of one kind share blocks and local ids: the same wrong rows recur on
            # every layer, so their words are cached by the maps' shape relative to base.
            key = ("map", id(param.blocks), a, b, got_key, want_key)
            if key not in cache:
                got_rows, want_rows = got_map.take(0, a, 1, b - a), expected.take(0, a, 1, b - a)
                holds = map_words(plan, param, got_rows, cache)
                cache[key] = (holds, holds and map_words(plan, param, want_rows, cache))
            holds, wants = cache[key]
            if holds is None:
                check.problems.append(
                    f"{where}, {span}: holds other ids ({(b - a) * row} elements, too many to"
                    " describe)"
                )
                continue
            check.problems.append(f"{where}, {span}: holds {holds}, expected {wants}")
        if len(runs) > MAX_RUNS:
            check.problems.append(f"{where}: ... {len(runs) - MAX_RUNS} more wrong {unit} runs")
    _note_rewritten(check, where)
    for other in _owners_of_ranges(plan, diff.id_ranges, param.key, cache):
        check.problems.append(f"{where}: holds elements of {other}")
    return check


def map_words(plan, param: ParamLayout, region_map: RegionMap, cache: dict | None = None):
    """What a symbolic tensor (or a run of its rows) holds of ``param``, in the words the
    checker prints for the same ids materialized; None when it is too big to describe.

    Its regions become the oracle's pieces directly (:func:`~syncviz.check_maps.map_index`),
    so the cost follows the regions, not the elements; a map that does not compress
    is read element by element up to ``DESCRIBE_LIMIT`` elements.

    >>> from syncviz import Parallel, preset
    >>> from syncviz.run.inprocess import run_sync
    >>> spec = preset("llama3-8b").scaled()
    >>> result = run_sync(spec, Parallel(tp=2), Parallel(tp=4), layers=[0], trace=False,
    ...                   provenance="symbolic")
    >>> o_proj = result.plan.layout.params[2]  # the faithful port splits its rows, not columns
    >>> vllm = result.dst_tensors[result.plan.world_rank("dst", 0, 0)][o_proj.dst[0].name]
    >>> map_words(result.plan, o_proj, vllm.region_map().take(0, 1, 1, 3))  # rows 1-3
    'row 0: heads 8-15 row 0; rows 1-2: heads 0-15 row 1'
    """
    base = plan.id_base[param.key]
    index = map_index(region_map, base, param.global_shape)
    if index is not None:
        cols = region_map.shape[-1] if len(region_map.shape) > 1 else index.numel
        if index.numel // max(1, cols) > MAX_DESCRIBED_ROWS:  # as describe() gives up
            return f"{index.numel} elements in no regular order"
        return _shorten(describe(param, index))
    if region_map.numel > DESCRIBE_LIMIT:
        return None
    got = to_local_ids(plan, param, region_map.materialize())
    return _words(param, got.to(torch.int64), {} if cache is None else cache)


def _map_key(region_map: RegionMap, base: int) -> tuple:
    """A map's structure with ids counted from ``base``: equal keys, equal words.

    A lazy reshape is keyed by its segments (reading its eager regions costs more
    than describing it)."""
    if isinstance(region_map, ReshapedMap):
        return ("lazy", region_map.shape, *(_map_key(m, base) for m in region_map.segments))
    return ("plain", region_map.shape, _relative(region_map, base))


def _shifted(region_map: RegionMap, base: int) -> RegionMap:
    """``region_map`` (ids counted from 0, markers below 0) with its ids counted from ``base``."""
    if not base:
        return region_map
    if isinstance(region_map, ReshapedMap):
        return ReshapedMap([_shifted(m, base) for m in region_map.segments], region_map.shape)
    regions = [
        MapRegion(r.start, r.stop, r.offset + base, r.strides) if _is_ids(r) else r
        for r in region_map.regions
    ]
    return RegionMap(region_map.shape, regions, merge=False)


def _is_ids(r: MapRegion) -> bool:
    """Every value of the region is an id (none is a marker below 0)."""
    steps = zip(r.start, r.stop, r.strides, strict=True)
    return r.offset + sum(min(0, s * (b - a - 1)) for a, b, s in steps) >= 0


def _relative(region_map, base: int) -> tuple:
    """A map's regions with ids counted from ``base`` and markers (below 0) kept as they
    are, ids tagged so that one just below ``base`` never reads as a marker."""
    return tuple(
        (r.start, r.stop, ("id", r.offset - base) if r.offset >= 0 else r.offset, r.strides)
        for r in region_map.regions
    )


def _owners_of_ranges(plan, ranges, exclude: str, cache: dict) -> list[str]:
    """Parameters whose model-wide ids meet any of ``ranges`` (inclusive), except ``exclude``."""
    if not ranges:
        return []
    if ("owners", id(plan)) not in cache:
        ordered = sorted(plan.id_base, key=plan.id_base.get)
        cache[("owners", id(plan))] = ordered, [plan.id_base[k] for k in ordered]
    keys, starts = cache[("owners", id(plan))]
    found: set[str] = set()
    for low, high in ranges:
        first = max(0, bisect.bisect_right(starts, low) - 1)
        last = bisect.bisect_right(starts, high) - 1
        found.update(keys[first : last + 1])
    return [k for k in keys if k in found and k != exclude]


def _wrong_runs(param, where, got, expected, wrong, cache) -> list[str]:
    rows = wrong.reshape(wrong.shape[0], -1).any(dim=1) if wrong.dim() > 1 else wrong
    idx = torch.nonzero(rows).flatten().tolist()
    runs: list[tuple[int, int]] = []
    for i in idx:
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    unit = "expert" if got.dim() == 3 else ("row" if got.dim() == 2 else "element")
    out = []
    for a, b in runs[:MAX_RUNS]:
        span = f"{unit}s {a}-{b - 1}" if b - a > 1 else f"{unit} {a}"
        holds = _words(param, got[a:b], cache)
        wants = _words(param, expected[a:b], cache)
        out.append(f"{where}, {span}: holds {holds}, expected {wants}")
    if len(runs) > MAX_RUNS:
        out.append(f"{where}: ... {len(runs) - MAX_RUNS} more wrong {unit} runs")
    return out


def _words(param: ParamLayout, ids: torch.Tensor, cache: dict) -> str:
    # Parameters of one kind share their blocks and id space across layers, so the
    # same wrong rows recur on every layer: describe each distinct slice once.
    key = (id(param.blocks), tuple(ids.shape), hashlib.blake2b(ids.numpy().tobytes()).digest())
    text = cache.get(key)
    if text is None:
        text = cache[key] = _shorten(describe(param, ids))
    return text


def _shorten(text: str) -> str:
    parts = text.split("; ")
    if len(parts) == 1:
        return _LOCAL_PREFIX.sub("", text)
    return text


# ---------------------------------------------------------------- the one comparison, per element

RIGHT, WRONG, UNWRITTEN, FOREIGN = 0, 1, 2, 3
"""Verdicts of :func:`element_status`; the checker counts WRONG and FOREIGN as wrong."""

VERDICT_WORDS = ("right", "wrong", "never written", "another parameter's data")


@dataclass(frozen=True)
class Region:
    """A run of rows (experts, elements) of one tensor that is not right, in words."""

    unit: str  # row | expert | element
    start: int
    stop: int
    holds: str
    expected: str

    @property
    def span(self) -> str:
        if self.stop - self.start > 1:
            return f"{self.unit}s {self.start}-{self.stop - 1}"
        return f"{self.unit} {self.start}"

    @property
    def text(self) -> str:
        return f"{self.span}: holds {self.holds}, expected {self.expected}"


def element_status(actual: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """Is each element right? The checker's verdict per element (int64, codes above).

    >>> element_status(torch.tensor([0.0, 5.0, -2.0, -3.0, -1.0]),
    ...                torch.tensor([0, 4, 2, 3, -1])).tolist()
    [0, 1, 2, 3, 0]
    """
    got = actual.to(torch.int64)
    out = torch.where(got == expected, RIGHT, WRONG)
    out = torch.where(got == int(UNWRITTEN_ID), UNWRITTEN, out)
    return torch.where(got == int(FOREIGN_ID), FOREIGN, out)


def wrong_regions(
    param: ParamLayout,
    actual: torch.Tensor,
    expected: torch.Tensor,
    split: torch.Tensor | None = None,
    cache: dict | None = None,
) -> list[Region]:
    """Every run of rows (experts for 3-D tensors) that is not right, with what it holds
    and what the oracle expects there, in the checker's words.

    ``split`` (one integer per row) cuts runs where it changes, e.g. where the
    held block changes, so each region names one block.

    >>> from syncviz.spec import ModelSpec
    >>> from syncviz.oracle import model_layout
    >>> from syncviz import Parallel
    >>> spec = ModelSpec("tiny", "llama-mcore", 1, 8, 4, 2, 8, 64, head_dim=2)
    >>> qkv = model_layout(spec, Parallel(tp=1), Parallel(tp=2), layers=[0]).params[1]
    >>> want = qkv.dst[0].index.ids()
    >>> got = want[[0, 1, 2, 3, 6, 7, 4, 5]].to(torch.float64)  # K and V swapped
    >>> [r.text for r in wrong_regions(qkv, got, want, split=torch.tensor([0] * 6 + [1] * 2))]
    ['rows 4-5: holds V head 0, expected K head 0', 'rows 6-7: holds K head 0, expected V head 0']
    """
    cache = {} if cache is None else cache
    status = element_status(actual, expected)
    bad = status != RIGHT
    rows = bad.reshape(bad.shape[0], -1).any(dim=1) if bad.dim() > 1 else bad
    unit = "expert" if actual.dim() == 3 else ("row" if actual.dim() == 2 else "element")
    got = actual.to(torch.int64)
    regions = []
    for a, b in true_runs(rows, split):
        if bool((status[a:b] == UNWRITTEN).all()):
            holds = "nothing (never written)"
        else:
            holds = _region_words(param, got, a, b, cache)
        regions.append(Region(unit, a, b, holds, _region_words(param, expected, a, b, cache)))
    return regions


MAX_REGION_WORDS = 160  # longer descriptions of a region are cut to its first and last row


def _region_words(param: ParamLayout, ids: torch.Tensor, a: int, b: int, cache: dict) -> str:
    """Words for rows a..b-1; a long irregular region is named by its first and last row."""
    return region_words(lambda x, y: _words(param, ids[x:y], cache), a, b)


def region_words(rows_words, a: int, b: int) -> str:
    """Words for rows a..b-1 from ``rows_words(x, y)`` (the words of rows x..y-1, e.g.
    :func:`map_words` of a symbolic tensor's rows): a long irregular region is named by
    its first and last row.

    >>> region_words(lambda x, y: "Q head 0" if y - x > 1 else f"row {x}", 0, 4)
    'Q head 0'
    >>> region_words(lambda x, y: "x" * 200 if y - x > 1 else f"row {x}", 0, 4)
    'row 0 in its first, ..., row 3 in its last'
    """
    text = rows_words(a, b)
    if text is None or len(text) <= MAX_REGION_WORDS or b - a < 3:
        return text
    return f"{rows_words(a, a + 1)} in its first, ..., {rows_words(b - 1, b)} in its last"


def true_runs(flags: torch.Tensor, split: torch.Tensor | None) -> list[tuple[int, int]]:
    """Runs [a, b) where ``flags`` is true, cut where ``split`` changes.

    >>> flags = torch.tensor([True, True, False, True, True, True])
    >>> true_runs(flags, None), true_runs(flags, torch.tensor([0, 0, 0, 0, 1, 1]))
    ([(0, 2), (3, 6)], [(0, 2), (3, 4), (4, 6)])
    """
    runs: list[tuple[int, int]] = []
    keys = split.tolist() if split is not None else None
    for i in torch.nonzero(flags).flatten().tolist():
        same = keys is None or (i > 0 and keys[i] == keys[i - 1])
        if runs and runs[-1][1] == i and same:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


# ------------------------------------------------------------------ grouped text

LEGEND = {
    "error": "the synchronizer raised",
    "wrong": "it wrote the wrong data",
    "unwritten": "never written (the data is missing)",
    "rewritten": "written more than once",
}
"""What each status word in a report means."""

GROUP_LINES = 6  # lines shown per group of identical findings; --verbose shows all
_LAYER = re.compile(r"layers\.(\d+)\.")
_TENSOR_WHERE = re.compile(r"^dst rank (\d+) \(tp \d+\)")
_ERROR_WHERE = re.compile(r"^rank (\d+) ")
_TP = re.compile(r" tp (\d+)")


@dataclass
class _Group:
    """Parameters of one kind whose findings are the same on every layer they cover."""

    status: str
    template: str  # the key with its layer number as {layer}
    layers: list[int]
    keys: list[str]
    findings: list[tuple[str, list[int]]]  # (what, world ranks it holds for)

    def text(self, roles: dict[int, str]) -> list[str]:
        if len(self.keys) == 1:
            head = f"{self.status.upper()} {self.keys[0]}"
        else:
            name = self.template.split("{layer}.", 1)[-1]
            head = f"{self.status.upper()} layers {_spans(self.layers)}: {name}"
        lines = [head]
        for what, worlds in self.findings[:GROUP_LINES]:
            lines.append(f"  {_who(worlds, roles)}{what}")
        if len(self.findings) > GROUP_LINES:
            more = len(self.findings) - GROUP_LINES
            lines.append(f"  ... {more} more (--verbose lists them)")
        return lines


def _findings(p: ParamCheck) -> list[tuple[str, list[int]]]:
    """A parameter's lines as (what, ranks): one line per distinct text, ranks merged."""
    merged: dict[str, list[int]] = {}
    for line in p.errors:
        found = _ERROR_WHERE.match(line)
        what, world = (line[found.end() :], int(found.group(1))) if found else (line, -1)
        merged.setdefault(what, []).append(world)
    for t in p.tensors:
        for line in t.problems:
            found = _TENSOR_WHERE.match(line)
            what = line[found.end() :].lstrip(",") if found else line
            merged.setdefault(what.lstrip(":").strip(), []).append(t.rank)
    return [(what, sorted(set(worlds))) for what, worlds in merged.items()]


def _groups(bad: list[ParamCheck]) -> list[_Group]:
    """Bad parameters grouped by kind, status and findings (layer numbers aside)."""
    groups: dict[tuple, _Group] = {}
    for p in bad:
        found = _LAYER.search(p.key)
        layer = int(found.group(1)) if found else -1
        template = _LAYER.sub("layers.{layer}.", p.key, count=1)
        findings = _findings(p)
        same = tuple((_LAYER.sub("layers.{layer}.", w), tuple(r)) for w, r in findings)
        key = (p.status, template, same)
        if key not in groups:
            groups[key] = _Group(p.status, template, [], [], findings)
        groups[key].layers.append(layer)
        groups[key].keys.append(p.key)
    return list(groups.values())


def _spans(numbers: list[int]) -> str:
    """0-3,7 for [0, 1, 2, 3, 7]."""
    out: list[str] = []
    for n in sorted(numbers):
        if out and out[-1][1] == n - 1:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))  # type: ignore[arg-type]
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in out)  # type: ignore[misc]


def _split_role(name: str) -> tuple[str, int]:
    """("trainer pp 1 tp {} ep 1", 3) for "trainer pp 1 tp 3 ep 1"."""
    found = _TP.search(name)
    if found is None:
        return name, -1
    return name[: found.start()] + " tp {}" + name[found.end() :], int(found.group(1))


def _who(worlds: list[int], roles: dict[int, str]) -> str:
    """``vLLM tp 0-15 (ranks 8-23): `` for ranks differing in tp only, else each by name."""
    if worlds == [-1] or not roles:
        return ""
    if len(worlds) == 1:
        return f"{roles.get(worlds[0], 'rank')} (rank {worlds[0]}): "
    split = [_split_role(roles.get(w, "rank")) for w in worlds]
    stems = {stem for stem, _ in split}
    if len(stems) == 1 and all(tp >= 0 for _, tp in split):
        tps = _spans([tp for _, tp in split])
        return f"{stems.pop().format(tps)} (ranks {_spans(worlds)}): "
    return ", ".join(f"{roles.get(w, 'rank')} (rank {w})" for w in worlds) + ": "


def _ranks_legend(roles: dict[int, str]) -> str:
    """``trainer tp 0-7 = ranks 0-7; vLLM tp 0-15 = ranks 8-23``."""
    by_stem: dict[str, list[tuple[int, int]]] = {}
    for world, name in sorted(roles.items()):
        stem, tp = _split_role(name)
        by_stem.setdefault(stem, []).append((world, tp))
    parts = []
    for stem, members in by_stem.items():
        tps, worlds = [tp for _, tp in members], [w for w, _ in members]
        word = "rank" if len(worlds) == 1 else "ranks"
        parts.append(f"{stem.format(_spans(tps))} = {word} {_spans(worlds)}")
    return "; ".join(parts)
