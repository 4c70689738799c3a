"""Every size rule once, as data: what it reads, when it holds, what it says, and its fixes.

``syncviz.parallel.validate`` (what a sync needs) and the oracle's size check (what a
layout needs) both read this table; nothing else states a size rule.

>>> from syncviz.presets import preset
>>> from syncviz.parallel import Parallel
>>> broken = first_broken(preset("llama3-8b"), Parallel(tp=3), Parallel(tp=6))
>>> broken.message, broken.fix
('src tp (3) must divide num_attention_heads (32)', 'use 1, 2, 4 or 8')
>>> broken.field, broken.choices
('src.tp', (1, 2, 4, 8))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, cast

from syncviz.constants import VLLM_VOCAB_PADDING
from syncviz.engines import ENGINE, engine
from syncviz.errors import SyncvizError
from syncviz.families import is_hep

if TYPE_CHECKING:  # both sit on floors above this one; the rules only read their fields
    from syncviz.parallel import Parallel
    from syncviz.spec import ModelSpec

Side = Literal["src", "dst"]
Need = Literal["layout", "sync"]
FIELDS = ("src.tp", "src.pp", "src.ep", "dst.tp", "dst.pp", "dst.ep", "dst.dp_attention")

Holds = Callable[["Parallel", "Parallel"], bool]
Say = Callable[["Parallel", "Parallel"], str]


@dataclass(frozen=True)
class Rule:
    """One requirement on the sizes of a model.

    ``reads`` names the fields it depends on; the first is the field its fix
    suggests values for. ``needs`` says who relies on it: ``"layout"`` rules are
    what the oracle needs to lay the model out, ``"sync"`` ones only what the
    synchronizer needs on top.

    >>> from syncviz.presets import preset
    >>> from syncviz.parallel import Parallel
    >>> heads = rules(preset("qwen2-7b"))[0]
    >>> heads.reads, heads.holds(Parallel(tp=3), Parallel(tp=3))
    (('src.tp',), False)
    >>> heads.message(Parallel(tp=3), Parallel(tp=3))
    'src tp (3) must divide num_attention_heads (28)'
    """

    reads: tuple[str, ...]
    holds: Holds
    message: Say
    needs: Need = "layout"
    fix_label: str = ""  # names the suggested field when the message's subject is compound


@dataclass(frozen=True)
class Broken:
    """The first rule some sizes break, with the field to change and the values that fit.

    ``field`` is the field ``choices`` are for (usually the rule's first one; another
    field it reads when no value of the first fits). ``choices`` is empty when no
    single change fits.
    """

    rule: Rule
    message: str
    field: str
    choices: tuple[int, ...]
    fix: str

    def error(self) -> SyncvizError:
        """The error to raise."""
        return SyncvizError(self.message, fix=self.fix)


def value_of(src: Parallel, dst: Parallel, field: str) -> int:
    """The value of ``field`` ("src.tp", ...) in the sizes.

    >>> from syncviz.parallel import Parallel
    >>> value_of(Parallel(tp=2), Parallel(tp=4, pp=2), "dst.pp")
    2
    """
    side, name = _split(field)
    return int(getattr(src if side == "src" else dst, name))


def substitute(src: Parallel, dst: Parallel, field: str, value: int) -> tuple[Parallel, Parallel]:
    """The sizes with ``field`` set to ``value``.

    >>> from syncviz.parallel import Parallel
    >>> substitute(Parallel(tp=2), Parallel(tp=4), "src.tp", 1)[0].tp
    1
    """
    side, name = _split(field)
    if side == "src":
        return replace(src, **{name: value}), dst
    return src, replace(dst, **{name: value})


# ---------------------------------------------------------------- the table


def _side_of(side: Side) -> Callable[[Parallel, Parallel], Parallel]:
    return (lambda a, b: a) if side == "src" else (lambda a, b: b)


def _divides(side: Side, name: str, size_name: str, size: int, why: str = "") -> Rule:
    """``side``'s ``name`` (tp, ep or pp) must divide ``size`` (named ``size_name``): what is
    split over those ranks splits evenly."""
    of = _side_of(side)
    return Rule(
        (f"{side}.{name}",),
        lambda a, b: size % getattr(of(a, b), name) == 0,
        lambda a, b: (
            f"{side} {name} ({getattr(of(a, b), name)}) must divide {size_name} ({size}){why}"
        ),
    )


def attention_rules(side: Side, heads: int, groups: int) -> list[Rule]:
    """The rules on one side's tp from attention alone: the query heads split evenly; on the
    trainer the K/V groups too (Megatron), on vLLM the groups split or are replicated.

    >>> from syncviz.parallel import Parallel
    >>> four = Parallel(tp=4)
    >>> for rule in attention_rules("src", 8, 2):
    ...     print(rule.holds(four, four), rule.message(four, four))
    True src tp (4) must divide num_attention_heads (8)
    False src tp (4) must divide num_query_groups (2)
    """
    of = _side_of(side)
    found = [
        Rule(
            (f"{side}.tp",),
            lambda a, b: heads % _attn_tp(of(a, b)) == 0,
            lambda a, b: f"{_attn_words(side, of(a, b))} must divide num_attention_heads ({heads})",
        )
    ]
    if side == "src":  # Megatron splits the K/V groups over tp
        found.append(_divides("src", "tp", "num_query_groups", groups))
    else:  # vLLM splits them over tp, or replicates each on tp/groups ranks
        found.append(
            Rule(
                ("dst.tp",),
                lambda a, b: groups % _attn_tp(b) == 0 or _attn_tp(b) % groups == 0,
                lambda a, b: (
                    f"{_attn_words('dst', b)} and num_query_groups ({groups}) must divide one"
                    " another"
                    " (K/V heads are split over tp, or each is replicated on tp/groups ranks)"
                ),
            )
        )
    return found


def _attn_tp(sizes: Parallel) -> int:
    """The ranks attention is sharded over (``tp / dp_attention``; a side without it: tp)."""
    return sizes.tp // getattr(sizes, "dp_attention", 1)


def _attn_words(side: Side, sizes: Parallel) -> str:
    """``dst tp (4)``, or with DP attention ``dst attention tp (tp 8 / dp_attention 2 = 4)``."""
    dp = getattr(sizes, "dp_attention", 1)
    if dp == 1:
        return f"{side} tp ({sizes.tp})"
    return f"{side} attention tp (tp {sizes.tp} / dp_attention {dp} = {sizes.tp // dp})"


def _tp_rules(spec: ModelSpec, side: Side, hep: bool) -> list[Rule]:
    """Rules on one side's tp: every tensor split over tp must split evenly."""

    def divides(size_name: str, size: int, why: str = "") -> Rule:
        return _divides(side, "tp", size_name, size, why)

    found = attention_rules(side, spec.num_attention_heads, spec.num_query_groups)
    if side == "dst" and not spec.dst_kv_replicated:
        why = " (this family's vLLM model splits the K/V heads and never replicates them)"
        found.append(divides("num_query_groups", spec.num_query_groups, why))
    if spec.has_dense_layers:  # an all-MoE model has no dense MLP: intermediate_size unused
        found.append(divides("ffn_hidden_size", spec.ffn_hidden_size))
    if spec.is_moe and side == "src" and not hep:
        why = " (each expert's FFN is split over tp)"
        found.append(divides("moe_ffn_hidden_size", spec.moe_ffn_hidden_size, why))
    if spec.is_moe and side == "dst":  # with expert parallel, experts are whole on each rank
        inter = spec.moe_ffn_hidden_size
        found.append(
            Rule(
                ("dst.tp",),
                lambda a, b: b.ep > 1 or inter % b.tp == 0,
                lambda a, b: (
                    f"dst tp ({b.tp}) must divide moe_ffn_hidden_size ({inter})"
                    " (each expert's FFN is split over tp)"
                ),
            )
        )
    if spec.shared_expert_ffn_hidden_size:
        found.append(divides("shared_expert_ffn_hidden_size", spec.shared_expert_ffn_hidden_size))
    if spec.mtp_layers and side == "src":  # vLLM and SGLang hold eh_proj whole
        why = " (the MTP layer's eh_proj rows are split over tp)"
        found.append(divides("hidden_size", spec.hidden_size, why))
    if side == "dst":  # Megatron pads its vocab to 128 * tp, so only vLLM's padding can fail
        padded = spec.padded_vocab_size
        why = f" (vocab_size {spec.vocab_size} padded to a multiple of {VLLM_VOCAB_PADDING})"
        found.append(divides("padded_vocab_size", padded, why))
    return found


