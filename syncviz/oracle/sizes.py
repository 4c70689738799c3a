"""The size rules the oracle's layouts rely on, read from the one rule table.

These are the rules the layouts themselves need (Megatron asserts them on the
trainer side, vLLM on the inference side): the ``"layout"`` rules of
:mod:`syncviz.rules`. ``syncviz.parallel.validate`` checks those and the
synchronizer's own (dst tp a multiple of src tp).

>>> from syncviz.spec import ModelSpec
>>> from syncviz.parallel import Parallel
>>> from syncviz.oracle.families import conventions
>>> spec = ModelSpec("tiny", "llama-mcore", 2, 8, 4, 2, 4, 70)
>>> check_sizes(spec, Parallel(tp=2), Parallel(tp=3), conventions("llama-mcore"))
Traceback (most recent call last):
...
syncviz.errors.SyncvizError: dst tp (3) must divide num_attention_heads (4): use 1, 2 or 4
>>> check_sizes(spec, Parallel(tp=2), Parallel(tp=1), conventions("llama-mcore"))
"""

from __future__ import annotations

from syncviz.oracle.families import Conventions
from syncviz.parallel import Parallel
from syncviz.rules import first_broken
from syncviz.spec import ModelSpec


def check_sizes(spec: ModelSpec, src: Parallel, dst: Parallel, conv: Conventions) -> None:
    """Raise :class:`~syncviz.errors.SyncvizError` if the oracle cannot lay ``spec`` out
    for these sizes (``conv`` says how the trainer holds routed experts)."""
    broken = first_broken(spec, src, dst, needs="layout", hep=conv.expert_layout == "hep")
    if broken is not None:
        raise broken.error()
