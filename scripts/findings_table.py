"""Regenerate the README's findings table: where the faithful ChatLearn port and the oracle differ.

For every preset and every valid (src tp, dst tp) with both in {1, 2, 4, 8}, the
faithful port (``synchronizer="chatlearn"``) syncs a shrunk copy of the model (one
layer plus embedding, final norm and lm_head) on simulated ranks; every vLLM tensor
is compared with the oracle, and what goes wrong is said in words.

    python scripts/findings_table.py            # print the table
    python scripts/findings_table.py --write    # also put it between the README markers

>>> row = findings_row("llama2-7b", 2, 4)
>>> row.verdict, row.findings
('agrees', [])
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from syncviz import Parallel, SyncvizError
from syncviz.oracle import ParamLayout, describe
from syncviz.parallel import validate
from syncviz.presets import PRESETS
from syncviz.run.inprocess import run_sync
from syncviz.run.result import SyncResult
from syncviz.run.values import FOREIGN_ID, UNWRITTEN_ID

TP_SIZES = (1, 2, 4, 8)
README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- findings:start -->", "<!-- findings:end -->"
LAYER_INDEX = re.compile(r"\.(layers|h)\.\d+\.")
PREFIXES = ("model.model.", "model.transformer.", "model.")
VOCAB_NAMES = ("embed_tokens.weight", "wte.weight", "lm_head.weight")
# Block families (oracle blocks.py) in words, for "which blocks go wrong".
FAMILY_WORDS = {
    "q": "Q heads",
    "k": "K heads",
    "v": "V heads",
    "o": "head columns",
    "gate": "gate rows",
    "up": "up rows",
    "down": "columns",
    "expert": "experts",
    "vocab": "vocab rows",
    "norm": "norm",
    "router": "router",
}
VOCAB_NOTE = (
    "† embedding / lm_head: Megatron pads the vocab to a multiple of 128·s, vLLM to a"
    " multiple of 64; where the two differ, a trainer rank's rows start at other tokens than"
    " its vLLM ranks' rows and no synchronizer can fill them (the corrected one refuses them)."
)


@dataclass
class Row:
    """One preset and one (s, d): the verdict and the findings, grouped."""

    preset: str
    s: int
    d: int
    verdict: str
    findings: list[str] = field(default_factory=list)


def generic_name(key: str) -> str:
    """A vLLM name with its layer index replaced by ``{i}`` and the model prefix dropped.

    >>> generic_name("model.model.layers.0.self_attn.qkv_proj.weight")
    'layers.{i}.self_attn.qkv_proj.weight'
    """
    key = LAYER_INDEX.sub(r".\1.{i}.", key)
    for prefix in PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def _short(message: str, limit: int = 90) -> str:
    message = message.replace("|", "/")
    return message if len(message) <= limit else message[: limit - 3] + "..."


def _families(param: ParamLayout, ids: torch.Tensor) -> list[str]:
    """The block families the given global ids fall in, in words (Q heads, experts, ...)."""
    shape = param.global_shape
    coords, rest = [], ids.to(torch.int64)
    for size in reversed(shape):
        coords.insert(0, rest % size)
        rest = rest // size
    found = []
    for block in param.blocks:
        inside = torch.ones_like(ids, dtype=torch.bool)
        for c, lo, hi in zip(coords, block.box.start, block.box.stop, strict=True):
            inside &= (c >= lo) & (c < hi)
        word = FAMILY_WORDS.get(block.family, block.family)
        if bool(inside.any()) and word not in found:
            found.append(word)
    return found or ["padding"]


def _example(param: ParamLayout, tp: int, got: torch.Tensor, want: torch.Tensor) -> str:
    """The first wrong run of dst rank ``tp`` in the oracle's words, one block long at most."""
    wrong = got != want
    rows = wrong.reshape(wrong.shape[0], -1).any(dim=1) if wrong.dim() > 1 else wrong
    first = last = int(torch.nonzero(rows).flatten()[0])
    holds, wants = _words(param, got[first : first + 1]), _words(param, want[first : first + 1])
    # Grow the run while both sides still read as one block each.
    while last + 1 < len(rows) and bool(rows[last + 1]) and last - first < 256:
        more_holds = _words(param, got[first : last + 2])
        more_wants = _words(param, want[first : last + 2])
        if ";" in more_holds or ";" in more_wants:
            break
        holds, wants, last = more_holds, more_wants, last + 1
    unit = {1: "element", 2: "row", 3: "expert"}[got.dim()]
    span = f"{unit} {first}" if first == last else f"{unit}s {first}-{last}"
    return _short(f"dst tp{tp} {span} holds {holds}, expected {wants}", 160)


def _words(param: ParamLayout, ids: torch.Tensor) -> str:
    """The oracle's description of some ids, without a leading local span when it is one block."""
    text = describe(param, ids)
    if ";" in text:
        return text
    return re.sub(r"^(rows?|elements?|experts?|cols?) [\d-]+: ", "", text)


