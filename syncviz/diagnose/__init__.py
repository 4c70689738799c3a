"""Diagnose real weights: vLLM rank dumps judged against the checkpoint they came from.

>>> import tempfile
>>> from syncviz.diagnose.fixtures import tiny_spec, write_checkpoint, write_dumps
>>> spec = tiny_spec("llama-mcore")
>>> ref, dump = tempfile.mkdtemp(), tempfile.mkdtemp()
>>> names = write_checkpoint(spec, ref)
>>> write_dumps(spec, ref, dump, tp=4, bugs={"qkv": "shard0"})
>>> report = diagnose(ref, dump, dst_tp=4)
>>> report.ok, report.counts()
(False, {'ok': 14, 'wrong': 1})
>>> print(report.bad()[0].lines()[0])
  tp 1, rows 0-3: holds tp 0's Q heads 0-1, expected Q heads 2-3
>>> from syncviz.diagram import layout_diagram
>>> layout_diagram(report.result, report.bad()[0].key, report).wrong_count > 0
True
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from syncviz.diagnose.core import Diagnosis, run_diagnosis
from syncviz.diagnose.dumps import normalise
from syncviz.diagnose.fingerprints import PrintFiles, has_fingerprints
from syncviz.diagnose.reference import Reference
from syncviz.diagnose.result import as_result, load_traces
from syncviz.diagnose.words import DiagnosisReport
from syncviz.diagnose.words import report as _report
from syncviz.engines import DEFAULT_ENGINE
from syncviz.parallel import Parallel

__all__ = ["Diagnosis", "DiagnosisReport", "Reference", "diagnose", "normalise", "run_diagnosis"]


def diagnose(
    reference: str | Path,
    dump: str | Path,
    dst_tp: int,
    dst_pp: int = 1,
    *,
    layers: Iterable[int] | None = None,
    include_globals: bool | None = None,
    trace: str | Path | None = None,
    show_progress: bool = False,
    previous: Iterable[str | Path] = (),
    engine: str = DEFAULT_ENGINE,
    dst_ep: int = 1,
    expert_placement: str = "linear",
    dp_attention: int = 1,
) -> DiagnosisReport:
    """Judge the vLLM ranks' tensors in ``dump`` against the checkpoint folder ``reference``.

    ``dump`` holds ``tp{t}.safetensors`` per rank (``pp{p}-tp{t}.safetensors``
    when ``dst_pp`` > 1), as :func:`syncviz.dump.save_vllm_rank` writes them, or
    ``tp{t}.fingerprints.safetensors`` per rank
    (:func:`syncviz.fingerprint_dump.save_fingerprints`): the same verdicts.
    Comparison is exact in the dump's dtype. ``layers`` limits the layers
    judged (the embedding, final norm and lm_head are judged when ``layers`` is
    None, or when ``include_globals`` is true); data from elsewhere is looked up
    only among the judged parameters. ``trace`` is a folder of traces recorded
    with :func:`syncviz.record`, added for the step view. ``previous`` names earlier
    checkpoints (same format as ``reference``): wrong values found in one read as
    its stale values, and a rank holding them everywhere as a rank that missed the
    update. Tensors the engine emptied or changed after loading are not checkable
    (never wrong). ``engine`` (``"vllm"`` or ``"sglang"``, :mod:`syncviz.engines`) is the
    engine the dump came from: its names and its per-rank layout; ``dst_ep`` and
    ``expert_placement`` its expert parallel (whole experts per rank), ``dp_attention``
    its DP attention (SGLang), as :class:`~syncviz.parallel.Parallel` takes them.

    Returns a :class:`~syncviz.diagnose.words.DiagnosisReport`, the checker's
    :class:`~syncviz.check.CheckReport` with the reasons tensors were not checkable
    and an ``exit_code`` (0 ok, 1 something wrong, 2 only not checkable); its ``result``
    attribute is a :class:`~syncviz.run.result.SyncResult` of the decoded
    provenance, for the diagram views. Bad input raises
    :class:`~syncviz.errors.SyncvizError`.
    """
    placement: dict[str, Any] = {"expert_placement": expert_placement, "dp_attention": dp_attention}
    diagnosis = run_diagnosis(
        reference,
        dump,
        Parallel(dst_tp, dst_pp, dst_ep, engine=engine, **placement),
        layers=layers,
        include_globals=include_globals,
        show_progress=show_progress,
        previous=previous,
        files=PrintFiles() if has_fingerprints(dump) else None,
    )
    report = _report(diagnosis)
    traces = None if trace is None else load_traces(trace, dst_tp * dst_pp)
    report.result = as_result(diagnosis, traces)
    return report


class _CallableModule(types.ModuleType):
    """``syncviz.diagnose(...)`` works whether it finds this package or the function."""

    def __call__(self, *args: Any, **kwargs: Any) -> DiagnosisReport:
        return diagnose(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
