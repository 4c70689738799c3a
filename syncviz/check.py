"""The checker: every destination tensor against the oracle, explained in words.

>>> from syncviz import Parallel, preset
>>> from syncviz.run.inprocess import run_sync
>>> result = run_sync(preset("llama2-7b").scaled(), Parallel(tp=2), Parallel(tp=2), layers=[0])
>>> report = check(result)
>>> report.ok, report.counts()
(True, {'ok': 6})

Every destination tensor and the oracle's expectation are
:class:`~syncviz.provenance.RegionMap` of model-wide ids, so the comparison
(:func:`compare_maps`) overlays their regions (a handful each) and never reads an
element: a whole model at real sizes is compared in milliseconds, with exact
counts of wrong elements. The wrong rows are described from their regions too
(:func:`map_index` gives the oracle's pieces, which :func:`map_words` puts in words).

>>> from syncviz.provenance import RegionMap
>>> want = RegionMap.affine((4, 3), 0, (3, 1))
>>> got = RegionMap.cat([want.slice(0, 2, 4), want.slice(0, 0, 2)], 0)  # halves swapped
>>> diff = compare_maps(got, want)
>>> diff.wrong, diff.unwritten, diff.wrong_rows
(12, 0, [(0, 4)])
"""

from __future__ import annotations

import bisect
import hashlib
import html
import itertools
import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import torch

from syncviz.geometry import meetings
from syncviz.oracle import ParamLayout, describe
from syncviz.oracle.describe import block_names
from syncviz.oracle.dest import experts_of_rank
from syncviz.oracle.index import Box, IndexMap, Pad, Piece, Unknown, affine_pieces, flat_pieces
from syncviz.progress import progress
from syncviz.provenance import Region as MapRegion
from syncviz.provenance import RegionMap, row_major
from syncviz.provenance.regions import ReshapedMap
from syncviz.run.result import SyncResult
from syncviz.run.symbolic_state import shard_map
from syncviz.run.values import FOREIGN_ID, PADDING_ID, UNWRITTEN_ID, to_local_ids
from syncviz.spec import ModelSpec

MAX_RUNS = 4  # wrong row runs spelled out per tensor; the rest are counted
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
            return [line.strip() for line in p.lines()]
        return [f"{_who(worlds, self.roles)}{what}" for what, worlds in _findings(p)]

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
                lines += [f"  {line}" for line in self.finding_lines(p)]
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
    by_param, flow_errors = findings_words(result)
    params = []
    words: dict[tuple, str] = {}  # descriptions of wrong slices, shared across layers
    for param in progress(plan.layout, "check", enabled=show_progress):
        tensors = []
        for t in param.dst:
            world = plan.world_rank("dst", t.pp, t.tp)
            raw = result.dst_tensors[world][t.name]
            writes = result.writes(world).get(t.name, 0)
            checked = _check_tensor(plan, param, t, world, raw, writes, words)
            if checked.status != "ok" and plan.dst.ep > 1 and param.kind.startswith("experts_"):
                checked.problems.extend(_placement_words(plan, param, t.tp, world, raw))
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


def _placement_words(plan, param: ParamLayout, tp: int, world: int, raw) -> list[str]:
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