def _src_ep_rules(spec: ModelSpec, hep: bool) -> list[Rule]:
    experts = spec.num_experts
    if not spec.is_moe:
        return [_dense_ep_rule("src")]
    if hep:
        return [
            Rule(
                ("src.ep", "src.tp"),
                lambda a, b: experts % (a.ep * a.tp) == 0,
                lambda a, b: (
                    f"src ep*tp ({a.ep}*{a.tp} = {a.ep * a.tp}) must divide num_experts"
                    f" ({experts}) ({spec.family} shards whole experts over ep*tp ranks)"
                ),
                fix_label="src ep ",
            )
        ]
    return [_divides("src", "ep", "num_experts", experts)]


def _dst_ep_rules(spec: ModelSpec) -> list[Rule]:
    """The destination's expert parallel: whole experts on each rank (expert TP 1) over an
    EP group of tp x dp ranks (vLLM; one replica here, so ep is 1 or tp)."""
    experts = spec.num_experts
    if not spec.is_moe:
        return [_dense_ep_rule("dst")]
    return [
        Rule(
            ("dst.ep",),
            lambda a, b: b.ep <= experts,
            lambda a, b: f"dst ep ({b.ep}) must be at most num_experts ({experts})",
        ),
        Rule(
            ("dst.ep", "dst.tp"),
            lambda a, b: b.ep in (1, b.tp),
            lambda a, b: (
                f"dst ep ({b.ep}) must be 1 or dst tp ({b.tp}): the engine's expert-parallel"
                " group is its tp x dp ranks (one replica here), each holding whole experts"
            ),
        ),
    ]


