"""A diagnosis in words, in the checker's report classes: what each wrong region holds.

Each wrong run of rows (experts for 3-D tensors, elements for 1-D ones) says
what it holds (decoded from the checkpoint), whose expected data that is when
it is another rank's ("holds tp 0's Q heads 0-3"), and what was expected; values
of an earlier checkpoint read "holds the previous checkpoint's values (stale)".
Tensors the engine changed after loading are *not checkable*: each says what
the dump holds, and the report says once why and how to dump them as loaded.

>>> from syncviz.diagnose.core import run_diagnosis
>>> from syncviz.diagnose.fixtures import planted
>>> ref, dump = planted("qwen2", tp=2, bugs={"lm_head": "tp0"})
>>> line = report(run_diagnosis(ref, dump, 2)).bad()[0].lines()[0]
>>> held, wanted = line.split(", expected ")
>>> held
"  tp 1, rows 0-63: holds tp 0's vocab rows 0-63"
>>> wanted
'rows 0-25: vocab rows 64-89; rows 26-63: padding'
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch

from syncviz.check import MAX_RUNS, CheckReport, ParamCheck, TensorCheck
from syncviz.diagnose.core import NOT_FOUND, REORDERED, STALE, ZEROS, Decoded, Diagnosis
from syncviz.diagnose.dumps import rank_file, rank_label
from syncviz.engines import DEFAULT_ENGINE
from syncviz.findings import LOCAL_UNITS, Finding, Span, drop_local_place, more_runs
from syncviz.oracle import ParamLayout, boxes_map, describe
from syncviz.oracle.index import runs_pieces
from syncviz.provenance import RegionMap

if TYPE_CHECKING:
    from syncviz.run.result import SyncResult

_LOCAL_UNITS = (*LOCAL_UNITS, "expert")  # a dump's words drop a single expert's place too
NOT_FOUND_WORDS = "values not found in the reference"
# Zeros where data is due are most often a tensor the sync never wrote (a buffer such as a
# router's score-correction bias keeps the engine's initial zeros): say so, not just "zeros".
ZEROS_WORDS = "zeros (none of the checkpoint's values: as if never written)"
REORDERED_WORDS = "its expected elements in another order"
STALE_WORDS = "the previous checkpoint's values (stale)"
W13_SWAP = (
    "the MoE back end keeps experts as [up; gate]; a raw load_weights after start-up"
    " writes checkpoint order into it"
)
_DUMP_EARLIER = (
    "dump before process_weights_after_loading (in your sync, call save_vllm_rank right after"
    " model.load_weights, before anything calls process_weights_after_loading; the README"
    " shows how)"
)
WHY = {
    "empty": (
        "empty: the engine freed these after loading (vLLM's CPU engine repacks every dense"
        " linear weight for its kernels in process_weights_after_loading and leaves"
        " layer.weight empty); the dump cannot show what it computes with, so they are"
        f" neither right nor wrong. Fix: {_DUMP_EARLIER}, or keep the weights (vLLM on CPU:"
        " have UnquantizedLinearMethod.process_weights_after_loading call"
        " dispatch_cpu_unquantized_gemm(layer, remove_weight=False) in every worker)"
    ),
    "shape": (
        "shape: the engine repacked these after loading (the rank's note says so), so the"
        " dump cannot show them as loaded; neither right nor wrong."
        f" Fix: {_DUMP_EARLIER}"
    ),
    "dtype": (
        "dtype: the engine holds these in a dtype the checkpoint's values cannot be compared"
        " in (quantized after loading, with derived scales), so they were not written;"
        f" neither right nor wrong. Fix: {_DUMP_EARLIER}; or check the sync on an"
        " unquantized engine"
    ),
    "w13_swapped": (
        f"w13 halves: every expert holds [up; gate], its checkpoint halves exchanged: {W13_SWAP}."
        " Right where the engine's MoE back end keeps [up; gate] (FlashInfer's, after start-up;"
        " then update weights through the engine's reload path, e.g. vLLM's"
        " worker.reload_weights(), never a raw load_weights); wrong where it reads [gate; up]:"
        " then the sync exchanged the halves"
    ),
}
"""Why each kind of tensor is not checkable, and how to dump it as loaded (said once)."""


@dataclass
class DiagnosisReport(CheckReport):
    """A :class:`~syncviz.check.CheckReport` that also tells tensors it could not check.

    ``exit_code``: 1 when anything judged is wrong or missing (or a note is a finding),
    2 when nothing is but some tensor was not checkable, 0 when all is right. A rank
    that missed the update is said once (a note); its lines show in JSON and HTML only.
    """

    why: list[str] = field(default_factory=list)  # per reason present: why and the fix
    missed_ranks: list[int] = field(default_factory=list)  # world ranks said once
    # The decoded provenance, for the diagram views (set by diagnose; not part of the JSON).
    result: SyncResult | None = field(default=None, repr=False, compare=False)

    @property
    def judged_ok(self) -> bool:
        """Nothing judged is wrong (tensors not checkable aside)."""
        return not self.flow_errors and all(p.status in ("ok", "uncheckable") for p in self.params)

    @property
    def exit_code(self) -> int:
        """The CLI's exit status: 0 all right, 1 a finding, 2 only tensors not checkable."""
        if not self.judged_ok:
            return 1
        return 0 if self.ok else 2

    def headline(self) -> str:
        verdict = "OK" if self.ok else ("OK WHERE CHECKABLE" if self.judged_ok else "MISMATCH")
        head, _, tail = super().headline().rpartition(": ")
        return f"{head}: {verdict} ({tail.split(' (', 1)[1]}"

    def text(self, *, verbose: bool = False) -> str:
        hidden = set(self.missed_ranks)
        params = []
        for p in self.params:
            shown = replace(p, tensors=[t for t in p.tensors if t.rank not in hidden])
            if p.status == "ok" or shown.lines():
                params.append(shown)
        plain = CheckReport(
            self.model, self.src, self.dst, self.synchronizer, params, self.flow_errors
        )
        lines = plain.text(verbose=verbose).split("\n")
        lines[0] = self.headline()
        if any(t.status == "uncheckable" for p in self.params for t in p.tensors):
            lines.insert(
                1, "uncheckable: the dump shows it as the engine left it, not as loaded (why below)"
            )
        lines += [f"not checkable, {w}" for w in self.why]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        out = super().as_dict()
        del out["result"]  # provenance maps, not words
        return out

    def _repr_html_(self) -> str:
        page = super()._repr_html_()
        if not self.ok and self.judged_ok:
            page = page.replace(">MISMATCH</b>", ">OK WHERE CHECKABLE</b>", 1)
            page = page.replace("color:#cf222e", "color:#9a6700", 1)  # amber: not proven OK
        why = "".join(f"<p>not checkable, {html.escape(w)}</p>" for w in self.why)
        return page.removesuffix("</div>") + why + "</div>"


