"""Shared helpers for the golden-record harness (tests/test_golden.py).

A record's tensor inputs hold consecutive ids (see tests/data/GOLDEN_README.md);
outputs are compared as id lists, so a record says exactly which element went where.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

GOLDEN_PATH = Path(
    os.environ.get("SYNCVIZ_GOLDEN", Path(__file__).parent / "data" / "golden.jsonl")
)

Runner = Callable[[dict[str, Any]], Any]


def load_records(path: Path = GOLDEN_PATH) -> list[dict[str, Any]]:
    """Every record of a golden JSONL file, in file order."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def make_inputs(record: dict[str, Any]) -> list[torch.Tensor]:
    """The record's input tensors: float64, input k holds offset_k + arange(numel)."""
    tensors, offset = [], 0
    for spec in record["inputs"]:
        shape = spec["shape"]
        numel = 1
        for n in shape:
            numel *= n
        tensors.append(torch.arange(offset, offset + numel, dtype=torch.float64).reshape(shape))
        offset += numel
    return tensors


def ids_of(tensor: torch.Tensor) -> dict[str, Any]:
    """A tensor as the record's {"shape", "ids"} form."""
    flat = tensor.detach().reshape(-1)
    return {"shape": list(tensor.shape), "ids": [int(v) for v in flat.tolist()]}


def assert_tensor_matches(actual: torch.Tensor, expected: dict[str, Any], where: str = "") -> None:
    """The tensor has the recorded shape and ids, element for element."""
    got = ids_of(actual)
    assert got["shape"] == expected["shape"], (
        f"{where}: shape {got['shape']} != {expected['shape']}"
    )
    if got["ids"] != expected["ids"]:
        pairs = zip(got["ids"], expected["ids"], strict=False)
        first = next(i for i, (a, b) in enumerate(pairs) if a != b)
        raise AssertionError(
            f"{where}: ids differ first at flat index {first}:"
            f" got {got['ids'][first : first + 8]}, expected {expected['ids'][first : first + 8]}"
        )