def _dp_attention_rules() -> list[Rule]:
    """DP attention (SGLang): attention over tp / dp_attention ranks, on engines that have it."""
    able = tuple(e.display for e in ENGINE.values() if e.dp_attention)
    return [
        Rule(
            ("dst.dp_attention",),
            lambda a, b: b.dp_attention == 1 or engine(b.engine).dp_attention,
            lambda a, b: (
                f"dst dp_attention ({b.dp_attention}) needs an engine with DP attention"
                f" ({', '.join(able)}); {engine(b.engine).display} has none"
            ),
        ),
        Rule(
            ("dst.dp_attention", "dst.tp"),
            lambda a, b: b.tp % b.dp_attention == 0,
            lambda a, b: f"dst dp_attention ({b.dp_attention}) must divide dst tp ({b.tp})",
        ),
    ]


def _dense_ep_rule(side: Side) -> Rule:
    """A dense model has no experts to spread: ``side``'s ep must be 1."""
    of = _side_of(side)
    return Rule(
        (f"{side}.ep",),
        lambda a, b: of(a, b).ep == 1,
        lambda a, b: f"{side} ep ({of(a, b).ep}) must be 1 for a dense model (num_experts is 0)",
    )


def rules(spec: ModelSpec, *, hep: bool | None = None) -> list[Rule]:
    """Every rule for ``spec``, in the order they are checked: rules on one field first,
    then the rules tying two fields together.

    ``hep`` says the trainer shards whole routed experts over ep * tp ranks
    (default: as the family does, see :mod:`syncviz.families`).

    >>> from syncviz.presets import preset
    >>> [rule.reads[0] for rule in rules(preset("llama2-7b"))][:6]
    ['src.tp', 'src.tp', 'src.tp', 'src.ep', 'src.pp', 'dst.ep']
    """
    hep = is_hep(spec.family) if hep is None else hep
    cross = [
        *_dst_ep_rules(spec),
        *_dp_attention_rules(),
        Rule(
            ("dst.tp", "src.tp"),
            # The sync sends each source rank's regrouped shard to dst.tp / src.tp ranks.
            lambda a, b: b.tp % a.tp == 0,
            lambda a, b: f"dst tp ({b.tp}) must be a multiple of src tp ({a.tp})",
            needs="sync",
        ),
    ]
    table = [
        *_tp_rules(spec, "src", hep),
        *_src_ep_rules(spec, hep),
        _divides("src", "pp", "num_layers", spec.num_layers),
        *cross,
        *_tp_rules(spec, "dst", hep),
        _divides("dst", "pp", "num_layers", spec.num_layers),
    ]
    # A field broken on its own is told before a rule tying it to another field, so a fix
    # is never undone by the next message (sorted is stable: the order above stays).
    return sorted(table, key=lambda rule: len(rule.reads) > 1)


# ---------------------------------------------------------------- checking and choices


def first_broken(
    spec: ModelSpec,
    src: Parallel,
    dst: Parallel,
    *,
    needs: Need = "sync",
    hep: bool | None = None,
) -> Broken | None:
    """The first rule the sizes break, with its fix; None when all hold.

    ``needs="layout"`` checks only what a layout needs; ``"sync"`` (default) everything.
    Taking any of the choices makes every rule on that field hold, except rules that
    also read a field which is broken on its own (that field is told next).

    >>> from syncviz.presets import preset
    >>> from syncviz.parallel import Parallel
    >>> first_broken(preset("llama3-8b"), Parallel(tp=2), Parallel(tp=4)) is None
    True
    >>> first_broken(preset("llama3-8b"), Parallel(tp=8), Parallel(tp=6)).fix
    'use 8, 16 or 32'
    """
    table = _table(spec, needs, hep)
    for rule in table:
        if not rule.holds(src, dst):
            return _explain(table, spec, src, dst, rule)
    return None


