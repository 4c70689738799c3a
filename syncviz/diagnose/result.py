"""A diagnosis as a :class:`~syncviz.run.result.SyncResult`, so every diagram view draws it.

The vLLM ranks' tensors become model-wide provenance ids decoded from the
checkpoint (built only when a view asks for one); the checkpoint stands for the
single, unsharded trainer rank. Segments found nowhere as they are (only in a
previous checkpoint: stale; only reordered) read as -4, zeros where data was
expected as padding (-1), a missing tensor, or one the engine left empty, as never
written (-2).

>>> from syncviz.diagnose.core import run_diagnosis
>>> from syncviz.diagnose.fixtures import planted
>>> ref, dump = planted("llama-mcore", tp=2, bugs={"lm_head": "missing"})
>>> result = as_result(run_diagnosis(ref, dump, 2))
>>> result.local_ids(1, "model.lm_head.weight").unique().tolist()
[-2.0]
>>> result.local_ids(0, "model.model.norm.weight")[:3].tolist()
[0.0, 1.0, 2.0]
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from syncviz.diagnose.core import Decoded, Diagnosis, decoded_map
from syncviz.diagnose.dumps import normalise
from syncviz.provenance import SymbolicTensor
from syncviz.run.flow import RankOutcome
from syncviz.run.plan import RankRole, SyncPlan, holds, id_bases
from syncviz.run.result import SyncResult
from syncviz.trace.model import SyncTrace


def as_result(diagnosis: Diagnosis, trace: SyncTrace | None = None) -> SyncResult:
    """The result the diagram model draws (``layout_diagram``, ``expert_diagram``)."""
    layout = diagnosis.layout
    dst = layout.dst
    roles = [
        RankRole(pp * dst.tp + tp, "dst", pp, tp) for pp in range(dst.pp) for tp in range(dst.tp)
    ]
    reference = RankRole(len(roles), "src", 0, 0)
    roles.append(reference)
    bases = id_bases(layout)
    by_world: dict[int, dict[str, Decoded]] = {r.world: {} for r in roles[:-1]}
    dst_shapes: dict[int, dict[str, tuple[int, ...]]] = {r.world: {} for r in roles[:-1]}
    for i, per_rank in enumerate(diagnosis.decoded):
        key = layout.params[i].key
        for dec in per_rank:
            world = dec.pp * dst.tp + dec.tp
            by_world[world][key] = dec
            dst_shapes[world][key] = dec.shape
    src_names = tuple(s.name for p in layout.params for s in p.src if holds(reference, s))
    plan = SyncPlan(
        spec=layout.spec,
        src=layout.src,
        dst=dst,
        layout=layout,
        roles=tuple(roles),
        src_params={reference.world: src_names},
        src_layer_offset={reference.world: 0},
        dst_shapes=dst_shapes,
        stage1=(),
        stage2=(),
        expert_groups=(),
        id_base=bases,
    )
    firsts = torch.tensor([bases[p.key] for p in layout.params], dtype=torch.int64)
    dst_tensors = {w: _Decoded(decs, firsts) for w, decs in by_world.items()}
    outcomes = [
        RankOutcome(
            r.world,
            writes={k: int(d.status != "missing") for k, d in by_world.get(r.world, {}).items()},
        )
        for r in roles
    ]
    return SyncResult(plan, {reference.world: {}}, dst_tensors, outcomes, trace)


class _Decoded(Mapping[str, torch.Tensor]):
    """One rank's tensors as maps of model-wide ids, built on access."""

    def __init__(self, decoded: dict[str, Decoded], bases: torch.Tensor):
        self._decoded, self._bases = decoded, bases

    def __getitem__(self, key: str) -> torch.Tensor:
        return SymbolicTensor.from_map(decoded_map(self._decoded[key], self._bases))

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded)

    def __len__(self) -> int:
        return len(self._decoded)


def load_traces(folder: str | Path, world_size: int | None = None) -> SyncTrace:
    """Every rank's recorded trace in ``folder`` (``*.json``) as one trace, names normalised;
    bounded in all (:func:`~syncviz.trace.json_io.check_folder_size`), and with
    ``world_size`` every rank they name is one of ``0 .. world_size - 1``."""
    from syncviz.errors import SyncvizError
    from syncviz.trace.json_io import check_folder_size

    root = Path(folder)
    files = sorted(root.glob("*.json")) if root.is_dir() else []
    if not files:
        raise SyncvizError(
            f"trace folder {str(root)!r} holds no .json traces",
            fix="record them with `with syncviz.record(rank=r, out_dir=...)`",
        )
    check_folder_size(files, root)
    merged = SyncTrace(metadata={"traces": [f.name for f in files]})
    for path in files:
        try:
            trace = SyncTrace.load(path)
            if world_size is not None:
                trace.check_ranks(world_size, " (--dst-tp x --dst-pp)")
        except SyncvizError as err:
            raise err.with_context(file=path.name) from None
        except (OSError, UnicodeDecodeError) as err:
            raise SyncvizError(
                f"trace {str(path)!r} cannot be read ({err})", fix="re-record it"
            ) from None
        for pt in trace.params:
            if pt.param is not None:
                pt.param = normalise(pt.param)
        merged.sources += trace.sources
        merged.params += trace.params
        merged.collectives += trace.collectives
        merged.warnings += trace.warnings
    return merged
