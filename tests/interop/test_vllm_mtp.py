"""Judged from outside: vLLM's own multi-token-prediction draft model (GLM-4.5's
``Glm4MoeMTP``) and loader hold, bit for bit and name for name, what the oracle says every
TP rank holds of the MTP layer (``mtp=True``).

A random bf16 checkpoint of GLM-4.5's judged tiny spec with one MTP layer (layer 2: a whole
MoE decoder layer plus enorm, hnorm, eh_proj, shared_head.norm and shared_head.head) is
written with syncviz's writer, its config relabelled ``Glm4MoeMTPModel`` (the draft's
architecture), and scripts/vllm_judge/load_ranks.py loads it at TP 1 and 2. Every vLLM
tensor must be the oracle's cut of the checkpoint: the MTP layer's parameters by their
layout names and the draft's embedding as the model's ``embed``. DeepSeek-V3's draft
(``DeepSeekMTP``) is not judged: vLLM 0.32 asserts a speculative config when it is built,
which the stand-alone loader does not make. The synchronizers do not carry the MTP layer, so
only the oracle is judged.
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
from syncviz.oracle.hf_names import HF_NAMES
from syncviz.parallel import Parallel
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


@pytest.mark.parametrize("d", SIZES)
def test_vllm_mtp_draft_holds_the_oracle_cut(loaded, d):
    """At vLLM TP d every rank of Glm4MoeMTP holds exactly the oracle's tensors of the MTP
    layer and of the embedding: same names, same bits."""
    spec, ckpt, out, summary = loaded
    if summary["unsupported"]:
        pytest.skip(f"vLLM {summary['vllm']}: {summary['unsupported']}")
    assert summary["tp"][str(d)]["result"] == "ok", summary
    layer = spec.num_layers
    layout = model_layout(
        spec, Parallel(tp=1), Parallel(tp=d), layers=[layer], include_globals=True
    )
    wanted = [p for p in layout if p.layer == layer or p.kind == "embed"]
    problems: list[str] = []
    for r in range(d):
        with safe_open(str(out / f"tp{d}" / f"rank{r}.safetensors"), "pt") as f:
            buffers = set(json.loads(f.metadata()["buffers"]))
            stored = f.keys()  # (a safe_open file is not iterable)
            held = {
                syncviz_name(n): f.get_tensor(n) for n in stored if not not_a_weight(n, buffers)
            }
        names = {vllm_name(p.key): p for p in wanted}
        assert set(held) == set(names), (sorted(set(held) ^ set(names)), r)
        for name, param in names.items():
            glob = _checkpoint_global(ckpt, spec.family, param.kind, param.layer, spec.num_experts)
            want = local_tensor(glob, param.dst[r].index)
            found = difference(name, r, held[name], want)
            if found:
                problems.append(found)
    assert not problems, "\n".join(problems)