def valid_choices(
    spec: ModelSpec,
    src: Parallel,
    dst: Parallel,
    field: str,
    *,
    needs: Need = "sync",
    hep: bool | None = None,
    ignore: tuple[str, ...] = (),
) -> tuple[int, ...]:
    """Values of ``field`` that pass every rule reading it, the other sizes kept.

    A rule that also reads another field is counted only when that other field
    passes its own rules (else it is that field which needs changing first);
    rules reading a field named in ``ignore`` are not counted.

    >>> from syncviz.presets import preset
    >>> from syncviz.parallel import Parallel
    >>> valid_choices(preset("qwen1.5-moe-a2.7b"), Parallel(tp=2), Parallel(tp=2), "src.ep")
    (1, 2, 3, 5, 6, 10, 15, 30)
    """
    return _choices(_table(spec, needs, hep), spec, src, dst, field, ignore)


def _table(spec: ModelSpec, needs: Need, hep: bool | None) -> list[Rule]:
    table = rules(spec, hep=hep)
    return table if needs == "sync" else [r for r in table if r.needs == "layout"]


def _own_rules_hold(table: list[Rule], src: Parallel, dst: Parallel, field: str) -> bool:
    return all(r.holds(src, dst) for r in table if r.reads == (field,))


def _choices(
    table: list[Rule],
    spec: ModelSpec,
    src: Parallel,
    dst: Parallel,
    field: str,
    ignore: tuple[str, ...] = (),
) -> tuple[int, ...]:
    _split(field)
    checks = [
        r
        for r in table
        if field in r.reads
        and not set(r.reads) & set(ignore)
        and all(_own_rules_hold(table, src, dst, other) for other in r.reads if other != field)
    ]

    def fits(value: int) -> bool:
        a, b = substitute(src, dst, field, value)
        return all(r.holds(a, b) for r in checks)

    return tuple(value for value in _candidates(spec, field) if fits(value))


def _explain(
    table: list[Rule], spec: ModelSpec, src: Parallel, dst: Parallel, rule: Rule
) -> Broken:
    """The fix for ``rule``: values for its first field; when none fits, for another it reads."""
    message = rule.message(src, dst)
    first, *others = rule.reads
    values = _choices(table, spec, src, dst, first)
    if values:
        return Broken(rule, message, first, values, f"use {rule.fix_label}{spoken(values)}")
    for other in others:
        values = tuple(
            value
            for value in _choices(table, spec, src, dst, other)
            if rule.holds(*substitute(src, dst, other, value))
        )
        if values:
            fix = (
                f"no {_named(first)} fits {_named(other)} {value_of(src, dst, other)}:"
                f" use {_named(other)} {spoken(values)} (with {_named(first)}"
                f" {value_of(src, dst, first)})"
            )
            return Broken(rule, message, other, values, fix)
    fix = "no value fits the other sizes; change them together (see valid_choices)"
    return Broken(rule, message, first, (), fix)


def _split(field: str) -> tuple[Side, str]:
    side, _, name = field.partition(".")
    if field not in FIELDS:
        raise SyncvizError(
            f"field {field!r} is not known",
            fix="use " + ", ".join(FIELDS),
        )
    return cast(Side, side), name


def _divisors(n: int) -> tuple[int, ...]:
    return tuple(d for d in range(1, n + 1) if n % d == 0)


def _candidates(spec: ModelSpec, field: str) -> tuple[int, ...]:
    side, name = _split(field)
    if name == "tp":  # no tp that fails to divide the heads can ever pass
        return _divisors(spec.num_attention_heads)
    if name == "pp":
        return _divisors(spec.num_layers)
    if side == "src" and spec.is_moe:
        return _divisors(spec.num_experts)
    if name == "ep" and spec.is_moe:  # the destination's: whole experts, up to one a rank
        return tuple(range(1, spec.num_experts + 1))
    if name == "dp_attention":
        return _divisors(spec.num_attention_heads)
    return (1,)


def _named(field: str) -> str:
    return field.replace(".", " ")


def spoken(values: tuple[object, ...]) -> str:
    """Values as a person lists them.

    >>> spoken((1, 2, 4, 8))
    '1, 2, 4 or 8'
    """
    words = [str(v) for v in values]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]
