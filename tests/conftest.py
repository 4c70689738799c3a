"""Fixtures shared by the test files.

``tiny_spec`` is the smallest grouped-query model every hand-worked case starts from:
1 layer, hidden 8, 4 query heads in 2 K/V groups (head dim 2), FFN 8, vocab 64 (no
vLLM padding). Its fused QKV rows are ``[Q0 Q1 Q2 Q3 K0 K1 V0 V1]`` x 2 rows each.
"""

from __future__ import annotations

import pytest

from syncviz.spec import ModelSpec


@pytest.fixture(scope="session")
def tiny_spec() -> ModelSpec:
    """The tiny GQA model (see the module docstring)."""
    return ModelSpec("tiny", "llama-mcore", 1, 8, 4, 2, 8, 64, head_dim=2)
