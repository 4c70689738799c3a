"""Judged from outside: vLLM's own multi-token-prediction draft model (GLM-4.5's
``Glm4MoeMTP``) and loader hold, bit for bit and name for name, what the oracle says every
TP rank holds of the MTP layer (``mtp=True``).

A random bf16 checkpoint of GLM-4.5's judged tiny spec with one MTP layer (layer 2: a whole
MoE decoder layer plus enorm, hnorm, eh_proj, shared_head.norm and shared_head.head) is
written with syncviz's writer, its config relabelled ``Glm4MoeMTPModel`` (the draft's
architecture), and scripts/vllm_judge/load_ranks.py loads it at TP 1 and 2. Every vLLM
tensor must be the oracle's cut of the checkpoint (the MTP layer's parameters by their
layout names, the draft's embedding as the model's ``embed``, its ``shared_head.head`` as
the checkpoint's MTP head in vocab rows) and what the corrected synchronizer sends there
from a Megatron layout (all but the head, which vLLM's proposer replaces by the target's
``lm_head`` at run time). DeepSeek-V3's draft
(``DeepSeekMTP``) is not judged: vLLM 0.32 asserts a speculative config when it is built,
which the stand-alone loader does not make.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from syncviz.diagnose.fixtures import local_tensor, vllm_name
from syncviz.oracle import model_layout
from syncviz.oracle.dest import dest_maps
from syncviz.oracle.hf_names import HF_NAMES
from syncviz.parallel import Parallel
from syncviz.run.inprocess import run_sync
from syncviz.run.values import PADDING_ID
from tests.interop import vllm_python
from tests.interop.test_vllm_loaders import (
    SCRIPT,
    difference,
    judge_spec,
    not_a_weight,
    syncviz_name,
    write_judged_checkpoint,
)

pytestmark = pytest.mark.interop

FAMILY = "glm4-moe"
DRAFT = "Glm4MoeMTPModel"  # vLLM's registry name of GLM-4.5's MTP draft model
SIZES = (1, 2)


@pytest.fixture(scope="module")
def loaded():
    """(spec, checkpoint folder, output folder, summary) after one load_ranks.py run."""
    python = vllm_python()  # (skips when there is none)
    spec = replace(judge_spec(FAMILY), mtp_layers=1)
    with tempfile.TemporaryDirectory(prefix="syncviz-vllm-mtp-") as root:
        ckpt, out = Path(root) / "ckpt", Path(root) / "out"
        write_judged_checkpoint(spec, ckpt)
        config = json.loads((ckpt / "config.json").read_text(encoding="utf-8"))
        config["architectures"] = [DRAFT]
        (ckpt / "config.json").write_text(json.dumps(config), encoding="utf-8")
        run = subprocess.run(
            [python, str(SCRIPT), "--checkpoint", str(ckpt), "--out", str(out), "--tp"]
            + [str(d) for d in SIZES],
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
            env={**os.environ, "PYTHONPATH": ""},
        )
        summary = out / "summary.json"
        assert run.returncode == 0 and summary.is_file(), run.stderr[-4000:]
        yield spec, ckpt, out, json.loads(summary.read_text(encoding="utf-8"))


def _checkpoint_global(ckpt: Path, family: str, kind: str, layer: int | None, experts: int):
    """The oracle's global tensor of ``kind`` from the checkpoint: its tensors joined on
    dim 0 in the family's order, routed experts one by one then stacked."""
    templates = HF_NAMES[family][kind]
    fields = {} if layer is None else {"i": layer}
    with safe_open(str(ckpt / "model.safetensors"), "pt") as f:
        if kind.startswith("experts_"):
            return torch.stack(
                [
                    torch.cat([f.get_tensor(t.format(**fields, e=e)) for t in templates])
                    for e in range(experts)
                ]
            )
        return torch.cat([f.get_tensor(t.format(**fields)) for t in templates])


def _vllm_ranks(out: Path, d: int) -> list[dict[str, torch.Tensor]]:
    """What vLLM's loader put on each rank at TP d (attention scales left out)."""
    ranks = []
    for r in range(d):
        with safe_open(str(out / f"tp{d}" / f"rank{r}.safetensors"), "pt") as f:
            buffers = set(json.loads(f.metadata()["buffers"]))
            stored = f.keys()  # (a safe_open file is not iterable)
            ranks.append(
                {syncviz_name(n): f.get_tensor(n) for n in stored if not not_a_weight(n, buffers)}
            )
    return ranks