def _check_tensor(plan, param, t, world, raw, writes, cache) -> TensorCheck:
    """One destination tensor (a map) against the oracle's: regions overlaid, in words.

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
    columns = None
    if check.wrong:
        check.status = "wrong"
        columns = column_regions(plan, param, t.index, got_map, cache)
    if columns is not None:  # a row-parallel shard: its column blocks, as the input splits
        for region in columns[:MAX_RUNS]:
            check.problems.append(f"{where}, {region.text}")
        if len(columns) > MAX_RUNS:
            more = len(columns) - MAX_RUNS
            check.problems.append(f"{where}: ... {more} more wrong column runs")
    elif check.wrong:
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
                holds = map_words(plan, param, got_rows, cache, first=a)
                wants = holds and map_words(plan, param, want_rows, cache, first=a)
                cache[key] = (holds, wants)
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


def map_words(
    plan, param: ParamLayout, region_map: RegionMap, cache: dict | None = None, first: int = 0
):
    """What a destination map (or a run of its rows from row ``first``) holds of
    ``param``, in the checker's words (rows numbered as the rank's); None when it is too
    big to describe.

    Its regions become the oracle's pieces directly (:func:`map_index`),
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
    index = map_index(region_map, base, param.global_shape)
    if index is not None:
        cols = region_map.shape[-1] if len(region_map.shape) > 1 else index.numel
        if index.numel // max(1, cols) > MAX_DESCRIBED_ROWS:  # as describe() gives up
            return f"{index.numel} elements in no regular order"
        return _shorten(describe(param, index, first=first))
    if region_map.numel > DESCRIBE_LIMIT:
        return None
    got = to_local_ids(plan, param, region_map.materialize())
    return _words(param, got.to(torch.int64), {} if cache is None else cache, first)


def column_shard(param: ParamLayout, index: IndexMap) -> tuple[int, int] | None:
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
    if len(shape) != 2 or len(index.pieces) != 1 or not isinstance(index.pieces[0], Box):
        return None
    box = index.pieces[0]
    first, stop = box.start[1], box.stop[1]
    whole_rows = (box.start[0], box.stop[0]) == (0, shape[0])
    if not whole_rows or box.is_transposed or (first, stop) == (0, shape[1]):
        return None
    return (first, stop) if tuple(index.shape) == (shape[0], stop - first) else None