def _param_finding(param: ParamLayout, result: SyncResult) -> tuple[str, str] | None:
    """``(what is wrong, an example)`` for one parameter, or None when it is right."""
    errors = [f for f in result.findings if f.param == param.key]
    raised = [f for f in errors if f.stage not in ("stage1", "stage2")]
    if raised:
        return f"the synchronizer raises {_short(raised[0].message, 70)}", ""
    wrong_ranks, unwritten, families, example = [], [], [], ""
    for t in param.dst:
        world = next(r.world for r in result.plan.roles if r.side == "dst" and r.tp == t.tp)
        got = result.local_ids(world, param.key)
        want = t.index.ids().to(torch.float64)
        if bool((got == UNWRITTEN_ID).all()):
            unwritten.append(t.tp)
        elif not torch.equal(got, want):
            wrong_ranks.append(t.tp)
            for word in _families(param, want[(got != want)]):
                if word not in families:
                    families.append(word)
            if not example and bool((got == FOREIGN_ID).any()):
                owners = ", ".join(
                    f"`{generic_name(k)}`" for k in result.foreign_keys(world, t.name)
                )
                example = f"dst tp{t.tp} holds elements of {owners or 'no parameter'}"
            example = example or _example(param, t.tp, got, want)
    if not wrong_ranks and not unwritten:
        return None
    parts = []
    if wrong_ranks:
        parts.append(f"wrong {', '.join(families)} on dst tp {_ranks(wrong_ranks)}")
    if unwritten:
        sized = [f for f in errors if "received" in f.message]
        why = " (arrives with the wrong size)" if sized else ""
        parts.append(f"never written on dst tp {_ranks(unwritten)}{why}")
    return "; ".join(parts), example


def _vocab_lines_up(vocab: int, s: int) -> bool:
    """Whether Megatron's padded vocab (a multiple of 128 * s) equals vLLM's (of 64).

    >>> _vocab_lines_up(256, 2), _vocab_lines_up(256, 4)
    (True, False)
    """
    return -(-vocab // (128 * s)) * 128 * s == -(-vocab // 64) * 64


def _ranks(ranks: list[int]) -> str:
    return f"{ranks[0]}-{ranks[-1]}" if len(ranks) > 2 else ",".join(str(r) for r in ranks)


def findings_row(preset: str, s: int, d: int) -> Row:
    """Sync ``preset`` (shrunk, one layer) from tp ``s`` to tp ``d`` with the faithful port."""
    src, dst = Parallel(tp=s), Parallel(tp=d)
    spec = PRESETS[preset].scaled(src, dst, num_layers=1)
    result = run_sync(spec, src, dst, synchronizer="chatlearn", trace=False)
    keys = {p.key for p in result.plan.layout}
    flow = [f for f in result.findings if f.param not in keys]
    grouped: dict[str, list[str]] = {}
    examples: dict[str, str] = {}
    for param in result.plan.layout:
        found = _param_finding(param, result)
        if found is None:
            continue
        what, example = found
        grouped.setdefault(what, []).append(generic_name(param.key))
        examples.setdefault(what, example)
    lines = []
    if flow:
        lines.append("run: " + _short(flow[0].message))
    every = len(grouped) == 1 and sum(map(len, grouped.values())) == len(keys)
    padded_alike = _vocab_lines_up(spec.vocab_size, s)
    for what, names in grouped.items():
        vocab = not padded_alike and all(n in VOCAB_NAMES for n in names)
        label = "every parameter" if every else ", ".join(f"`{n}`" for n in names)
        example = f" (e.g. {examples[what]})" if examples[what] else ""
        lines.append(f"{label}{'†' if vocab else ''}: {what}{example}")
    return Row(preset, s, d, "agrees" if not lines else "disagrees", lines)


def all_rows() -> list[Row]:
    """Every preset and every valid (s, d) with s, d in 1, 2, 4, 8 and d a multiple of s.

    >>> len(all_rows()) > 60  # doctest: +SKIP
    True
    """
    rows = []
    for name, spec in PRESETS.items():
        for s in TP_SIZES:
            for d in TP_SIZES:
                if d % s:
                    continue
                try:
                    validate(spec, Parallel(tp=s), Parallel(tp=d))
                except SyncvizError:
                    continue
                rows.append(findings_row(name, s, d))
    return rows


def markdown(rows: list[Row]) -> str:
    """The table, plus the vocab footnote when a row needs it.

    >>> print(markdown([Row("m", 1, 2, "agrees")]))
    | model | src tp → dst tp | faithful port | what goes wrong |
    |---|---|---|---|
    | m | 1 → 2 | agrees | — |
    """
    lines = [
        "| model | src tp → dst tp | faithful port | what goes wrong |",
        "|---|---|---|---|",
    ]
    for row in rows:
        cell = "<br>".join(row.findings) if row.findings else "—"
        lines.append(f"| {row.preset} | {row.s} → {row.d} | {row.verdict} | {cell} |")
    text = "\n".join(lines)
    if any("†" in f for row in rows for f in row.findings):
        text += "\n\n" + VOCAB_NOTE
    return text


def write_between_markers(path: Path, table: str) -> bool:
    """Replace the text between the findings markers of ``path``; False if they are absent.

    >>> import tempfile
    >>> readme = Path(tempfile.mkdtemp()) / "README.md"
    >>> _ = readme.write_text(f"# x\\n{START}\\nold\\n{END}\\ntail\\n")
    >>> write_between_markers(readme, "new"), readme.read_text().split("\\n")[1:4]
    (True, ['<!-- findings:start -->', 'new', '<!-- findings:end -->'])
    """
    if not path.exists():
        return False
    text = path.read_text(encoding="utf-8")
    if START not in text or END not in text:
        return False
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{table}\n{END}{tail}", encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="update README.md between markers")
    args = parser.parse_args(argv)
    table = markdown(all_rows())
    print(table)
    if args.write and not write_between_markers(README, table):
        print(f"\n(no {START} / {END} markers in {README}: printed only)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