def _wanted(layout, layer: int) -> list:
    """The MTP layer's parameters and the embedding (the draft's embed_tokens)."""
    return [p for p in layout if p.layer == layer or p.kind == "embed"]


def _compare(vllm: list[dict], mine: list[dict]) -> None:
    problems = []
    for r, (got, want) in enumerate(zip(vllm, mine, strict=True)):
        assert set(got) == set(want), (r, sorted(set(got) ^ set(want)))
        problems += [diff for n in sorted(got) if (diff := difference(n, r, got[n], want[n]))]
    assert not problems, "\n".join(problems)


def _head(spec, ckpt: Path, d: int) -> list[torch.Tensor]:
    """The draft's shared_head.head as loaded: the checkpoint's MTP head in vocab rows (at
    run time vLLM's proposer puts the target's lm_head there, so no sync sends it)."""
    glob = _checkpoint_global(ckpt, spec.family, "mtp_head", spec.num_layers, 0)
    return [local_tensor(glob, m) for m in dest_maps("mtp_head", spec, d)]


@pytest.mark.parametrize("d", SIZES)
def test_vllm_mtp_draft_holds_the_oracle_cut(loaded, d):
    """At vLLM TP d every rank of Glm4MoeMTP holds exactly the oracle's tensors of the MTP
    layer and of the embedding: same names, same bits."""
    spec, ckpt, out, summary = loaded
    if summary["unsupported"]:
        pytest.skip(f"vLLM {summary['vllm']}: {summary['unsupported']}")
    assert summary["tp"][str(d)]["result"] == "ok", summary
    layer = spec.num_layers
    layout = model_layout(spec, Parallel(tp=1), Parallel(tp=d), include_globals=True)
    mine: list[dict[str, torch.Tensor]] = [{} for _ in range(d)]
    for param in _wanted(layout, layer):
        glob = _checkpoint_global(ckpt, spec.family, param.kind, param.layer, spec.num_experts)
        for t in param.dst:
            mine[t.tp][syncviz_name(vllm_name(param.key))] = local_tensor(glob, t.index)
    head = f"model.layers.{layer}.shared_head.head.weight"
    for r, tensor in enumerate(_head(spec, ckpt, d)):
        mine[r][head] = tensor
    _compare(_vllm_ranks(out, d), mine)


@pytest.mark.parametrize("d", SIZES)
def test_vllm_mtp_draft_holds_what_the_corrected_sync_sends(loaded, d):
    """From a Megatron layout (trainer tp 2 where it fits, else 1; ep 2), the corrected
    synchronizer's MTP layer and embedding, read back as checkpoint elements, are vLLM's."""
    spec, ckpt, out, summary = loaded
    if summary["unsupported"]:
        pytest.skip(f"vLLM {summary['vllm']}: {summary['unsupported']}")
    src = Parallel(tp=min(2, d), ep=2)
    result = run_sync(spec, src, Parallel(tp=d), synchronizer="corrected", trace=False)
    assert not result.findings, [f.message for f in result.findings]
    layer = spec.num_layers
    mine: list[dict[str, torch.Tensor]] = [{} for _ in range(d)]
    for role in result.plan.roles:
        if role.side != "dst":
            continue
        for param in _wanted(result.plan.layout, layer):
            ids = result.local_ids(role.world, param.key)
            assert bool(((ids >= 0) | (ids == PADDING_ID)).all()), (param.key, role.tp)
            glob = _checkpoint_global(ckpt, spec.family, param.kind, param.layer, spec.num_experts)
            flat, ids = glob.reshape(-1), ids.long()
            local = flat[ids.clamp(min=0).reshape(-1)].view(ids.shape).clone()
            local[ids < 0] = 0
            mine[role.tp][syncviz_name(vllm_name(param.key))] = local
    vllm = _vllm_ranks(out, d)
    for held in vllm:  # replaced by the target's lm_head at run time: judged above
        del held[f"model.layers.{layer}.shared_head.head.weight"]
    _compare(vllm, mine)