def report(diagnosis: Diagnosis) -> DiagnosisReport:
    """The diagnosis as a :class:`DiagnosisReport` (text, HTML, JSON, exit code)."""
    layout = diagnosis.layout
    params = []
    reasons: set[str] = set()
    for i, per_rank in enumerate(diagnosis.decoded):
        param = layout.params[i]
        tensors = [_tensor_check(diagnosis, param, dec) for dec in per_rank]
        reasons |= {dec.why for dec in per_rank if dec.status == "uncheckable" and dec.why}
        statuses = {t.status for t in tensors}
        judged = statuses - {"ok", "uncheckable"}
        status = "uncheckable" if "uncheckable" in statuses else "ok"
        if judged:
            status = "missing" if judged == {"missing"} else "wrong"
        params.append(ParamCheck(param.key, status, tensors, layer=param.layer))
    dst = layout.dst.sizes_text() + (
        "" if layout.dst.engine == DEFAULT_ENGINE else f" ({layout.dst.engine_name})"
    )
    pp_size = diagnosis.dst.pp
    missed = [
        f"{rank_label(pp, tp, pp_size)} missed the update: every tensor holds {STALE_WORDS}:"
        f" {_folder(diagnosis, k)}"
        for (pp, tp), k in sorted(diagnosis.missed.items())
    ]
    return DiagnosisReport(
        layout.spec.name,
        f"checkpoint {diagnosis.reference.folder.name}",
        dst,
        "as dumped",
        params,
        list(diagnosis.notes) + missed,
        why=[WHY[r] for r in WHY if r in reasons],
        missed_ranks=[pp * diagnosis.dst.tp + tp for pp, tp in sorted(diagnosis.missed)],
    )


