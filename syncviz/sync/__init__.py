"""The ChatLearn-compatible parameter synchronizer (faithful port, December 2024).

Same class, method and attribute names as ``chatlearn.synchronizer``, so a subclass
written for ChatLearn drops in. Collectives and the Megatron version are
injectable (see :mod:`syncviz.sync.collective`).

>>> from syncviz.sync import BaseSync, MegatronVllmQWen2Sync, get_synchronizer
>>> issubclass(MegatronVllmQWen2Sync, BaseSync)
True
"""

from syncviz.sync.base import BaseSync
from syncviz.sync.collective import Collective, TorchCollective
from syncviz.sync.megatron_megatron import MegatronMegatronSync
from syncviz.sync.megatron_vllm import (
    MegatronVersion,
    MegatronVllmLlamaSync,
    MegatronVllmQWen2Sync,
    MegatronVllmQWenSync,
    MegatronVllmSync,
)
from syncviz.sync.select import get_synchronizer, synchronizer_for
from syncviz.sync.vllm_utils import fix_qwen_query_key_value_ordering, split_attn_state

__all__ = [
    "BaseSync",
    "Collective",
    "MegatronMegatronSync",
    "MegatronVersion",
    "MegatronVllmLlamaSync",
    "MegatronVllmQWen2Sync",
    "MegatronVllmQWenSync",
    "MegatronVllmSync",
    "TorchCollective",
    "fix_qwen_query_key_value_ordering",
    "get_synchronizer",
    "split_attn_state",
    "synchronizer_for",
]
