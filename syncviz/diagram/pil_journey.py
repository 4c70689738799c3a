"""A block's journey as a small picture of steps, drawn with PIL: one line per step of
:attr:`syncviz.journey.Journey.path` (where, which rank, which op, which rows), an arrow
between lines, the verdict on top and, when wrong, where the oracle expects the block.

>>> from syncviz.journey import Journey, PathStep
>>> j = Journey("Q head 0", [], [], [], True, path=[
...     PathStep("trainer", 0, "holds (tp 0)", "rows 0-1"),
...     PathStep("vLLM", 1, "holds (tp 0)", "rows 0-1")])
>>> journey_png(j)[:4]
b'\\x89PNG'
"""

from __future__ import annotations

import io

from syncviz.journey import Journey

FONT_PX = 14  # as the layout picture: at least 9 pt once shrunk to a 970 px cell
LINE = FONT_PX + 12  # one step's line, its arrow gap included
WIDTH = 960
TAG_WIDTH = 96
SIDE_COLORS = {  # the tag of each kind of step
    "trainer": "#4c72b0",
    "op": "#6e7781",
    "collective": "#dd8452",
    "vLLM": "#1a7f37",
}
RIGHT, WRONG = "#1a7f37", "#cf222e"


def journey_lines(journey: Journey) -> list[tuple[str, str]]:
    """The picture's lines, renderer-neutral: (tag, words) per line, top to bottom.

    >>> from syncviz.journey import PathStep
    >>> journey_lines(Journey("K head 1", [], [], [], False, ["dst rank 2: rows 6-7"],
    ...     path=[PathStep("vLLM", 2, "holds (tp 1)", "rows 0-1")]))
    [('WRONG', 'journey of K head 1'), ('vLLM', 'rank 2 | holds (tp 1) | rows 0-1'), \
('expected', 'dst rank 2: rows 6-7')]
    """
    head = ("right" if journey.ok else "WRONG", f"journey of {journey.label}")
    lines = [head] + [(s.side, s.words) for s in journey.path]
    if not journey.ok:
        lines += [("expected", e) for e in journey.expected]
    return lines


def journey_png(journey: Journey) -> bytes:
    """The journey's lines (:func:`journey_lines`) as a PNG at most ``WIDTH`` px wide."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=FONT_PX)
    lines = journey_lines(journey)
    image = Image.new("RGB", (WIDTH, 8 + LINE * len(lines)), "white")
    draw = ImageDraw.Draw(image)
    verdict = RIGHT if journey.ok else WRONG
    for k, (tag, words) in enumerate(lines):
        top = 4 + LINE * k
        color = {"right": RIGHT, "WRONG": WRONG, "expected": WRONG}.get(tag)
        color = color or SIDE_COLORS.get(tag, "#6e7781")
        if tag == "vLLM":
            color = verdict  # where it ends: green when right, red when wrong
        draw.rectangle((4, top, 4 + TAG_WIDTH, top + FONT_PX + 4), fill=color)
        draw.text((9, top + 2), tag, fill="white", font=font)
        text = _fit(draw, words, font, WIDTH - TAG_WIDTH - 20)
        draw.text((TAG_WIDTH + 14, top + 2), text, fill="black", font=font)
        steps = len(journey.path)
        if 1 <= k < steps:  # an arrow down to the next step
            x = 4 + TAG_WIDTH // 2
            draw.line((x, top + FONT_PX + 5, x, top + LINE - 1), fill="#57606a", width=2)
            draw.polygon(
                [(x - 4, top + LINE - 6), (x + 4, top + LINE - 6), (x, top + LINE - 1)],
                fill="#57606a",
            )
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def _fit(draw, words: str, font, width: int) -> str:
    """``words`` cut with an ellipsis to ``width`` px (long shapes and row lists)."""
    if draw.textlength(words, font=font) <= width:
        return words
    while words and draw.textlength(words + "...", font=font) > width:
        words = words[:-1]
    return words + "..."
