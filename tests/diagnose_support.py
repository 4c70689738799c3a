"""Shared helpers of the diagnose tests: checkpoints and dumps built from real bf16 weights."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_file

from syncviz.diagnose.fixtures import vllm_name
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
