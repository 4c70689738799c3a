"""Shared helpers of the diagnose tests: checkpoints and dumps built from real bf16 weights."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_file

from syncviz.diagnose import diagnose
from syncviz.diagnose.fixtures import tiny_spec, vllm_name, write_checkpoint, write_dumps
from syncviz.diagnose.reference import Reference
from syncviz.parallel import Parallel
from syncviz.run.inprocess import run_sync
from syncviz.run.values import take
from syncviz.spec import ModelSpec


def dumps_from_corrected(
    spec: ModelSpec, reference: Path, out: Path, src: Parallel, dst: Parallel
) -> dict[int, dict[str, object]]:
    """Write the dumps the corrected synchronizer produces (its provenance read from the
    checkpoint), independent of the oracle's layout code; returns the tensors per tp."""
    result = run_sync(spec, src, dst, synchronizer="corrected")
    assert not result.findings, result.findings
    ref = Reference(reference)
    files: dict[int, dict[str, object]] = {}
    for role in result.plan.roles:
        if role.side != "dst":
            continue
        files[role.tp] = {}
        for param in result.plan.layout:
            glob = ref.global_tensor(param.kind, param.layer)
            ids = result.local_ids(role.world, param.key).long()
            files[role.tp][vllm_name(param.key)] = take(glob, ids).contiguous()
    out.mkdir(parents=True, exist_ok=True)
    for tp, tensors in files.items():
        save_file(tensors, str(out / f"tp{tp}.safetensors"))  # type: ignore[arg-type]
    return files


def tiny_checkpoints(tmp_path_factory, families) -> dict[str, Path]:
    """One random bf16 checkpoint of each family's tiny spec, by family."""
    out = {}
    for family in families:
        folder = tmp_path_factory.mktemp(family)
        write_checkpoint(tiny_spec(family), folder)
        out[family] = folder
    return out


def diagnose_dumps(checkpoints, tmp_path, family, tp, **kwargs):
    """The report on dumps cut from ``family``'s checkpoint at ``tp`` (``kwargs``, such as
    ``bugs``, go to ``write_dumps``)."""
    dump = tmp_path / "dump"
    write_dumps(tiny_spec(family), checkpoints[family], dump, tp=tp, **kwargs)
    return diagnose(checkpoints[family], dump, tp)


def bad(report) -> dict[str, list[str]]:
    """Each wrong parameter's lines, stripped, by parameter."""
    return {p.key: [line.strip() for line in p.lines()] for p in report.bad()}
