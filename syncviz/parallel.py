"""Parallel sizes of one side (trainer or inference engine), and whether they fit a model.

>>> from syncviz.parallel import Parallel, validate
>>> Parallel(tp=2, pp=2)
Parallel(tp=2, pp=2, ep=1, dp=1)
>>> Parallel(tp=2).world_size
2
>>> from syncviz.presets import preset
>>> validate(preset("llama3-8b"), Parallel(tp=4), Parallel(tp=2))
Traceback (most recent call last):
...
syncviz.errors.SyncvizError: dst tp (2) must be a multiple of src tp (4): use 4, 8, 16 or 32
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields

import syncviz.rules as _rules
from syncviz.engines import DEFAULT_ENGINE, engine
from syncviz.errors import SyncvizError
from syncviz.spec import ModelSpec

EXPERT_PLACEMENTS = ("linear", "round_robin")
"""How a destination with expert parallelism places experts on its ranks (vLLM's names)."""


@dataclass(frozen=True, repr=False)
class Parallel:
    """Tensor, pipeline, expert and data parallel sizes of one side; on the destination,
    also its engine and how that engine places experts and attention.

    Only the sizes' own sanity is checked here; how they must fit a model is
    checked by :func:`validate` against the rule table of :mod:`syncviz.rules`,
    where every rule names the field, value and fix.

    Destination only: ``engine`` (``"vllm"`` or ``"sglang"``, see
    :mod:`syncviz.engines`); ``ep`` above 1 puts whole experts on each rank (expert TP
    1) placed ``expert_placement`` (``"linear"``: contiguous, the first ``E mod ep``
    ranks one more; ``"round_robin"``: rank r holds experts r, r+ep, ...);
    ``dp_attention`` shards attention over ``tp / dp_attention`` ranks (SGLang).

    >>> Parallel(tp=4, ep=2).ep
    2
    >>> Parallel(tp=4, ep=4, engine="sglang", expert_placement="round_robin")
    Parallel(tp=4, pp=1, ep=4, dp=1, engine='sglang', expert_placement='round_robin')
    >>> try:
    ...     Parallel(tp=2, expert_placement="striped")
    ... except SyncvizError as err:
    ...     print(err.fix)
    use linear or round_robin
    """

    tp: int
    pp: int = 1
    ep: int = 1
    dp: int = 1
    engine: str = DEFAULT_ENGINE
    expert_placement: str = "linear"
    dp_attention: int = 1

    def __post_init__(self) -> None:
        for name in ("tp", "pp", "ep", "dp", "dp_attention"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SyncvizError(
                    f"{name} ({value!r}) must be a positive integer", fix=f"use {name}=1 or more"
                )
        engine(self.engine)  # refuses an unknown engine, naming the choices
        if self.expert_placement not in EXPERT_PLACEMENTS:
            raise SyncvizError(
                f"expert_placement ({self.expert_placement!r}) is not one of the choices",
                fix="use " + " or ".join(EXPERT_PLACEMENTS),
            )

    def __repr__(self) -> str:
        # The destination's engine fields only when they differ from their defaults.
        shown = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
            if f.name in ("tp", "pp", "ep", "dp") or getattr(self, f.name) != f.default
        ]
        return f"Parallel({', '.join(shown)})"

    @property
    def attn_tp(self) -> int:
        """Ranks attention is sharded over: ``tp / dp_attention`` (``tp`` without DP attention).

        >>> Parallel(tp=8, engine="sglang", dp_attention=4).attn_tp
        2
        """
        return self.tp // self.dp_attention

    @property
    def engine_name(self) -> str:
        """How the engine is printed (``vLLM``, ``SGLang``)."""
        return engine(self.engine).display

    def sizes_text(self) -> str:
        """The sizes in short words, pp and ep only when above 1 (figure titles, reports).

        >>> Parallel(tp=2).sizes_text(), Parallel(tp=2, pp=2, ep=4).sizes_text()
        ('tp2', 'tp2 pp2 ep4')
        """
        parts = [f"tp{self.tp}"] + [
            f"{k}{v}" for k, v in (("pp", self.pp), ("ep", self.ep)) if v > 1
        ]
        if self.ep > 1 and self.expert_placement != "linear":
            parts.append(self.expert_placement)
        if self.dp_attention > 1:
            parts.append(f"dp-attention{self.dp_attention}")
        return " ".join(parts)

    @property
    def world_size(self) -> int:
        """Ranks of one model replica times data-parallel replicas."""
        return self.tp * self.pp * self.dp


def validate(spec: ModelSpec, src: Parallel, dst: Parallel) -> None:
    """Raise :class:`SyncvizError` for the first rule the sizes break; else return None.

    The message names the side, the field, its value and the rule; the fix lists
    the values of that field that satisfy every rule on it (see
    :func:`syncviz.rules.first_broken`), the other sizes kept.

    >>> from syncviz.presets import preset
    >>> validate(preset("qwen2-7b"), Parallel(tp=2), Parallel(tp=4))
    >>> validate(preset("qwen2-7b"), Parallel(tp=2), Parallel(tp=8))
    Traceback (most recent call last):
    ...
    syncviz.errors.SyncvizError: dst tp (8) must divide num_attention_heads (28): use 2 or 4
    """
    if not isinstance(spec, ModelSpec):
        raise SyncvizError(
            f"spec ({type(spec).__name__}) must be a ModelSpec",
            fix="use syncviz.preset(name) or ModelSpec.from_hf_config(path)",
        )
    for side, sizes in (("src", src), ("dst", dst)):
        if not isinstance(sizes, Parallel):
            raise SyncvizError(
                f"{side} ({sizes!r}) must be a Parallel", fix=f"use e.g. {side}=Parallel(tp=2)"
            )
    trainer_default = Parallel(tp=src.tp, pp=src.pp, ep=src.ep, dp=src.dp)
    for name in ("engine", "expert_placement", "dp_attention"):
        if getattr(src, name) != getattr(trainer_default, name):
            raise SyncvizError(
                f"src {name} ({getattr(src, name)!r}) is set on the trainer side",
                fix=f"set {name} on the destination sizes (dst=Parallel(..., {name}=...))",
            )
    broken = _first_broken(spec, src, dst)
    if broken is not None:
        raise broken.error()


@functools.lru_cache(maxsize=256)
def _first_broken(spec: ModelSpec, src: Parallel, dst: Parallel) -> _rules.Broken | None:
    """Each (spec, sizes) is judged once, however many ranks ask (all three are frozen)."""
    return _rules.first_broken(spec, src, dst)


def valid_choices(spec: ModelSpec, src: Parallel, dst: Parallel, field: str) -> tuple[int, ...]:
    """Values of ``field`` ("src.tp", "dst.pp", ...) that pass every rule reading it,
    all other sizes kept as given (see :func:`syncviz.rules.valid_choices`).

    >>> from syncviz.presets import preset
    >>> valid_choices(preset("qwen1.5-moe-a2.7b"), Parallel(tp=2), Parallel(tp=2), "src.ep")
    (1, 2, 3, 5, 6, 10, 15, 30)
    """
    return _rules.valid_choices(spec, src, dst, field)


def valid_tp_sizes(spec: ModelSpec, src: Parallel | None = None) -> tuple[int, ...]:
    """Source tp sizes that fit ``spec`` (with ep=1), or, given ``src``, the
    destination tp sizes that fit it and ``spec``. For pickers in UIs.

    >>> from syncviz.presets import preset
    >>> valid_tp_sizes(preset("llama3-8b"))
    (1, 2, 4, 8)
    >>> valid_tp_sizes(preset("llama3-8b"), Parallel(tp=4))
    (4, 8, 16, 32)
    """
    if src is None:
        ignore = ("dst.tp", "dst.pp", "dst.ep")
        return _rules.valid_choices(spec, Parallel(tp=1), Parallel(tp=1), "src.tp", ignore=ignore)
    return valid_choices(spec, src, Parallel(tp=src.tp), "dst.tp")
