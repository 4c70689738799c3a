"""What a Hugging Face checkpoint of a spec holds, and whether a real one agrees with its config.

Names per family and kind are data (``HF_NAMES``); shapes are never restated
here: each checkpoint tensor is the part of the oracle's global tensor (its
blocks, :mod:`syncviz.oracle.blocks`) that the names join on dim 0.

>>> from syncviz.diagnose.fixtures import tiny_spec
>>> shapes = checkpoint_shapes(tiny_spec("llama-mcore"))
>>> [shapes[f"model.layers.0.self_attn.{p}_proj.weight"] for p in "qkv"]
[(16, 16), (4, 16), (4, 16)]
>>> held = {**shapes, "model.layers.0.self_attn.k_proj.weight": (8, 16)}
>>> disagreement(tiny_spec("llama-mcore"), held)
[Problem(name='model.layers.0.self_attn.k_proj.weight', expected=(4, 16), held=(8, 16))]
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from syncviz.errors import SyncvizError
from syncviz.families.registry import derived
from syncviz.oracle.blocks import blocks, global_shape
from syncviz.oracle.hf_names import HF_FUSED_EXPERTS, HF_NAMES, fused_expert_shape
from syncviz.oracle.layout import layer_kinds
from syncviz.spec import CONFIG_BOUNDS, HF_ARCHITECTURES, ModelSpec

DISAGREE_FIX = (
    "the checkpoint and its config disagree; pass the config.json these weights were saved with"
)


def part_shapes(kind: str, spec: ModelSpec, parts: int) -> list[tuple[int, ...]]:
    """Shapes of the ``parts`` checkpoint tensors joined on dim 0 into ``kind``'s global
    tensor (for experts: into one expert's slice), read off the oracle's blocks.

    >>> from syncviz.diagnose.fixtures import tiny_spec
    >>> part_shapes("experts_w13", tiny_spec("mixtral"), 2)
    [(8, 16), (8, 16)]
    """
    shape, found, dim = global_shape(kind, spec), blocks(kind, spec), 0
    if kind.startswith("experts_"):  # every expert is cut as expert 0 is
        shape, found, dim = shape[1:], tuple(b for b in found if b.index == 0), 1
    if parts == 1:
        return [tuple(shape)]
    sizes: list[int] = []
    seen: list[tuple[str, str | None]] = []
    for block in found:  # consecutive blocks of one family (Q heads, ...) make one tensor
        rows = block.box.stop[dim] - block.box.start[dim]
        if seen and seen[-1] == (block.family, block.part):
            sizes[-1] += rows
        else:
            seen.append((block.family, block.part))
            sizes.append(rows)
    if len(sizes) != parts:
        raise SyncvizError(
            f"{kind} has {len(sizes)} parts in the oracle's blocks, not the {parts} checkpoint"
            " tensors its names join",
            fix="make the family file's hf_names list one name per part",
        )
    return [(rows, *shape[1:]) for rows in sizes]


def _expected(spec: ModelSpec) -> Iterator[tuple[str, tuple[int, ...]]]:
    names = HF_NAMES[spec.family]
    layers = range(spec.all_layers)  # multi-token-prediction layers, when laid out, last
    kinds = [("embed", None)] + [(k, i) for i in layers for k in layer_kinds(spec, i)]
    kinds += [("final_norm", None)] + ([] if spec.tie_word_embeddings else [("lm_head", None)])
    fused = spec.family in HF_FUSED_EXPERTS
    for kind, layer in kinds:
        templates = names[kind]
        fields = {} if layer is None else {"i": layer}
        if fused and kind.startswith("experts_"):  # one 3-D tensor for all the experts
            yield templates[0].format(**fields), fused_expert_shape(kind, global_shape(kind, spec))
            continue
        shapes = part_shapes(kind, spec, len(templates))
        for e in range(spec.num_experts) if kind.startswith("experts_") else [None]:
            for template, shape in zip(templates, shapes, strict=True):
                yield template.format(**fields, **({} if e is None else {"e": e})), shape


def checkpoint_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Every tensor a Hugging Face checkpoint of ``spec`` holds, by name, in model order."""
    return dict(_expected(spec))


@dataclass(frozen=True)
class Problem:
    """One tensor where checkpoint and config disagree (``None``: absent on that side)."""

    name: str
    expected: tuple[int, ...] | None
    held: tuple[int, ...] | None

    def words(self, config: str = "config.json", notes: tuple[str, ...] = ()) -> str:
        """The disagreement as ``config`` tells it, with ``notes`` in brackets."""
        if self.held is None:
            text = f"{config} calls for {self.name} of shape {list(self.expected or ())},"
            text += " which the checkpoint lacks"
        elif self.expected is None:
            text = f"{config} does not call for {self.name!r} of shape {list(self.held)},"
            text += " which the checkpoint holds"
        else:
            text = f"{config} contradicts {self.name} of shape {list(self.held)}"
            notes = (f"config.json implies {list(self.expected)}", *notes)
        return text + (f" ({'; '.join(notes)})" if notes else "")


def _pattern(family: str) -> re.Pattern[str]:
    """Any name of ``family``'s checkpoints, any layer and expert."""
    return _PATTERNS[family]


def _any_name(names: Mapping[str, tuple[str, ...]]) -> re.Pattern[str]:
    templates = [t for ts in names.values() for t in ts]
    parts = [re.escape(t).replace(r"\{i\}", r"\d+").replace(r"\{e\}", r"\d+") for t in templates]
    return re.compile("|".join(parts))


_PATTERNS: Mapping[str, re.Pattern[str]] = derived(
    lambda infos: {info.name: _any_name(info.hf_names) for info in infos}
)


def disagreement(spec: ModelSpec, held: Mapping[str, tuple[int, ...]]) -> list[Problem]:
    """Where the checkpoint's tensors (``held``: name -> shape) differ from ``spec``'s, in
    model order, then the family's names the spec does not call for."""
    problems = _disagreement(spec, held, None)
    assert problems is not None
    return problems


def _disagreement(
    spec: ModelSpec, held: Mapping[str, tuple[int, ...]], limit: int | None
) -> list[Problem] | None:
    """:func:`disagreement`, or None once ``spec`` calls for more than ``limit`` tensors."""
    problems, expected = [], set()
    for n, (name, shape) in enumerate(_expected(spec)):
        if limit is not None and n >= limit:
            return None
        expected.add(name)
        if held.get(name) != shape:
            problems.append(Problem(name, shape, held.get(name)))
    names = _pattern(spec.family)
    tied = set(HF_NAMES[spec.family]["lm_head"]) if spec.tie_word_embeddings else set()
    for name in sorted(held):  # (a tied checkpoint may keep its lm_head: it is not read)
        if name not in expected and name not in tied and names.fullmatch(name):
            problems.append(Problem(name, None, held[name]))
    return problems


def require_agreement(
    spec: ModelSpec,
    held: Mapping[str, tuple[int, ...]],
    config: Callable[[], Mapping[str, Any]],
) -> None:
    """Bad input naming the config field and the tensor where the checkpoint contradicts
    its config; ``config`` gives the parsed config.json (read only then)."""
    problems = disagreement(spec, held)
    if not problems:
        return
    raw = dict(config())
    fits = _fits(raw, held, problems)
    lead = "config.json"
    notes = []
    if fits:
        lead += " " + " or ".join(dict.fromkeys(f"{k} = {_shown(raw.get(k))}" for k, _ in fits))
        notes.append("the checkpoint fits " + ", or ".join(f"{k} = {_shown(v)}" for k, v in fits))
    if len(problems) > 1:
        more = len(problems) - 1
        notes.append(f"{more} more tensor{'s disagree' if more > 1 else ' disagrees'}")
    raise SyncvizError(problems[0].words(lead, tuple(notes)), fix=DISAGREE_FIX)


def _fits(
    raw: dict[str, Any], held: Mapping[str, tuple[int, ...]], problems: list[Problem]
) -> list[tuple[str, Any]]:
    """Single config changes that make the checkpoint agree (or, failing that, that fix
    the first disagreeing tensor), found by trying values the shapes suggest."""
    limit = 4 * len(held) + 64  # a candidate calling for far more tensors cannot fit
    tries: list[tuple[str, Any]] = []
    ratios = {
        Fraction(h, e)
        for p in problems[:32]
        if p.held is not None and p.expected is not None and len(p.held) == len(p.expected)
        for h, e in zip(p.held, p.expected, strict=True)
        if h != e and h and e
    }
    counts = _counts(held)
    for key in CONFIG_BOUNDS:
        value = raw.get(key)
        if type(value) is not int:
            continue
        found = {value * r for r in ratios} | {value / r for r in ratios} | counts
        tries += [(key, int(v)) for v in sorted(found) if v == int(v) and 0 < v != value]
    tries += [(key, not value) for key, value in raw.items() if isinstance(value, bool)]
    arch = raw.get("architectures")
    tries += [("architectures", [a]) for a in HF_ARCHITECTURES if arch != [a]]
    full, partial = [], []
    for key, value in tries:
        try:
            spec = ModelSpec.from_hf_config({**raw, key: value})
        except SyncvizError:
            continue
        left = _disagreement(spec, held, limit)
        if left is None:
            continue
        if not left:
            full.append((key, value))
        elif len(left) < len(problems) and problems[0].name not in {p.name for p in left}:
            partial.append((key, value))
    return (full or partial)[:3]


def _counts(held: Mapping[str, tuple[int, ...]]) -> set[int]:
    """How many layers and experts the checkpoint's names number (1 + the largest index)."""
    found = set()
    for numbered in _NUMBERED.values():
        numbers = [int(m.group(1)) for name in held for p in numbered if (m := p.fullmatch(name))]
        if numbers:
            found.add(max(numbers) + 1)
    return found


def _numbered(field: str) -> list[re.Pattern[str]]:
    """Every family's names holding ``{field}``, that number captured."""
    templates = {t for names in HF_NAMES.values() for ts in names.values() for t in ts}
    return [
        re.compile(
            re.escape(t)
            .replace(re.escape("{" + field + "}"), r"(\d+)")
            .replace(r"\{i\}", r"\d+")
            .replace(r"\{e\}", r"\d+")
        )
        for t in sorted(templates)
        if "{" + field + "}" in t
    ]


_NUMBERED: Mapping[str, list[re.Pattern[str]]] = derived(  # layers, experts
    lambda _infos: {field: _numbered(field) for field in ("i", "e")}
)


def _shown(value: object) -> str:
    """A config value as config.json spells it (one architecture without its list)."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."
