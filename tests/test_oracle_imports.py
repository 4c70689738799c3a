"""The oracle sits in the layout core: it loads torch and nothing from the UI floors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from syncviz.oracle import block_numbers, model_layout
from syncviz.parallel import Parallel
from syncviz.spec import ModelSpec


def test_oracle_does_not_import_ui_or_ray() -> None:
    """Importing syncviz.oracle and syncviz.cli loads no matplotlib, ipywidgets or ray."""
    code = (
        "import sys, syncviz.oracle, syncviz.cli; "
        "print(sorted(m for m in ('matplotlib', 'ipywidgets', 'ray') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[1],
    )
    assert done.stdout.strip() == "[]"


def test_block_numbers_colour_a_destination_tensor() -> None:
    """d=4 rank 1 of the tiny qkv: rows are Q head 1, K head 0, V head 0 (blocks 1, 4, 6)."""
    spec = ModelSpec("tiny", "llama-mcore", 4, 8, 4, 2, 4, 70)
    qkv = model_layout(spec, Parallel(tp=1), Parallel(tp=4)).param(
        "model.model.layers.0.self_attn.qkv_proj.weight"
    )
    numbers = block_numbers(qkv.blocks, qkv.dst[1].index.ids())
    assert numbers[:, 0].tolist() == [1, 1, 4, 4, 6, 6]
    assert [qkv.blocks[n].family for n in (1, 4, 6)] == ["q", "k", "v"]
    assert qkv.block_of(75).label == "K head 0"
    assert qkv.block_of(-1) is None
    assert block_numbers(qkv.blocks, torch.tensor([-1, 128])).tolist() == [-1, -1]