def column_regions(
    plan,
    param: ParamLayout,
    index: IndexMap,
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
    expected = shard_map(index, base)
    key = ("columns", id(param.blocks), _map_key(got_map, base), index, unwritten)
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
    parts = m.segments if isinstance(m, ReshapedMap) else (m,)
    return all(r.is_constant and r.offset == UNWRITTEN_ID for p in parts for r in p.regions)


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


def wrong_columns(
    got: RegionMap, expected: RegionMap, *, unwritten: bool = False
) -> list[tuple[int, int]]:
    """Runs ``[a, b)`` of the columns of a 2-D map where any element differs from
    ``expected``'s (never-written elements aside, as they are counted apart, unless
    ``unwritten``), from the boxes where their regions meet (a lazy reshape seen in the
    shape :func:`compare_maps` compares it in, unfragmented): in each, the two differ by
    one affine function, and a column is right where it is zero down every row.

    >>> want = RegionMap.affine((4, 4), 0, (4, 1))
    >>> got = RegionMap.cat([want.slice(1, 0, 2), want.slice(1, 3, 4), want.slice(1, 2, 3)], 1)
    >>> wrong_columns(got, want)  # columns 2 and 3 swapped
    [(2, 4)]
    >>> wrong_columns(RegionMap.affine((4, 4), 0, (1, 4)), want)  # transposed: the diagonal
    [(0, 4)]
    """
    a, b, rows = _common_view(got, expected)  # a lazy reshape is seen unfragmented
    if a is got and len(b.regions) == 1:  # a plain map against one region: all at once
        return _wrong_columns_of_one(got, b.regions[0], unwritten)
    k = len(rows)
    inner = a.shape[k:]  # the columns, split as the common shape splits them
    steps = row_major(inner)
    wrong = torch.zeros(math.prod(inner), dtype=torch.bool)
    for ra, rb, lo, hi in meetings(a.regions, b.regions):
        va, vb = ra.value_at(lo), rb.value_at(lo)
        ext = [y - x for x, y in zip(lo, hi, strict=True)]
        delta = [
            sa - sb if n > 1 else 0 for sa, sb, n in zip(ra.strides, rb.strides, ext, strict=True)
        ]
        columns = torch.zeros((1,), dtype=torch.int64)  # the box's columns, and the gap there
        gap = torch.full((1,), int(va - vb), dtype=torch.int64)
        for d in range(k, len(ext)):
            at = torch.arange(ext[d], dtype=torch.int64)
            columns = (columns[:, None] + (at + lo[d]) * steps[d - k]).reshape(-1)
            gap = (gap[:, None] + at * delta[d]).reshape(-1)
        if ra.is_constant and va == UNWRITTEN_ID:
            wrong[columns] |= unwritten
        elif any(delta[:k]):  # rows move apart: no column agrees down every row
            wrong[columns] = True
        else:
            wrong[columns] |= gap != 0
    return [(x, y + 1) for x, y in _true_spans(wrong)]


def _true_spans(flags: torch.Tensor) -> list[tuple[int, int]]:
    """First and last index of each run of true ``flags``."""
    idx = torch.nonzero(flags).reshape(-1)
    if not idx.numel():
        return []
    cut = torch.nonzero(idx[1:] - idx[:-1] > 1).reshape(-1)
    firsts = torch.cat([idx[:1], idx[cut + 1]]).tolist()
    lasts = torch.cat([idx[cut], idx[-1:]]).tolist()
    return list(zip(firsts, lasts, strict=True))


def _wrong_columns_of_one(
    got: RegionMap, want: MapRegion, unwritten: bool
) -> list[tuple[int, int]]:
    """:func:`wrong_columns` against one region covering the map (a row-parallel shard's
    expected ids), every region of ``got`` at once (a real-size one has thousands)."""
    regions = got.regions
    if not regions:
        return []
    start = torch.tensor([r.start for r in regions], dtype=torch.int64)
    stop = torch.tensor([r.stop for r in regions], dtype=torch.int64)
    strides = torch.tensor([r.strides for r in regions], dtype=torch.int64)
    va = torch.tensor([r.offset for r in regions], dtype=torch.float64).to(torch.int64)
    ext = stop - start
    vb = int(want.offset) + start[:, 0] * want.strides[0] + start[:, 1] * want.strides[1]
    down = torch.where(ext[:, 0] > 1, strides[:, 0] - want.strides[0], 0)
    across = torch.where(ext[:, 1] > 1, strides[:, 1] - want.strides[1], 0)
    never = (strides == 0).all(1) & (va == int(UNWRITTEN_ID))
    wrong = (down != 0) | (across != 0) | (va != vb)
    # Where only the step along a row differs, the two agree down at most one column: j.
    gap, safe = vb - va, torch.where(across != 0, across, 1)
    j = torch.div(gap, safe, rounding_mode="floor")
    lone = (down == 0) & (across != 0) & (j * across == gap) & (j >= 0) & (j < ext[:, 1])
    keep = (wrong & ~never) | (never & unwritten)
    runs: list[tuple[int, int]] = []
    picked = torch.nonzero(keep).reshape(-1)
    columns = torch.stack([start[picked, 1], stop[picked, 1], lone[picked].long(), j[picked]])
    for c0, c1, one, at in columns.t().tolist():
        if one:
            runs += [(x, y) for x, y in ((c0, c0 + at), (c0 + at + 1, c1)) if x < y]
        else:
            runs.append((c0, c1))
    return _merge_runs(runs)


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


def _words(param: ParamLayout, ids: torch.Tensor, cache: dict, first: int = 0) -> str:
    # Parameters of one kind share their blocks and id space across layers, so the
    # same wrong rows recur on every layer: describe each distinct slice once.
    digest = hashlib.blake2b(ids.numpy().tobytes()).digest()
    key = (id(param.blocks), tuple(ids.shape), first, digest)
    text = cache.get(key)
    if text is None:
        text = cache[key] = _shorten(describe(param, ids, first=first))
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

    unit: str  # row | expert | element | column (a row-parallel shard's)
    start: int
    stop: int
    holds: str
    expected: str
    blocks: str = ""  # the blocks these rows or columns should carry, when worth saying

    @property
    def span(self) -> str:
        where = f"{self.unit} {self.start}"
        if self.stop - self.start > 1:
            where = f"{self.unit}s {self.start}-{self.stop - 1}"
        return f"{where} ({self.blocks})" if self.blocks else where

    @property
    def text(self) -> str:
        verb = "hold" if self.unit == "column" and self.stop - self.start > 1 else "holds"
        return f"{self.span}: {verb} {self.holds}, expected {self.expected}"


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


MAX_REGION_WORDS = 160  # longer descriptions of a region are cut to its first and last row


def region_words(rows_words, a: int, b: int) -> str:
    """Words for rows a..b-1 from ``rows_words(x, y)`` (the words of rows x..y-1, e.g.
    :func:`map_words` of a map's rows): a long irregular region is named by
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


# ---------------------------------------------------------------- map against map

MAX_PIECES = 250_000  # as IndexMap.from_ids: past this a map is not worth describing
CHUNK_ELEMENTS = 2**16  # an irregular chunk up to this size is read element by element


@dataclass
class MapDiff:
    """Where two maps differ: elements never written, elements wrong, wrong dim-0 runs.

    ``wrong`` counts the elements whose ids differ, exactly, whatever the dims the
    blocks differ along. ``id_ranges`` are the (lowest, highest) ids held by the
    wrong blocks.
    """

    unwritten: int = 0
    wrong: int = 0
    wrong_rows: list[tuple[int, int]] = field(default_factory=list)
    id_ranges: list[tuple[float, float]] = field(default_factory=list)


EQUAL_SCAN = 2**22  # candidate points scanned at once when counting equal elements


def compare_maps(actual: RegionMap, expected: RegionMap) -> MapDiff:
    """Overlay ``actual`` on ``expected`` (same shape) and collect the differences.

    A lazy reshape (:class:`~syncviz.provenance.regions.ReshapedMap`) is compared in
    the finest shape both maps refine to, where neither side fragments.

    >>> want = RegionMap.affine((4, 4), 0, (4, 1))
    >>> got = RegionMap.cat([want.slice(1, 2, 4), want.slice(1, 0, 2)], 1)  # columns swapped
    >>> diff = compare_maps(got, want)
    >>> diff.wrong, diff.wrong_rows
    (16, [(0, 4)])
    >>> half = RegionMap.affine((64, 8), 0, (16, 1)).reshape((128, 4))  # lazy: 1 segment
    >>> diff = compare_maps(half, RegionMap.affine((128, 4), 0, (8, 1)))
    >>> type(half).__name__, diff.wrong, diff.wrong_rows[:2], len(diff.wrong_rows)
    ('ReshapedMap', 256, [(1, 2), (3, 4)], 64)
    """
    shape = expected.shape
    a, b, row_shape = _common_view(actual, expected)
    diff = MapDiff()
    rows: list[tuple[int, int]] = []
    for ra, rb, lo, hi in meetings(a.regions, b.regions):
        _compare_piece(ra, rb, lo, hi, row_shape, diff, rows)
    diff.wrong_rows = _merge_runs(rows) if shape else ([(0, 1)] if diff.wrong else [])
    return diff


def _common_view(actual: RegionMap, expected: RegionMap):
    """Both maps in one shape, and the leading dims of it that index ``expected``'s rows.

    Plain maps are compared as they are. A lazy reshape is seen in the finest
    shape that refines both its segment's shape and the tensor's: getting there
    only splits dims, so no side fragments.
    """
    shape = expected.shape
    plain = (actual, expected, shape[:1])
    lazy = [m for m in (actual, expected) if isinstance(m, ReshapedMap)]
    if not lazy or not shape:
        return plain
    if any(len(m.segments) != 1 for m in lazy):
        return plain
    shapes = [m.segments[0].shape for m in lazy] + [shape]
    common = _refinement(shapes)
    if common is None:
        return plain
    views = [
        (m.segments[0] if isinstance(m, ReshapedMap) else m)._reshape_eager(common)
        for m in (actual, expected)
    ]
    inner = math.prod(shape[1:])
    k = len(common) - sum(1 for j in range(len(common)) if math.prod(common[j:]) <= inner)
    return views[0], views[1], common[:k]


def _refinement(shapes: Sequence[tuple[int, ...]]) -> tuple[int, ...] | None:
    """The coarsest shape whose dims split every one of ``shapes`` (same numel), or None.

    >>> _refinement([(2048, 2048), (4096, 1024)])
    (2048, 2, 1024)
    >>> _refinement([(3, 4), (2, 6)]) is None
    True
    """
    cuts = {math.prod(s[j:]) for s in shapes for j in range(len(s) + 1)}
    ordered = sorted(cuts)
    if ordered[0] == 0:
        return None
    out = []
    for small, big in itertools.pairwise(ordered):
        if big % small:
            return None
        out.append(big // small)
    return tuple(reversed(out))


def _compare_piece(
    a: MapRegion, b: MapRegion, lo, hi, row_shape, diff: MapDiff, rows: list
) -> None:
    extents = [y - x for x, y in zip(lo, hi, strict=True)]
    numel = math.prod(extents)
    va, vb = a.value_at(lo), b.value_at(lo)
    if a.is_constant and va == UNWRITTEN_ID:
        diff.unwritten += numel
        return
    moving = [d for d, n in enumerate(extents) if n > 1]
    deltas = {d: a.strides[d] - b.strides[d] for d in moving}
    if va == vb and not any(deltas.values()):
        return
    k = len(row_shape)
    equal = _equal_count(vb - va, [(extents[d], deltas[d]) for d in moving if deltas[d]])
    equal *= math.prod(extents[d] for d in moving if not deltas[d])
    if equal == numel:
        return
    diff.wrong += numel - equal
    right_rows: list[int] = []
    if equal and not any(deltas[d] for d in moving if d >= k):  # whole rows may agree
        # (a row dim of extent 1 does not move: it has no delta)
        row_terms = [(lo[d], extents[d], deltas.get(d, 0), d) for d in range(k)]
        right_rows = _right_rows(vb - va, row_terms, row_shape)
    rows.extend(_cut(_box_rows(lo[:k], hi[:k], row_shape), right_rows))
    if not a.is_constant or va >= 0:
        low = va + sum(min(0, a.strides[d] * (extents[d] - 1)) for d in moving)
        high = va + sum(max(0, a.strides[d] * (extents[d] - 1)) for d in moving)
        diff.id_ranges.append((low, high))


def _equal_count(target: float, terms: list[tuple[int, int]]) -> int:
    """How many ``0 <= x_i < n_i`` solve ``sum(x_i * d_i) == target`` (terms ``(n_i, d_i)``).

    >>> _equal_count(0, [(4, 3), (3, -4)])  # (0, 0) and (4k, 3k) leave the box but (0, 0)
    1
    >>> _equal_count(6, [(4, 1), (4, 2)])  # (0, 3), (2, 2)
    2
    """
    if not terms:
        return int(target == 0)
    if target != int(target):
        return 0
    target = int(target)
    terms = sorted(terms)
    (n_last, d_last), rest = terms[-1], terms[:-1]
    if not rest:
        q, r = divmod(target, d_last)
        return int(r == 0 and 0 <= q < n_last)
    count = 0
    head, tail = rest[:1], rest[1:]
    scan = math.prod(n for n, _ in tail)
    partial = torch.zeros(1, dtype=torch.int64)
    for n, d in tail:  # every combination of the tail dims, as one vector
        partial = (partial[:, None] + torch.arange(n, dtype=torch.int64)[None, :] * d).reshape(-1)
    n0, d0 = head[0]
    step = max(1, EQUAL_SCAN // max(1, scan))
    for x0 in range(0, n0, step):
        xs = torch.arange(x0, min(n0, x0 + step), dtype=torch.int64)
        left = target - (xs[:, None] * d0 + partial[None, :])
        ok = (left % d_last == 0) & (left // d_last >= 0) & (left // d_last < n_last)
        count += int(ok.sum())
    return count


def _right_rows(target, terms, row_shape) -> list[int]:
    """Rows (flat over the row dims) of a piece whose every element agrees."""
    moving = sorted(n for _, n, d, _ in terms if n > 1 and d)
    if math.prod(moving[:-1]) > EQUAL_SCAN or target != int(target):
        return []
    weights = [math.prod(row_shape[j + 1 :]) for j in range(len(row_shape))]
    free = [t for t in terms if not (t[1] > 1 and t[2])]  # coords that any value solves
    fixed = sorted((t for t in terms if t[1] > 1 and t[2]), key=lambda t: t[1])  # solve the longest
    out = []
    ranges = [range(n) for _, n, _, _ in fixed[:-1]]
    for xs in itertools.product(*ranges):
        left = int(target) - sum(x * t[2] for x, t in zip(xs, fixed, strict=False))
        if fixed:
            n, d = fixed[-1][1], fixed[-1][2]
            q, r = divmod(left, d)
            if r or not 0 <= q < n:
                continue
            coords = {t[3]: t[0] + x for x, t in zip((*xs, q), fixed, strict=True)}
        elif left:
            continue
        else:
            coords = {}
        for ys in itertools.product(*(range(t[0], t[0] + t[1]) for t in free)):
            coords.update({t[3]: y for y, t in zip(ys, free, strict=True)})
            out.append(sum(coords[j] * weights[j] for j in range(len(row_shape))))
    return sorted(out)


def _box_rows(lo, hi, row_shape) -> list[tuple[int, int]]:
    """Runs of rows (flat over the row dims) that the box ``lo..hi`` covers."""
    if not row_shape:
        return [(0, 1)]
    weights = [math.prod(row_shape[j + 1 :]) for j in range(len(row_shape))]
    m = len(row_shape) - 1
    while m > 0 and lo[m] == 0 and hi[m] == row_shape[m]:
        m -= 1  # dims after m are whole: one run per value of the dims before m
    out = []
    for xs in itertools.product(*(range(a, b) for a, b in zip(lo[:m], hi[:m], strict=True))):
        base = sum(x * w for x, w in zip(xs, weights, strict=False))
        out.append((base + lo[m] * weights[m], base + hi[m] * weights[m]))
    return out


def _cut(runs: list[tuple[int, int]], points: list[int]) -> list[tuple[int, int]]:
    """``runs`` without the rows ``points`` (sorted)."""
    if not points:
        return runs
    out = []
    for a, b in runs:
        for p in points:
            if a <= p < b:
                if a < p:
                    out.append((a, p))
                a = p + 1
        if a < b:
            out.append((a, b))
    return out


def _merge_runs(runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(runs):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


# ------------------------------------------------------------ maps to the oracle's pieces


def map_index(
    region_map: RegionMap, base: int, global_shape: Sequence[int], *, limit: int = MAX_PIECES
) -> IndexMap | None:
    """What ``region_map`` (model-wide ids) holds of the parameter whose ids start at
    ``base``, as the oracle's :class:`~syncviz.oracle.index.IndexMap`, element-free.

    The same index :meth:`IndexMap.from_ids` recovers from the materialized ids read
    back as local ids (:func:`~syncviz.run.values.to_local_ids`), so the checker's
    words for a wrong run cost its regions, not its elements. Ids of other
    parameters and the unwritten marker become :class:`~syncviz.oracle.index.Unknown`.
    None when a region is not one box or flat range of the parameter, or the map
    needs more than ``limit`` pieces (the caller then reads the elements).

    >>> m = RegionMap.affine((4, 3), 100, (6, 1)).slice(1, 0, 2)  # 2 of a row of 6
    >>> map_index(m, 100, (4, 6)).pieces
    (Box(start=(0, 0), stop=(4, 2), order=None),)
    >>> map_index(m.permute((1, 0)), 100, (4, 6)).pieces  # transposed
    (Box(start=(0, 0), stop=(4, 2), order=(1, 0)),)
    >>> pad = RegionMap.constant((1, 2), -1.0)
    >>> map_index(RegionMap.cat([m, pad], 0), 100, (4, 6)).pieces[-1]
    Pad(numel=2)
    """
    global_shape = tuple(global_shape)
    numel = math.prod(global_shape)
    chunks = _chunks(region_map, limit)
    if chunks is None:
        return None
    pieces: list[Piece] = []
    for value, dims in chunks:
        found = _chunk_pieces(value, dims, base, numel, global_shape)
        if found is None:
            return None
        pieces.extend(found)
        if len(pieces) > limit:
            return None
    return IndexMap(global_shape, region_map.shape, pieces)


def _chunk_pieces(value, dims, base, numel, global_shape) -> list[Piece] | None:
    """The pieces of one flat-contiguous chunk: ``value`` at its start, affine ``dims``."""
    count = math.prod(n for n, _ in dims)
    moving = [(n, s) for n, s in dims if n > 1 and s]
    low = value + sum(min(0, s * (n - 1)) for n, s in moving)
    high = value + sum(max(0, s * (n - 1)) for n, s in moving)
    if not moving and (value < base or value >= base + numel):  # a marker, or foreign
        return [Pad(count) if value == PADDING_ID else Unknown(count)]
    if moving and base <= low and high < base + numel and value == int(value):
        found = affine_pieces(int(value) - base, dims, global_shape)
        if found is not None:
            return found
    if count > CHUNK_ELEMENTS:
        return None
    # Irregular (ids that repeat, step back, or leave the parameter): read its elements.
    values = torch.full((1,) * len(dims), float(value), dtype=torch.float64)
    for k, (n, s) in enumerate(dims):
        shape = [1] * len(dims)
        shape[k] = n
        values = values + (torch.arange(n, dtype=torch.float64) * s).view(shape)
    local = values.reshape(-1) - base
    inside = (local >= 0) & (local < numel) & (local == local.round())
    ids = torch.where(inside, local, torch.full_like(local, FOREIGN_ID))
    ids = torch.where(values.reshape(-1) < 0, values.reshape(-1), ids)
    return flat_pieces(ids, global_shape)


def _chunks(m: RegionMap, limit: int) -> list[tuple[float, list[tuple[int, int]]]] | None:
    """``m``'s values in flat (row-major) order as chunks, each contiguous in ``m``'s
    memory and affine: (value at its start, [(extent, stride)] over its dims). A lazy
    reshape is read segment by segment. None past ``limit`` chunks."""
    segments = m.segments if isinstance(m, ReshapedMap) else (m,)
    out: list[tuple[float, list[tuple[int, int]]]] = []
    for seg in segments:
        found = _plain_chunks(seg, limit - len(out))
        if found is None:
            return None
        out.extend(found)
    return out


def _plain_chunks(m: RegionMap, limit: int) -> list[tuple[float, list[tuple[int, int]]]] | None:
    shape = m.shape
    flat_strides = row_major(shape)
    found: list[tuple[int, float, list[tuple[int, int]]]] = []
    for r in m.regions:
        j = len(shape) - 1
        while j > 0 and r.start[j] == 0 and r.stop[j] == shape[j]:
            j -= 1  # dims after j are whole: the chunk runs on through them
        dims = [(b - a, s) for a, b, s in zip(r.start[j:], r.stop[j:], r.strides[j:], strict=True)]
        head = r.start[j] * flat_strides[j] if shape else 0
        outer = [range(a, b) for a, b in zip(r.start[:j], r.stop[:j], strict=True)]
        if len(found) + math.prod(len(x) for x in outer) > limit:
            return None
        for coords in itertools.product(*outer):
            flat = head + sum(c * f for c, f in zip(coords, flat_strides, strict=False))
            value = r.offset + sum(
                (c - a) * s for c, a, s in zip(coords, r.start, r.strides, strict=False)
            )
            found.append((flat, value, dims))
    found.sort(key=lambda c: c[0])
    return [(value, dims) for _, value, dims in found]
