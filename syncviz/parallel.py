"""Parallel sizes of one side (trainer or inference engine), and whether they fit a model.

>>> from syncviz.parallel import Parallel, validate
>>> Parallel(tp=2, pp=2)
Parallel(tp=2, pp=2, ep=1, dp=1)
>>> Parallel(tp=2).world_size
2
>>> from syncviz.presets import preset
>>> validate(preset("llama3-8b"), Parallel(tp=2), Parallel(tp=3))
Traceback (most recent call last):
...
syncviz.errors.SyncvizError: dst tp (3) must be a multiple of src tp (2): use 2, 4, 8, 16 or 32
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal, cast

from syncviz.errors import SyncvizError
from syncviz.spec import ModelSpec

Side = Literal["src", "dst"]

# ChatLearn's Qwen-MoE trainer ("HEP") shards whole routed experts over ep * tp ranks
# instead of splitting each expert over tp.
HEP_FAMILIES = frozenset({"qwen2-moe"})


@dataclass(frozen=True)
class Parallel:
    """Tensor, pipeline, expert and data parallel sizes of one side.

    Only the sizes' own sanity is checked here; how they must fit a model is
    checked by :func:`validate` (dst tp must divide the
    heads, and so on), where every rule names the field, value and fix.

    >>> Parallel(tp=4, ep=2).ep
    2
    """

    tp: int
    pp: int = 1
    ep: int = 1
    dp: int = 1

    def __post_init__(self) -> None:
        for name in ("tp", "pp", "ep", "dp"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SyncvizError(
                    f"{name} ({value!r}) must be a positive integer", fix=f"use {name}=1 or more"
                )

    @property
    def world_size(self) -> int:
        """Ranks of one model replica times data-parallel replicas."""
        return self.tp * self.pp * self.dp


# ---------------------------------------------------------------- the rules, as data

Check = Callable[[ModelSpec, Parallel, Parallel], bool]
Say = Callable[[ModelSpec, Parallel, Parallel], str]


@dataclass(frozen=True)
class Rule:
    """One requirement on the sizes. ``reads`` names the fields it depends on
    ("src.tp", ...); the first one is the field the fix suggests values for.
    ``message`` says what is wrong (side, field, value, rule) when ``holds`` is False.

    >>> from syncviz.presets import preset
    >>> spec = preset("qwen2-7b")
    >>> heads = rules(spec)[0]
    >>> heads.reads, heads.holds(spec, Parallel(tp=3), Parallel(tp=3))
    (('src.tp',), False)
    >>> heads.message(spec, Parallel(tp=3), Parallel(tp=3))
    'src tp (3) must divide num_attention_heads (28)'
    """

    side: Side
    reads: tuple[str, ...]
    holds: Check
    message: Say
    fix_label: str = ""  # names the suggested field when the message's subject is compound


def _sides(src: Parallel, dst: Parallel, side: Side) -> Parallel:
    return src if side == "src" else dst


def _tp_rules(spec: ModelSpec, side: Side) -> list[Rule]:
    """Rules on one side's tp: every tensor split over tp must split evenly."""
    tp = f"{side}.tp"

    def get(src: Parallel, dst: Parallel) -> int:
        return _sides(src, dst, side).tp

    def divides(size_name: str, size: int, why: str = "") -> Rule:
        return Rule(
            side,
            (tp,),
            lambda s, a, b: size % get(a, b) == 0,
            lambda s, a, b: f"{side} tp ({get(a, b)}) must divide {size_name} ({size}){why}",
        )

    groups = spec.num_query_groups
    found = [
        divides("num_attention_heads", spec.num_attention_heads),
        Rule(
            side,
            (tp,),
            # K/V heads are split when tp divides them, replicated when they divide tp.
            lambda s, a, b: groups % get(a, b) == 0 or get(a, b) % groups == 0,
            lambda s, a, b: (
                f"{side} tp ({get(a, b)}) and num_query_groups ({groups}) must divide one"
                " another (K/V heads are split over tp, or each is replicated on tp/groups ranks)"
            ),
        ),
    ]
    if not spec.is_moe:  # an MoE model here has no dense MLP; its intermediate_size is unused
        found.append(divides("ffn_hidden_size", spec.ffn_hidden_size))
    if spec.is_moe and (side == "dst" or spec.family not in HEP_FAMILIES):
        why = " (each expert's FFN is split over tp)"
        found.append(divides("moe_ffn_hidden_size", spec.moe_ffn_hidden_size, why))
    if spec.shared_expert_ffn_hidden_size:
        found.append(divides("shared_expert_ffn_hidden_size", spec.shared_expert_ffn_hidden_size))
    if side == "dst":  # Megatron pads its vocab to 128 * tp, so only vLLM's 64-padding can fail
        padded = spec.padded_vocab_size
        why = f" (vocab_size {spec.vocab_size} padded to a multiple of 64)"
        found.append(divides("padded_vocab_size", padded, why))
    return found


