"""The checker: every destination tensor against the oracle, explained in words.

>>> from syncviz import Parallel, preset
>>> from syncviz.run.inprocess import run_sync
>>> result = run_sync(preset("llama2-7b").scaled(), Parallel(tp=2), Parallel(tp=2), layers=[0])
>>> report = check(result)
>>> report.ok, report.counts()
(True, {'ok': 6})

Each destination tensor's map is compared with the oracle's by
:func:`~syncviz.compare.compare_maps`, which overlays their regions and never
reads an element. What is wrong becomes :class:`~syncviz.findings.Finding` data
(rank, span, what it holds, what it should hold), worded by
:mod:`syncviz.findings`; the wrong rows are described from their regions
(:func:`~syncviz.oracle.index.map_pieces` gives the oracle's pieces, which
:func:`map_words` puts in words). The comparison's and the words' names are
importable from here too.
"""

from __future__ import annotations

import bisect
import hashlib
import html
import json
import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch

from syncviz.compare import (
    MapDiff,
    compare_maps,
    element_status,
    true_runs,
    wrong_columns,
)
from syncviz.findings import (
    LEGEND,
    Finding,
    Region,
    Role,
    Span,
    drop_local_place,
    groups,
    more_runs,
    ranks_legend,
    region_words,
    tell,
    who,
)
from syncviz.oracle import ParamLayout, describe
from syncviz.oracle.describe import block_names, describe_index
from syncviz.oracle.dest import experts_of_rank
from syncviz.oracle.index import MAX_PIECES, Box, map_pieces
from syncviz.progress import progress
from syncviz.provenance import RegionMap
from syncviz.provenance.regions import ReshapedMap
from syncviz.run.result import SyncResult
from syncviz.run.values import UNWRITTEN_ID, to_local_ids
from syncviz.spec import ModelSpec

__all__ = [  # the checker's own names, and those of the comparison and the words it re-exports
    "LEGEND", "MAX_RUNS", "CheckReport",
    "Finding", "MapDiff", "ParamCheck", "Region", "Role", "Span", "TensorCheck", "check",
    "column_blocks", "column_regions", "column_shard", "compare_maps", "element_status",
    "findings_words", "map_words", "region_words", "true_runs",
    "wrong_columns",
]  # fmt: skip

MAX_RUNS = 4  # wrong row runs spelled out per tensor; the rest are counted
DESCRIBE_LIMIT = 2**24  # elements of one wrong run materialized when its map does not compress


@dataclass
class TensorCheck:
    """One destination rank's tensor of one parameter, and its findings."""

    rank: int
    tp: int
    status: str  # ok | wrong | unwritten | rewritten
    wrong: int = 0
    unwritten: int = 0
    writes: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """The findings, one line each."""
        return [f.line() for f in self.findings]

    def as_dict(self) -> dict[str, Any]:
        """As the JSON report writes it: the findings as lines."""
        keep = ("rank", "tp", "status", "wrong", "unwritten", "writes")
        return {**{k: getattr(self, k) for k in keep}, "problems": self.problems}


@dataclass
class ParamCheck:
    """One vLLM parameter across all destination ranks, plus synchronizer errors."""

    key: str
    status: str  # ok | wrong | error
    tensors: list[TensorCheck] = field(default_factory=list)
    errors: list[Finding] = field(default_factory=list)
    layer: int | None = None  # its global layer (None outside the layers)

    def findings(self) -> list[Finding]:
        """The synchronizer's errors, then each tensor's findings."""
        return [*self.errors, *(f for t in self.tensors for f in t.findings)]

    def lines(self) -> list[str]:
        return [f"  {f.line()}" for f in self.findings()]

    def as_dict(self) -> dict[str, Any]:
        """As the JSON report writes it: the findings as lines, the layer left out."""
        return {
            "key": self.key,
            "status": self.status,
            "tensors": [t.as_dict() for t in self.tensors],
            "errors": [f.line() for f in self.errors],
        }