def _folder(diagnosis: Diagnosis, k: int) -> str:
    """Previous checkpoint ``k`` as the user named it."""
    return str(diagnosis.previous[k].folder)


def _world(diagnosis: Diagnosis, dec: Decoded) -> int:
    return dec.pp * diagnosis.dst.tp + dec.tp


def _tensor_check(diagnosis: Diagnosis, param: ParamLayout, dec: Decoded) -> TensorCheck:
    pp_size = diagnosis.dst.pp
    world = _world(diagnosis, dec)
    pp = dec.pp if pp_size > 1 else None

    def finding(status: str, **words) -> Finding:
        return Finding(param.key, world, status, dec.tp, pp=pp, spelling="engine", **words)

    if dec.status == "missing":
        opened = diagnosis.dumps.get((dec.pp, dec.tp))  # a full dump or a fingerprint file
        file = opened.path.name if opened is not None else rank_file(dec.pp, dec.tp, pp_size)
        found = [finding("missing", note=f"missing from {file}")]
        return TensorCheck(world, dec.tp, "missing", findings=found)
    if dec.status == "shape":
        found = [finding("wrong", note=_shape_words(param, dec))]
        return TensorCheck(world, dec.tp, "wrong", math.prod(dec.shape), findings=found)
    if dec.status == "uncheckable":
        found = [_uncheckable(dec, finding)]
        return TensorCheck(world, dec.tp, "uncheckable", findings=found)
    if dec.status == "ok":
        return TensorCheck(world, dec.tp, "ok", writes=1)
    bad = dec.wrong
    assert bad is not None
    check = TensorCheck(world, dec.tp, "wrong", int(bad.sum()) * dec.length, writes=1)
    check.findings = _runs(diagnosis, param, dec, bad, finding)
    return check


def _shape_words(param: ParamLayout, dec: Decoded) -> str:
    """A rank's tensor of another shape than its part, in one line; the whole tensor's shape
    on a rank that holds a part is said to be that (a sync that sent it unsharded), with the
    part the rank is due."""
    got, wanted = list(dec.dump_shape or ()), list(dec.shape)
    if tuple(got) != param.global_shape:
        return f"shape {got}, expected {wanted}"
    own = _shorten(
        describe(param, _index(dec, dec.expected, 0, len(dec.expected), param.global_shape))
    )
    return f"shape {got}, the whole tensor's (unsharded), expected {wanted}: {own}"


def _uncheckable(dec: Decoded, finding: Callable[..., Finding]) -> Finding:
    """What a tensor the engine changed holds (why is said once, below)."""
    got, wanted = list(dec.dump_shape or ()), list(dec.shape)
    if dec.why == "w13_swapped":
        return finding(
            "uncheckable",
            span=Span("expert", 0, dec.shape[0] - 1),
            note="every expert's w13 halves exchanged ([up; gate] instead of [gate; up])",
        )
    if dec.why == "empty":
        return finding("uncheckable", note=f"empty (shape {got}), expected {wanted}")
    if dec.why == "dtype":
        note = f"{dec.dump_dtype or 'another dtype'} {got}, expected {wanted} as loaded"
        return finding("uncheckable", note=note)
    return finding("uncheckable", note=f"shape {got} as the engine left it, expected {wanted}")


