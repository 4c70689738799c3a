"""The destination engines, once: one file each, and this registry.

An engine file (``syncviz/engines/<engine>.py``) declares one
:class:`~syncviz.engines.record.EngineInfo`. vLLM is the default and the reference:
the family files write its names, and an engine record says how its own differ.

>>> from syncviz.engines import ENGINE, ENGINE_NAMES, engine
>>> ENGINE_NAMES
('vllm', 'sglang')
>>> engine("sglang").display
'SGLang'
>>> engine("tgi")
Traceback (most recent call last):
...
syncviz.errors.SyncvizError: engine ('tgi') is not known: use vllm or sglang
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from syncviz.engines import sglang, vllm
from syncviz.engines.record import ROUTED_SPELLING, EngineInfo
from syncviz.errors import SyncvizError

__all__ = ["DEFAULT_ENGINE", "ENGINE", "ENGINE_NAMES", "ROUTED_SPELLING", "EngineInfo", "engine"]

ENGINE: Mapping[str, EngineInfo] = MappingProxyType(
    {e.name: e for e in (vllm.ENGINE, sglang.ENGINE)}
)
"""Engine name -> its facts."""

ENGINE_NAMES: tuple[str, ...] = tuple(ENGINE)
"""Every engine name, the default first."""

DEFAULT_ENGINE = "vllm"


def engine(name: str) -> EngineInfo:
    """The record of engine ``name`` (a :class:`SyncvizError` naming the choices if unknown)."""
    try:
        return ENGINE[name]
    except (KeyError, TypeError):
        raise SyncvizError(
            f"engine ({name!r}) is not known", fix="use " + " or ".join(ENGINE_NAMES)
        ) from None
