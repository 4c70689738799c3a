"""Colours of the pictures as data: a colour-blind-safe palette and raster -> RGB (no matplotlib).

Hue says what an element holds (the block family, from Paul Tol's "bright"
and "muted" schemes, distinguishable with every common colour deficiency),
shade says which block (head j, expert e) and a gradient along the block says
where inside it, so reversed or shifted rows show. Status is never a hue of a
block: wrong cells get an outline in :data:`WRONG`, and rank identity is
written as text, never coloured with a status colour.

>>> import torch
>>> hex_rgb("#4477AA")
(68, 119, 170)
>>> rgb = block_rgb(torch.tensor([[0, -1]]), torch.tensor([[0.0, 0.0]]), ["q"], [0])
>>> rgb[0, 0].tolist(), rgb[0, 1].tolist()
([68, 119, 170], [221, 221, 221])
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

FAMILY_COLORS: dict[str, str] = {
    "q": "#4477AA",  # blue
    "k": "#CCBB44",  # yellow
    "v": "#228833",  # green
    "o": "#66CCEE",  # cyan
    "gate": "#AA3377",  # purple
    "up": "#CCBB44",  # yellow
    "down": "#66CCEE",  # cyan
    "expert": "#332288",  # indigo
    "vocab": "#44AA99",  # teal
    "norm": "#999933",  # olive
    "router": "#882255",  # wine
    "embedding": "#44AA99",  # teal, as the vocab it comes from
    "hidden": "#AA3377",  # purple
    "padding": "#DDDDDD",  # pale grey
    "unwritten": "#FFFFFF",  # white (drawn with a grey hatch)
    "foreign": "#000000",  # black: another parameter's data
}
"""The hue of each block family; shade 0 at offset 0 of a block is exactly this colour."""

FAMILY_WORDS: dict[str, str] = {
    "q": "Q heads",
    "k": "K heads",
    "v": "V heads",
    "o": "heads (columns)",
    "expert": "experts",
    "vocab": "vocab rows",
    "embedding": "embedding half (columns)",
    "hidden": "hidden-state half (columns)",
    "unwritten": "never written",
    "foreign": "another parameter's data",
}
"""What a legend calls each block family (a family not listed is called by its name)."""

WRONG = "#EE3377"  # magenta outline of cells the checker calls not right
WRONG_BAND = "#EE3377"
RANK_COLORS = ("#332288", "#88CCEE", "#44AA99", "#DDCC77", "#AA4499", "#882255", "#999933")
"""Rank identity, where a colour is used at all: no red, no green (those mean status)."""

SPECIAL_FAMILY = {-1: "padding", -2: "unwritten", -3: "foreign"}
SHADE_DARKEN = (0.0, 0.22, 0.38)  # block j is darkened by SHADE_DARKEN[j % 3]
GRADIENT = 0.55  # how far toward white a block's last element is


def hex_rgb(color: str) -> tuple[int, int, int]:
    """``#RRGGBB`` as three ints."""
    c = color.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def family_rgb(family: str, shade: int = 0) -> tuple[float, float, float]:
    """RGB in 0..1 of a family at block index ``shade`` (offset 0).

    >>> family_rgb("q") == tuple(c / 255 for c in hex_rgb(FAMILY_COLORS["q"]))
    True
    """
    base = [c / 255 for c in hex_rgb(FAMILY_COLORS.get(family, "#BBBBBB"))]
    dark = SHADE_DARKEN[shade % 3] if family not in ("padding", "unwritten", "foreign") else 0.0
    r, g, b = (c * (1 - dark) for c in base)
    return r, g, b


def family_words(family: str, parts: Sequence[str] = ()) -> str:
    """A legend entry: the family's words, then the sub-blocks (parts) drawn in its colour.

    >>> family_words("q", ["nope", "rope"]), family_words("v", ["v"]), family_words("gate")
    ('Q heads (nope, rope)', 'V heads (v)', 'gate')
    """
    words = FAMILY_WORDS.get(family, family)
    return f"{words} ({', '.join(parts)})" if parts else words


def block_rgb(
    block: torch.Tensor, inner: torch.Tensor, families: list[str], shades: list[int]
) -> torch.Tensor:
    """uint8 [H, W, 3] of cells: hue by family, shade by block index, gradient by ``inner``."""
    n = len(families)
    table = _colour_table(tuple(families), tuple(shades))
    index = torch.where(block >= 0, block, n + 3 + block)  # -3, -2, -1 -> n, n+1, n+2
    base = table[index]
    lift = (GRADIENT * inner).clamp(0, 1).unsqueeze(-1) * (block >= 0).unsqueeze(-1)
    rgb = base + (1 - base) * lift
    return (rgb * 255).round().to(torch.uint8)


@functools.lru_cache(maxsize=256)
def _colour_table(families: tuple[str, ...], shades: tuple[int, ...]) -> torch.Tensor:
    """float32 [n + 3, 3]: each block's colour at offset 0, then foreign, unwritten, padding.

    Every panel of a parameter (and every layer of one kind) shares its blocks: built once.
    """
    rows = [family_rgb(f, s) for f, s in zip(families, shades, strict=True)]
    rows += [family_rgb(SPECIAL_FAMILY[k]) for k in (-3, -2, -1)]
    return torch.tensor(rows, dtype=torch.float32)


def raster_rgb(r) -> torch.Tensor:
    """The RGB image of a :class:`~syncviz.diagram.raster.Raster`, one pixel per cell."""
    return block_rgb(r.block, r.inner, r.table.families, r.table.shades)