def _src_ep_rules(spec: ModelSpec) -> list[Rule]:
    experts = spec.num_experts
    if not spec.is_moe:
        return [
            Rule(
                "src",
                ("src.ep",),
                lambda s, a, b: a.ep == 1,
                lambda s, a, b: f"src ep ({a.ep}) must be 1 for a dense model (num_experts is 0)",
            )
        ]
    if spec.family in HEP_FAMILIES:
        return [
            Rule(
                "src",
                ("src.ep", "src.tp"),
                lambda s, a, b: experts % (a.ep * a.tp) == 0,
                lambda s, a, b: (
                    f"src ep*tp ({a.ep}*{a.tp} = {a.ep * a.tp}) must divide num_experts"
                    f" ({experts}) ({spec.family} shards whole experts over ep*tp ranks)"
                ),
                fix_label="src ep ",
            )
        ]
    return [
        Rule(
            "src",
            ("src.ep",),
            lambda s, a, b: experts % a.ep == 0,
            lambda s, a, b: f"src ep ({a.ep}) must divide num_experts ({experts})",
        )
    ]


def _pp_rule(spec: ModelSpec, side: Side) -> Rule:
    def pp(src: Parallel, dst: Parallel) -> int:
        return _sides(src, dst, side).pp

    return Rule(
        side,
        (f"{side}.pp",),
        lambda s, a, b: spec.num_layers % pp(a, b) == 0,
        lambda s, a, b: f"{side} pp ({pp(a, b)}) must divide num_layers ({spec.num_layers})",
    )


def rules(spec: ModelSpec) -> list[Rule]:
    """Every rule for ``spec``, in the order :func:`validate` checks them.

    >>> from syncviz.presets import preset
    >>> [rule.reads[0] for rule in rules(preset("llama2-7b"))][:6]
    ['src.tp', 'src.tp', 'src.tp', 'src.ep', 'src.pp', 'dst.ep']
    """
    cross = [
        Rule(
            "dst",
            ("dst.ep",),
            lambda s, a, b: b.ep == 1,
            lambda s, a, b: (
                f"dst ep ({b.ep}) must be 1 (the vLLM side has no expert parallel here;"
                " it splits every expert over tp)"
            ),
        ),
        Rule(
            "dst",
            ("dst.tp", "src.tp"),
            # The sync sends each source rank's regrouped shard to dst.tp / src.tp ranks.
            lambda s, a, b: b.tp % a.tp == 0,
            lambda s, a, b: f"dst tp ({b.tp}) must be a multiple of src tp ({a.tp})",
        ),
    ]
    return [
        *_tp_rules(spec, "src"),
        *_src_ep_rules(spec),
        _pp_rule(spec, "src"),
        *cross,
        *_tp_rules(spec, "dst"),
        _pp_rule(spec, "dst"),
    ]


# ---------------------------------------------------------------- checking and fixes


