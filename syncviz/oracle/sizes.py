"""The divisibility rules the oracle's layouts rely on, each told with a fix.

These are the rules the layouts themselves need (Megatron asserts them on the
trainer side, vLLM on the inference side); ``syncviz.parallel`` may check more.
A fix lists the values of the offending field that pass every rule on it.

>>> from syncviz.spec import ModelSpec
>>> from syncviz.parallel import Parallel
>>> from syncviz.oracle.families import conventions
>>> spec = ModelSpec("tiny", "llama-mcore", 2, 8, 4, 2, 4, 70)
>>> check_sizes(spec, Parallel(tp=2), Parallel(tp=3), conventions("llama-mcore"))
Traceback (most recent call last):
...
syncviz.errors.SyncvizError: dst tp (3) must divide num_attention_heads (4): use 1, 2 or 4
"""

from __future__ import annotations

from collections.abc import Callable

from syncviz.errors import SyncvizError
from syncviz.oracle.families import Conventions
from syncviz.oracle.slicing import round_up
from syncviz.parallel import Parallel
from syncviz.spec import ModelSpec

# A rule takes the field's value and returns what is wrong, or None.
Rule = Callable[[int], "str | None"]


def _choices(values: list[int]) -> str:
    words = [str(v) for v in values]
    if not words:
        return "no value works for this model"
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def _divides(label: str, what: str, total: int) -> Rule:
    return lambda k: None if total % k == 0 else f"{label} ({k}) must divide {what} ({total})"


def _src_tp_rules(spec: ModelSpec, src: Parallel, conv: Conventions) -> list[Rule]:
    # Megatron divides heads, K/V groups and every FFN size by tp.
    rules = [
        _divides("src tp", "num_attention_heads", spec.num_attention_heads),
        _divides("src tp", "num_query_groups", spec.num_query_groups),
    ]
    if not spec.is_moe:
        rules.append(_divides("src tp", "ffn_hidden_size", spec.ffn_hidden_size))
    if spec.shared_expert_ffn_hidden_size:
        rules.append(
            _divides("src tp", "shared_expert_ffn_hidden_size", spec.shared_expert_ffn_hidden_size)
        )
    if spec.is_moe and conv.expert_layout == "hep":
        experts, ep = spec.num_experts, src.ep
        rules.append(
            lambda k: (
                None
                if experts % (k * ep) == 0
                else f"src tp*ep ({k}*{ep}={k * ep}) must divide num_experts ({experts})"
                " (HEP spreads whole experts over the tp*ep ranks)"
            )
        )
    elif spec.is_moe:
        rules.append(_divides("src tp", "moe_ffn_hidden_size", spec.moe_ffn_hidden_size))
    return rules


def _src_ep_rules(spec: ModelSpec, src: Parallel, conv: Conventions) -> list[Rule]:
    if not spec.is_moe:
        return [
            lambda k: None if k == 1 else f"src ep ({k}) needs an MoE model; {spec.name} has none"
        ]
    if conv.expert_layout == "hep":
        experts, tp = spec.num_experts, src.tp
        return [
            lambda k: (
                None
                if experts % (tp * k) == 0
                else f"src tp*ep ({tp}*{k}={tp * k}) must divide num_experts ({experts})"
                " (HEP spreads whole experts over the tp*ep ranks)"
            )
        ]
    return [_divides("src ep", "num_experts", spec.num_experts)]


def _dst_tp_rules(spec: ModelSpec) -> list[Rule]:
    nh, ng = spec.num_attention_heads, spec.num_query_groups
    rules = [
        _divides("dst tp", "num_attention_heads", nh),
        lambda k: (
            None
            if (ng % k == 0 if k <= ng else k % ng == 0)
            else f"dst tp ({k}) and num_query_groups ({ng}) must divide one another"
            " (K/V heads are split over tp, or each is replicated on tp/num_query_groups ranks)"
        ),
    ]
    if spec.is_moe:
        rules.append(_divides("dst tp", "moe_ffn_hidden_size", spec.moe_ffn_hidden_size))
    else:
        rules.append(_divides("dst tp", "ffn_hidden_size", spec.ffn_hidden_size))
    if spec.shared_expert_ffn_hidden_size:
        rules.append(
            _divides("dst tp", "shared_expert_ffn_hidden_size", spec.shared_expert_ffn_hidden_size)
        )
    padded = round_up(spec.vocab_size, 64)
    rules.append(_divides("dst tp", "the vocab padded to a multiple of 64", padded))
    return rules


def _check(value: int, rules: list[Rule], limit: int) -> None:
    for rule in rules:
        problem = rule(value)
        if problem is not None:
            good = [k for k in range(1, limit + 1) if all(r(k) is None for r in rules)]
            raise SyncvizError(problem, fix="use " + _choices(good) if good else None)


def check_sizes(spec: ModelSpec, src: Parallel, dst: Parallel, conv: Conventions) -> None:
    """Raise :class:`SyncvizError` if the oracle cannot lay ``spec`` out for these sizes."""
    heads, layers = spec.num_attention_heads, spec.num_layers
    _check(src.tp, _src_tp_rules(spec, src, conv), heads)
    _check(src.ep, _src_ep_rules(spec, src, conv), max(spec.num_experts, 1))
    _check(src.pp, [_divides("src pp", "num_layers", layers)], layers)
    if dst.ep != 1:
        raise SyncvizError(
            f"dst ep ({dst.ep}) is not modelled: vLLM's FusedMoE is laid out without expert"
            " parallel here",
            fix="use dst ep=1",
        )
    _check(dst.tp, _dst_tp_rules(spec), heads)
    _check(dst.pp, [_divides("dst pp", "num_layers", layers)], layers)
