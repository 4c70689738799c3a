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
from dataclasses import asdict, dataclass, field

import torch

from syncviz.check_maps import compare_maps
from syncviz.oracle import ParamLayout, describe
from syncviz.progress import progress
from syncviz.provenance import is_symbolic
from syncviz.run.result import SyncResult, owners, to_local_ids
from syncviz.run.symbolic_state import shard_map
from syncviz.run.values import FOREIGN_ID, UNWRITTEN_ID

MAX_RUNS = 4  # wrong row runs spelled out per tensor; the rest are counted
# Symbolic tensors above this many elements are compared map against map (all of them:
# the map comparison gives the element-wise report, and costs regions, not elements).
ELEMENTWISE_LIMIT = 0
DESCRIBE_LIMIT = 2**24  # elements of one wrong run materialized to describe it
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

    def text(self) -> str:
        head = (
            f"{self.model}: src {self.src} -> dst {self.dst}, synchronizer {self.synchronizer}: "
            + ("OK" if self.ok else "MISMATCH")
            + " ("
            + ", ".join(f"{n} {s}" for s, n in sorted(self.counts().items()))
            + ")"
        )
        lines = [head] + [f"flow: {e}" for e in self.flow_errors]
        for p in self.bad():
            lines.append(f"{p.status.upper()} {p.key}")
            lines += p.lines()
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
    result: SyncResult, synchronizer: str = "", *, show_progress: bool = False
) -> CheckReport:
    """Compare every destination tensor of ``result`` with what the oracle says it must hold."""
    plan = result.plan
    by_param: dict[str, list[str]] = {}
    flow_errors = []
    keys = {p.key for p in plan.layout}
    for f in result.findings:
        if f.param not in keys:
            where = "" if f.param == "*" else f" {f.param}"
            flow_errors.append(f"rank {f.rank} {f.stage}{where}: {f.message}")
        else:
            by_param.setdefault(f.param, []).append(f"rank {f.rank} {f.stage}: {f.message}")
    params = []
    words: dict[tuple, str] = {}  # descriptions of wrong slices, shared across layers
    for param in progress(plan.layout, "check", enabled=show_progress):
        tensors = []
        for t in param.dst:
            world = next(
                r.world for r in plan.roles if r.side == "dst" and (r.pp, r.tp) == (t.pp, t.tp)
            )
            raw = result.dst_tensors[world][t.name]
            writes = result.writes(world).get(t.name, 0)
            if is_symbolic(raw) and raw.numel() > ELEMENTWISE_LIMIT:  # real sizes: maps
                tensors.append(_check_tensor_map(plan, param, t, world, raw, writes, words))
                continue
            actual = to_local_ids(plan, param, raw)
            checked = _check_tensor(param, t.tp, world, actual, t.index.ids(), writes, words)
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
    return CheckReport(
        plan.spec.name, _sizes(plan.src), _sizes(plan.dst), synchronizer, params, flow_errors
    )


def _sizes(p) -> str:
    parts = [f"tp{p.tp}"] + [f"{k}{v}" for k, v in (("pp", p.pp), ("ep", p.ep)) if v > 1]
    return " ".join(parts)


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
    unwritten = actual == UNWRITTEN_ID
    wrong = (got != expected) & ~unwritten
    check = TensorCheck(world, tp, "ok", int(wrong.sum()), int(unwritten.sum()), writes)
    where = f"dst rank {world} (tp {tp})"
    if check.unwritten:
        check.status = "unwritten"
        if check.unwritten == actual.numel():
            check.problems.append(f"{where}: never written")
        else:
            check.problems.append(f"{where}: {check.unwritten} elements never written")
    if check.wrong:
        check.status = "wrong"
        check.problems += _wrong_runs(param, where, got, expected, wrong, cache)
    if writes > 1:
        check.status = "rewritten" if check.status == "ok" else check.status
        check.problems.append(f"{where}: written {writes} times")
    return check


def _check_tensor_map(plan, param, t, world, raw, writes, cache) -> TensorCheck:
    """:func:`_check_tensor` for a symbolic tensor: regions overlaid, same words.

    Only the wrong rows (at most ``MAX_RUNS`` runs of them, each up to
    ``DESCRIBE_LIMIT`` elements) are materialized, to be described.
    """
    base = plan.id_base[param.key]
    expected = shard_map(t.index, base)
    got_map = raw.region_map()
    diff = compare_maps(got_map, expected)
    check = TensorCheck(world, t.tp, "ok", diff.wrong, diff.unwritten, writes)
    where = f"dst rank {world} (tp {t.tp})"
    if check.unwritten:
        check.status = "unwritten"
        if check.unwritten == raw.numel():
            check.problems.append(f"{where}: never written")
        else:
            check.problems.append(f"{where}: {check.unwritten} elements never written")
    if check.wrong:
        check.status = "wrong"
        unit = "expert" if raw.dim() == 3 else ("row" if raw.dim() == 2 else "element")
        row = math.prod(raw.shape[1:]) if raw.dim() else 1
        runs = diff.wrong_rows
        for a, b in runs[:MAX_RUNS]:
            span = f"{unit}s {a}-{b - 1}" if b - a > 1 else f"{unit} {a}"
            if (b - a) * row > DESCRIBE_LIMIT:
                check.problems.append(
                    f"{where}, {span}: holds other ids ({(b - a) * row} elements, too many to"
                    " describe)"
                )
                continue
            got_rows, want_rows = got_map.take(0, a, 1, b - a), expected.take(0, a, 1, b - a)
            # Layers of one kind share blocks and local ids: the same wrong rows recur on
            # every layer, so their words are cached by the maps' shape relative to base.
            key = (
                "map",
                id(param.blocks),
                a,
                b,
                _relative(got_rows, base),
                _relative(want_rows, base),
            )
            if key not in cache:
                got = to_local_ids(plan, param, got_rows.materialize())
                want = want_rows.materialize()
                want = torch.where(want >= 0, want - base, want)
                holds = _words(param, got.to(torch.int64), cache)
                cache[key] = (holds, _words(param, want.to(torch.int64), cache))
            holds, wants = cache[key]
            check.problems.append(f"{where}, {span}: holds {holds}, expected {wants}")
        if len(runs) > MAX_RUNS:
            check.problems.append(f"{where}: ... {len(runs) - MAX_RUNS} more wrong {unit} runs")
    if writes > 1:
        check.status = "rewritten" if check.status == "ok" else check.status
        check.problems.append(f"{where}: written {writes} times")
    for other in _owners_of_ranges(plan, diff.id_ranges, exclude=param.key):
        check.problems.append(f"{where}: holds elements of {other}")
    return check


def _relative(region_map, base: int) -> tuple:
    """A map's regions with ids counted from ``base`` (markers below 0 kept as they are)."""
    return tuple(
        (r.start, r.stop, r.offset - base if r.offset >= 0 else r.offset, r.strides)
        for r in region_map.regions
    )


def _owners_of_ranges(plan, ranges, exclude: str) -> list[str]:
    """Parameters whose model-wide ids meet any of ``ranges`` (inclusive), except ``exclude``."""
    keys = sorted(plan.id_base, key=plan.id_base.get)
    starts = [plan.id_base[k] for k in keys]
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