def _runs(
    diagnosis: Diagnosis,
    param: ParamLayout,
    dec: Decoded,
    bad: torch.Tensor,
    finding: Callable[..., Finding],
) -> list[Finding]:
    assert dec.source is not None
    shape = dec.shape
    if len(shape) > 1:
        per = math.prod(shape) // shape[0] // dec.length  # segments per row (or expert)
        unit = "expert" if len(shape) == 3 else "row"
    else:
        per, unit = 1, "element"
    units = bad.numel() // per
    bad_units = bad.view(units, per)
    kinds = dec.source.view(units, per)
    # What each unit's wrong segments hold, by source; one source per unit is the rule.
    top = torch.iinfo(torch.int64).max
    low = torch.where(bad_units, kinds, top).amin(dim=1).tolist()
    high = torch.where(bad_units, kinds, -top).amax(dim=1).tolist()
    signature: list[tuple[int, ...] | None] = []
    for u, (a, b) in enumerate(zip(low, high, strict=True)):
        if a == top:
            signature.append(None)
        elif a == b:
            signature.append((a,))
        else:
            signature.append(tuple(sorted(set(kinds[u][bad_units[u]].tolist()))))
    runs: list[tuple[int, int]] = []
    for u, sig in enumerate(signature):
        if sig is None:
            continue
        if runs and runs[-1][1] == u and signature[runs[-1][0]] == sig:
            runs[-1] = (runs[-1][0], u + 1)
        else:
            runs.append((u, u + 1))
    out = []
    for a, b in runs[:MAX_RUNS]:
        if unit == "element":
            span = Span(unit, a * dec.length, b * dec.length - 1)
        else:
            span = Span(unit, a, b - 1)
        layers: list[int] = []  # of other parameters the words name
        holds = _holds(diagnosis, param, dec, a * per, b * per, signature[a] or (), layers)
        if _stale_in_place(dec, a * per, b * per):
            out.append(finding("wrong", span=span, holds=holds, layers=tuple(layers)))
            continue
        first = a * per * dec.length // _row_size(dec)
        wants = _shorten(
            describe(
                param,
                _index(dec, dec.expected, a * per, b * per, param.global_shape),
                first=first,
            )
        )
        out.append(finding("wrong", span=span, holds=holds, expected=wants, layers=tuple(layers)))
    if len(runs) > MAX_RUNS:
        out.append(finding("wrong", note=more_runs(len(runs) - MAX_RUNS, unit)))
    return out


def _row_size(dec: Decoded) -> int:
    """Elements in one row (expert) of the local tensor; 1 for a vector."""
    return math.prod(dec.shape[1:])