@dataclass
class CheckReport:
    """OK or the wrong blocks, per parameter; shows itself as text, HTML and JSON."""

    model: str
    src: str
    dst: str
    synchronizer: str
    params: list[ParamCheck]
    flow_errors: list[str] = field(default_factory=list)
    roles: dict[int, Role] = field(default_factory=dict)  # world rank -> vLLM tp 3
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

    def finding_lines(self, p: ParamCheck) -> list[str]:
        """Parameter ``p``'s findings as the text says them: one line per distinct finding,
        its ranks named by role (``vLLM tp 0 (rank 1): columns 0-3 ...``); without roles
        (a report of no plan), its tensors' own lines.

        >>> from syncviz.run.inprocess import tiny_run
        >>> report = check(tiny_run())
        >>> o_proj = report.bad()[2]  # the faithful port splits it flat
        >>> print(o_proj.lines()[0].strip()); print(report.finding_lines(o_proj)[0])
        dst rank 1 (tp 0), columns 0-3 (heads 0-1): hold heads 0-3 rows 0-3, expected heads 0-1
        vLLM tp 0 (rank 1): columns 0-3 (heads 0-1): hold heads 0-3 rows 0-3, expected heads 0-1
        """
        if not self.roles:
            return [f.line() for f in p.findings()]
        told = tell(p.findings(), p.layer, by_role=True)
        return [f"{who(list(t.worlds), self.roles)}{t.words}" for t in told]

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
            lines.append("ranks: " + ranks_legend(self.roles))
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
                lines += [f"  {line}" for line in self.finding_lines(p)]
            return "\n".join(lines)
        for group in groups(self.bad(), by_role=bool(self.roles)):
            lines += group.text(self.roles)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()

    def as_dict(self) -> dict[str, Any]:
        """The report as plain data, as JSON writes it (findings and roles in words)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "params":
                value = [p.as_dict() for p in value]
            elif f.name == "roles":
                value = {world: str(role) for world, role in value.items()}
            out[f.name] = value
        return out

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=1)

    def _repr_html_(self) -> str:
        color = "#1a7f37" if self.ok else "#cf222e"
        esc = html.escape
        rows = []
        for p in self.params:
            mark = "&#10003;" if p.status == "ok" else esc(p.status.upper())
            detail = "<br>".join(esc(line) for line in self.finding_lines(p))
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
    by_param, flow_errors = _errors(result)
    params = []
    words: dict[tuple, Any] = {}  # descriptions of wrong slices, shared across layers
    for param in progress(plan.layout, "check", enabled=show_progress):
        tensors = []
        for t in param.dst:
            world = plan.world_rank("dst", t.pp, t.tp)
            raw = result.dst_tensors[world][t.name]
            writes = result.writes(world).get(t.name, 0)
            checked = _check_tensor(plan, param, t, world, raw, writes, words)
            if checked.status != "ok" and plan.dst.ep > 1 and param.kind.startswith("experts_"):
                checked.findings.extend(_placement(plan, param, t.tp, world, raw))
            tensors.append(checked)
        errors = by_param.get(param.key, [])
        status = (
            "error" if errors else ("ok" if all(c.status == "ok" for c in tensors) else "wrong")
        )
        params.append(ParamCheck(param.key, status, tensors, errors, param.layer))
    return CheckReport(
        real.name if real is not None else plan.spec.name,
        plan.src.sizes_text(),
        plan.dst.sizes_text(),
        synchronizer,
        params,
        flow_errors,
        {r.world: plan.role(r.world) for r in plan.roles},
        _scaled_sizes(real, plan.spec) if real is not None else [],
    )


def _placement(plan, param: ParamLayout, tp: int, world: int, raw) -> list[Finding]:
    """Under destination expert parallel: the experts a rank holds against those its
    placement gives it, naming the placement it holds instead when it is one.

    Each local expert of ``raw`` (a map of model-wide ids) is named by its first element.
    """
    experts, per = param.global_shape[0], math.prod(param.global_shape[1:])
    first = raw.region_map()
    for dim in range(1, len(param.global_shape)):  # 3-D weights and 2-D biases alike
        first = first.slice(dim, 0, 1)
    firsts = first.materialize().flatten()
    local = (firsts - plan.id_base[param.key]).tolist()
    held = [int(i) // per if 0 <= i < experts * per else -1 for i in local]
    ep, placement = plan.dst.ep, plan.dst.expert_placement
    want = experts_of_rank(experts, ep, tp, placement)
    if held == want:
        return []
    note = (
        f"holds experts {_expert_list(held)}; the {placement}"
        f" placement over dst ep {ep} gives it experts {_expert_list(want)}"
    )
    others = [p for p in ("linear", "round_robin") if p != placement]
    for other in others:
        if held == experts_of_rank(experts, ep, tp, other):
            note += f" (it holds the {other} placement's)"
    return [Finding(param.key, world, "wrong", tp, note=note)]


def _expert_list(experts: list[int]) -> str:
    return ", ".join("?" if e < 0 else str(e) for e in experts)


def _errors(result: SyncResult) -> tuple[dict[str, list[Finding]], list[str]]:
    """The run's errors: per parameter key, as findings, and the flow's, in words."""
    by_param: dict[str, list[Finding]] = {}
    flow_errors = []
    keys = {p.key for p in result.plan.layout}
    for f in result.findings:
        if f.param not in keys:
            where = "" if f.param == "*" else f" {f.param}"
            flow_errors.append(f"rank {f.rank} {f.stage}{where}: {f.message}")
        else:
            found = Finding(f.param, f.rank, "error", stage=f.stage, note=f.message)
            by_param.setdefault(f.param, []).append(found)
    return by_param, flow_errors


def findings_words(result: SyncResult) -> tuple[dict[str, list[str]], list[str]]:
    """The run's errors as the report words them: per parameter key, and the flow's."""
    by_param, flow_errors = _errors(result)
    return {k: [f.line() for f in found] for k, found in by_param.items()}, flow_errors


def _scaled_sizes(real: ModelSpec, used: ModelSpec) -> list[str]:
    """``name real -> scaled`` for every size the scaled run changed."""
    names = ("hidden_size", "head_dim", "ffn_hidden_size", "moe_ffn_hidden_size",
             "shared_expert_ffn_hidden_size", "vocab_size", "num_layers")  # fmt: skip
    return [
        f"{n} {getattr(real, n)} -> {getattr(used, n)}"
        for n in names
        if getattr(real, n) != getattr(used, n)
    ]


def _check_tensor(plan, param, t, world, raw, writes, cache) -> TensorCheck:
    """One destination tensor (a map) against the oracle's: regions overlaid, as findings.

    The wrong rows (at most ``MAX_RUNS`` runs of them) are described from their
    maps (:func:`map_words`); no element is read unless a run does not compress.
    """
    base = plan.id_base[param.key]
    expected = t.index.shifted(base)
    # Layers of one kind share the oracle's maps and differ only by their ids' base: each
    # expected map is keyed, and each pair of maps compared, once (keys count ids from base).
    want_key = cache.get(("want", id(t.index)))
    if want_key is None:
        want_key = cache[("want", id(t.index))] = _map_key(expected, base)
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

    def finding(status: str = "wrong", **words) -> Finding:
        return Finding(param.key, world, status, t.tp, **words)

    if check.unwritten:
        check.status = "unwritten"
        never = "never written" if check.unwritten == raw.numel() else None
        note = never or f"{check.unwritten} elements never written"
        check.findings.append(finding("unwritten", note=note))
    columns = None
    if check.wrong:
        check.status = "wrong"
        columns = column_regions(plan, param, t.index, got_map, cache)
    if columns is not None:  # a row-parallel shard: its column blocks, as the input splits
        for region in columns[:MAX_RUNS]:
            found = finding(span=region.where, holds=region.holds, expected=str(region.expected))
            check.findings.append(found)
        if len(columns) > MAX_RUNS:
            check.findings.append(finding(note=more_runs(len(columns) - MAX_RUNS, "column")))
    elif check.wrong:
        unit = "expert" if raw.dim() == 3 else ("row" if raw.dim() == 2 else "element")
        row = math.prod(raw.shape[1:]) if raw.dim() else 1
        runs = diff.wrong_rows
        for a, b in runs[:MAX_RUNS]:
            span = Span(unit, a, b - 1)
            # Layers of one kind share blocks and local ids: the same wrong rows recur on
            # every layer, so their words are cached by the maps' shape relative to base.
            key = ("map", id(param.blocks), a, b, got_key, want_key)
            if key not in cache:
                got_rows, want_rows = got_map.take(0, a, 1, b - a), expected.take(0, a, 1, b - a)
                holds = map_words(plan, param, got_rows, cache, first=a)
                wants = holds and map_words(plan, param, want_rows, cache, first=a)
                cache[key] = (holds, wants)
            holds, wants = cache[key]
            if holds is None:
                many = f"other ids ({(b - a) * row} elements, too many to describe)"
                check.findings.append(finding(span=span, holds=many))
                continue
            check.findings.append(finding(span=span, holds=holds, expected=str(wants)))
        if len(runs) > MAX_RUNS:
            check.findings.append(finding(note=more_runs(len(runs) - MAX_RUNS, unit)))
    if check.writes > 1:
        check.status = "rewritten" if check.status == "ok" else check.status
        check.findings.append(finding("rewritten", note=f"written {check.writes} times"))
    for other in _owners_of_ranges(plan, diff.id_ranges, param.key, cache):
        layer = plan.layout.param(other).layer
        mentions = () if layer is None else (layer,)
        check.findings.append(finding(holds=f"elements of {other}", layers=mentions))
    return check


def map_words(
    plan, param: ParamLayout, region_map: RegionMap, cache: dict | None = None, first: int = 0
):
    """What a destination map (or a run of its rows from row ``first``) holds of
    ``param``, in the checker's words (rows numbered as the rank's); None when it is too
    big to describe.

    Its regions become the oracle's pieces directly (:func:`~syncviz.oracle.index.map_pieces`),
    so the cost follows the regions, not the elements; a map that does not compress
    is read element by element up to ``DESCRIBE_LIMIT`` elements.

    >>> from syncviz import Parallel, preset
    >>> from syncviz.run.inprocess import run_sync
    >>> spec = preset("llama3-8b").scaled()
    >>> result = run_sync(spec, Parallel(tp=2), Parallel(tp=4), layers=[0], trace=False)
    >>> o_proj = result.plan.layout.params[2]  # the faithful port splits its rows, not columns
    >>> vllm = result.dst_tensors[result.plan.world_rank("dst", 0, 0)][o_proj.dst[0].name]
    >>> map_words(result.plan, o_proj, vllm.region_map().take(0, 1, 1, 3), first=1)  # rows 1-3
    'row 1: heads 8-15 row 0; rows 2-3: heads 0-15 row 1'
    """
    base = plan.id_base[param.key]
    pieces = map_pieces(region_map, param.global_shape, base)
    if pieces is not None:
        numel = region_map.numel
        cols = region_map.shape[-1] if len(region_map.shape) > 1 else numel
        if numel // max(1, cols) > MAX_PIECES:  # as ids_pieces gives up: no regular order
            return f"{numel} elements in no regular order"
        return drop_local_place(describe_index(pieces, region_map.shape, param.blocks, first))
    if region_map.numel > DESCRIBE_LIMIT:
        return None
    got = to_local_ids(plan, param, region_map.materialize())
    return _words(param, got.to(torch.int64), {} if cache is None else cache, first)


def column_shard(param: ParamLayout, index: RegionMap) -> tuple[int, int] | None:
    """The global columns ``first .. stop - 1`` that a row-parallel shard holds (every
    row of them, in order), or None for any other shard.

    A row-parallel weight (o_proj, down_proj) is split by its input columns, so its
    findings are worded by column blocks and the heads they carry.

    >>> from syncviz import Parallel, preset
    >>> from syncviz.oracle import model_layout
    >>> layout = model_layout(preset("llama3-8b").scaled(), Parallel(tp=2), Parallel(tp=4))
    >>> o_proj, qkv = layout.param("model.model.layers.0.self_attn.o_proj.weight"), layout.params[1]
    >>> column_shard(o_proj, o_proj.dst[1].index), column_shard(qkv, qkv.dst[1].index)
    ((32, 64), None)
    """
    shape = tuple(param.global_shape)
    if len(shape) != 2 or len(index.shape) != 2 or index.shape[0] != shape[0]:
        return None
    regions = index.regions
    rows, width = index.shape
    if len(regions) != 1 or width == shape[1]:
        return None
    # One box of whole rows read in order: ids first + row * width_of_global + col.
    first = regions[0].offset
    if regions[0].strides != (shape[1] if rows > 1 else 0, 1 if width > 1 else 0):
        return None
    if first != int(first) or not 0 <= first <= shape[1] - width:
        return None
    return int(first), int(first) + width


def column_regions(
    plan,
    param: ParamLayout,
    index: RegionMap,
    got_map: RegionMap,
    cache: dict | None = None,
    *,
    unwritten: bool = False,
) -> list[Region] | None:
    """The wrong column runs of a row-parallel shard (:func:`column_shard`) in words: the
    local columns, the blocks they should carry, what they hold and what they should;
    None for any other shard. The checker's lines and the pictures' regions both come
    from here, so a finding reads the same in ``check``, ``render`` and the Explorer.
    ``unwritten``: never-written columns are runs too (a picture marks them; the
    checker says "never written" apart).

    >>> from syncviz import Parallel, preset
    >>> from syncviz.run.inprocess import run_sync
    >>> spec = preset("llama3-8b").scaled()
    >>> result = run_sync(spec, Parallel(tp=2), Parallel(tp=4), layers=[0], trace=False)
    >>> o_proj = result.plan.layout.params[2]  # the faithful port splits its rows, not columns
    >>> vllm = result.dst_tensors[result.plan.world_rank("dst", 0, 1)][o_proj.dst[1].name]
    >>> print(column_regions(result.plan, o_proj, o_proj.dst[1].index, vllm.region_map())[0].text)
    columns 0-31 (heads 8-15): hold heads 0-15 rows 64-127, expected heads 8-15
    """
    columns = column_shard(param, index)
    if columns is None:
        return None
    cache = {} if cache is None else cache
    base = plan.id_base[param.key]
    expected = index.shifted(base)
    key = ("columns", id(param.blocks), _map_key(got_map, base), id(index), unwritten)
    if key not in cache:
        cache[key] = wrong_columns(got_map, expected, unwritten=unwritten)
    regions = []
    width = got_map.shape[1]
    for a, b in cache[key]:
        whole = (a, b) == (0, width)  # the usual run: a lazy map is worded as it is, unsliced
        got = got_map if whole else got_map.slice(1, a, b)
        want = expected if whole else expected.slice(1, a, b)
        blocks = column_blocks(param, columns[0] + a, columns[0] + b)
        if _never_written(got):
            holds = "nothing (never written)"
        else:
            holds = map_words(plan, param, got, cache)
            many = f"other ids ({got.numel} elements, too many to describe)"
            holds = many if holds is None else holds
        regions.append(Region("column", a, b, holds, map_words(plan, param, want, cache), blocks))
    return regions


def _never_written(m: RegionMap) -> bool:
    """Whether every element of ``m`` is the never-written marker (a lazy reshape asked of
    its segments: its own regions are made only when read)."""
    return all(r.is_constant and r.offset == UNWRITTEN_ID for p in m.segments for r in p.regions)


def column_blocks(param: ParamLayout, first: int, stop: int) -> str:
    """The blocks that global columns ``first .. stop - 1`` carry, by name ('' for a
    parameter of one block: the columns say it all).

    >>> from syncviz import Parallel, preset
    >>> from syncviz.oracle import model_layout
    >>> layout = model_layout(preset("llama3-8b").scaled(), Parallel(tp=2), Parallel(tp=4))
    >>> column_blocks(layout.param("model.model.layers.0.self_attn.o_proj.weight"), 30, 64)
    'heads 7-15'
    """
    if len(param.blocks) < 2:
        return ""
    rows = param.global_shape[0]
    return block_names(Box((0, first), (rows, stop)), param.blocks)


def _map_key(region_map: RegionMap, base: int) -> tuple:
    """A map's structure with ids counted from ``base``: equal keys, equal words.

    A lazy reshape is keyed by its segments (reading its eager regions costs more
    than describing it)."""
    if isinstance(region_map, ReshapedMap):
        return ("lazy", region_map.shape, *(_map_key(m, base) for m in region_map.segments))
    return ("plain", region_map.shape, _relative(region_map, base))


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


def _words(param: ParamLayout, ids: torch.Tensor, cache: dict, first: int = 0) -> str:
    # Parameters of one kind share their blocks and id space across layers, so the
    # same wrong rows recur on every layer: describe each distinct slice once.
    digest = hashlib.blake2b(ids.numpy().tobytes()).digest()
    key = (id(param.blocks), tuple(ids.shape), first, digest)
    text = cache.get(key)
    if text is None:
        text = cache[key] = drop_local_place(describe(param, ids, first=first))
    return text