def validate(spec: ModelSpec, src: Parallel, dst: Parallel) -> None:
    """Raise :class:`SyncvizError` for the first rule the sizes break; else return None.

    The message names the side, the field, its value and the rule; the fix lists
    the values of that field that satisfy every rule on it, the other sizes kept.

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
    for rule in rules(spec):
        if not rule.holds(spec, src, dst):
            raise SyncvizError(rule.message(spec, src, dst), fix=_fix(spec, src, dst, rule))


def valid_choices(spec: ModelSpec, src: Parallel, dst: Parallel, field: str) -> tuple[int, ...]:
    """Values of ``field`` ("src.tp", "dst.pp", ...) that pass every rule of its side
    that reads it, all other sizes kept as given.

    >>> from syncviz.presets import preset
    >>> valid_choices(preset("qwen1.5-moe-a2.7b"), Parallel(tp=2), Parallel(tp=2), "src.ep")
    (1, 2, 3, 5, 6, 10, 15, 30)
    """
    side, name = _split_field(field)
    candidates = _candidates(spec, side, name)
    checks = [r for r in rules(spec) if r.side == side and field in r.reads]

    def fits(value: int) -> bool:
        a, b = _substitute(src, dst, field, value)
        return all(r.holds(spec, a, b) for r in checks)

    return tuple(value for value in candidates if fits(value))


def valid_tp_sizes(spec: ModelSpec, src: Parallel | None = None) -> tuple[int, ...]:
    """Source tp sizes that fit ``spec`` (with ep=1), or, given ``src``, the
    destination tp sizes that fit it and ``spec``. For pickers in UIs.

    >>> from syncviz.presets import preset
    >>> valid_tp_sizes(preset("llama3-8b"))
    (1, 2, 4, 8, 16, 32)
    >>> valid_tp_sizes(preset("llama3-8b"), Parallel(tp=4))
    (4, 8, 16, 32)
    """
    if src is None:
        return valid_choices(spec, Parallel(tp=1), Parallel(tp=1), "src.tp")
    return valid_choices(spec, src, Parallel(tp=src.tp), "dst.tp")


def _split_field(field: str) -> tuple[Side, str]:
    side, _, name = field.partition(".")
    if side not in ("src", "dst") or name not in ("tp", "pp", "ep"):
        raise SyncvizError(
            f"field {field!r} is not known",
            fix="use src.tp, src.pp, src.ep, dst.tp, dst.pp or dst.ep",
        )
    return cast(Side, side), name


def _divisors(n: int) -> tuple[int, ...]:
    return tuple(d for d in range(1, n + 1) if n % d == 0)


def _candidates(spec: ModelSpec, side: Side, name: str) -> tuple[int, ...]:
    if name == "tp":  # no tp that fails to divide the heads can ever pass
        return _divisors(spec.num_attention_heads)
    if name == "pp":
        return _divisors(spec.num_layers)
    if side == "src" and spec.is_moe:
        return _divisors(spec.num_experts)
    return (1,)


def _fix(spec: ModelSpec, src: Parallel, dst: Parallel, rule: Rule) -> str:
    """Values for the rule's first field; when none exists, for a field it also reads."""
    first, *others = rule.reads
    values = valid_choices(spec, src, dst, first)
    if values:
        return f"use {rule.fix_label}{_spoken(values)}"
    for other in others:
        values = tuple(
            value
            for value in valid_choices(spec, src, dst, other)
            if rule.holds(spec, *_substitute(src, dst, other, value))
        )
        if values:
            return (
                f"no {_named(first)} fits {_named(other)} {_value(src, dst, other)}:"
                f" use {_named(other)} {_spoken(values)} (with {_named(first)}"
                f" {_value(src, dst, first)})"
            )
    return "no value fits the other sizes; change them together (see valid_choices)"


def _substitute(src: Parallel, dst: Parallel, field: str, value: int) -> tuple[Parallel, Parallel]:
    side, name = _split_field(field)
    if side == "src":
        return replace(src, **{name: value}), dst
    return src, replace(dst, **{name: value})


def _named(field: str) -> str:
    return field.replace(".", " ")


def _value(src: Parallel, dst: Parallel, field: str) -> int:
    side, name = _split_field(field)
    return getattr(_sides(src, dst, side), name)


def _spoken(values: tuple[int, ...]) -> str:
    """1, 2, 4 or 8"""
    words = [str(v) for v in values]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]