def _index(
    dec: Decoded, starts: torch.Tensor, s0: int, s1: int, glob: tuple[int, ...], flat: bool = False
) -> RegionMap:
    """The map of segments s0..s1-1 (start ids in ``starts``; -1 padding, other
    negatives not ids), shaped like that slice of the tensor (or flat)."""
    part = starts[s0:s1]
    length = dec.length
    if part.numel() > 1:
        prev, nxt = part[:-1], part[1:]
        goes_on = ((nxt == prev + length) & (prev >= 0)) | ((nxt == prev) & (prev < 0))
        cuts = [0, *(torch.nonzero(~goes_on).flatten() + 1).tolist(), part.numel()]
    else:
        cuts = [0, part.numel()]
    firsts = part[cuts[:-1]].tolist() if part.numel() else []
    runs = [(f, (b - a) * length) for f, a, b in zip(firsts, cuts[:-1], cuts[1:], strict=True)]
    n = (s1 - s0) * length
    if flat or len(dec.shape) == 1:
        shape: tuple[int, ...] = (n,)
    else:
        rest = dec.shape[1:]
        shape = (n // math.prod(rest), *rest)
    return boxes_map(glob, shape, runs_pieces(runs, glob))


def _holds(
    diagnosis: Diagnosis,
    param: ParamLayout,
    dec: Decoded,
    s0: int,
    s1: int,
    kinds: tuple[int, ...],
    layers: list[int],
) -> str:
    """What segments s0..s1 hold, in words; the layers of other parameters named join
    ``layers``."""
    assert dec.source is not None and dec.start is not None
    words = []
    source = dec.source[s0:s1]
    for kind in kinds:
        if kind == ZEROS:
            words.append(ZEROS_WORDS)
        elif kind == NOT_FOUND:
            words.append(NOT_FOUND_WORDS)
        elif kind == REORDERED:
            words.append(REORDERED_WORDS)
        elif kind <= STALE:
            words.append(_stale_words(diagnosis, dec, s0, s1, kind, layers))
        elif kind == dec.param:
            own = torch.where(dec.source == dec.param, dec.start, torch.full_like(dec.start, -3))
            ids = _index(dec, own, s0, s1, param.global_shape)
            text = _shorten(describe(param, ids, first=s0 * dec.length // _row_size(dec)))
            whose = _whose(diagnosis, dec, s0, s1)
            words.append(f"{whose}'s {text}" if whose else text)
        else:
            other = diagnosis.layout.params[kind]
            theirs = torch.where(dec.source == kind, dec.start, torch.full_like(dec.start, -3))
            whole = bool((source == kind).all())  # the whole run: keep its shape for the words
            if not whole:  # only its segments from ``other``, as one flat run of elements
                theirs = theirs[s0:s1][source == kind]
                ids = _index(dec, theirs, 0, theirs.numel(), other.global_shape, flat=True)
            else:
                ids = _index(dec, theirs, s0, s1, other.global_shape)
            text = _shorten(describe(other, ids))
            words.append(f"{other.key}'s {text}")
            layers.extend([] if other.layer is None else [other.layer])
    return " and ".join(words)


def _stale_in_place(dec: Decoded, s0: int, s1: int) -> bool:
    """Do the wrong segments s0..s1 all hold previous values of their own expected place?"""
    assert dec.source is not None and dec.start is not None and dec.wrong is not None
    bad = dec.wrong[s0:s1]
    source = dec.source[s0:s1][bad]
    if dec.stale_param is None or not bool((source <= STALE).all()):
        return False
    same = dec.stale_param[s0:s1][bad] == dec.param
    return bool((same & (dec.start[s0:s1][bad] == dec.expected[s0:s1][bad])).all())


def _stale_words(
    diagnosis: Diagnosis, dec: Decoded, s0: int, s1: int, kind: int, layers: list[int]
) -> str:
    """The previous checkpoint's values: which checkpoint, and where from when not in place."""
    assert dec.source is not None and dec.start is not None and dec.stale_param is not None
    text = f"{STALE_WORDS}: {_folder(diagnosis, STALE - kind)}"
    mine = dec.source[s0:s1] == kind
    params = dec.stale_param[s0:s1][mine].unique().tolist()
    starts = dec.start[s0:s1][mine]
    if params == [dec.param] and torch.equal(starts, dec.expected[s0:s1][mine]):
        return text
    if len(params) != 1:
        return f"{text}, from several tensors"
    other = diagnosis.layout.params[params[0]]
    ids = _index(dec, starts, 0, starts.numel(), other.global_shape, flat=True)
    where = _shorten(describe(other, ids))
    if params[0] == dec.param:
        return f"{text}, its {where}"
    layers.extend([] if other.layer is None else [other.layer])
    return f"{text}, {other.key}'s {where}"


def _whose(diagnosis: Diagnosis, dec: Decoded, s0: int, s1: int) -> str:
    """``tp r`` when segments s0..s1 hold another rank's expected data (else "")."""
    assert dec.start is not None and dec.source is not None and dec.wrong is not None
    held = dec.start[s0:s1]
    bad = dec.wrong[s0:s1] & (dec.source[s0:s1] == dec.param)
    pp_size = diagnosis.dst.pp
    others = [o for o in diagnosis.decoded[dec.param] if o.pp == dec.pp and o.tp != dec.tp]
    for o in others:  # the same place in another rank's tensor
        if o.expected.shape == dec.expected.shape and torch.equal(
            o.expected[s0:s1][bad], held[bad]
        ):
            return rank_label(o.pp, o.tp, pp_size)
    own = dec.expected
    for o in others:  # somewhere in another rank's tensor, nowhere in this rank's
        wanted = held[bad]
        if bool(torch.isin(wanted, o.expected).all()) and not bool(torch.isin(wanted, own).any()):
            return rank_label(o.pp, o.tp, pp_size)
    return ""


def _shorten(text: str) -> str:
    """Drop the local position of a single-piece description ("rows 0-3: Q head 1")."""
    return drop_local_place(text, _LOCAL_UNITS)
