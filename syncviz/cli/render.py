"""``syncviz render``: draw a layout, transfer or expert diagram of a sync run to PNG/SVG.

>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> render_configure(parser)
>>> args = parser.parse_args(["--preset", "llama3-8b", "--param", "qkv", "-o", "x.png"])
>>> args.view, args.synchronizer, args.scaled, args.layers  # every view at real sizes
('layout', 'chatlearn', False, [0])
"""

from __future__ import annotations

import argparse

from syncviz.cli.args import add_sync_args, add_timeout_arg, load_inputs, synchronizer_choice
from syncviz.cli.command import Command
from syncviz.cli.interrupts import checkpoint
from syncviz.errors import SyncvizError


def render_configure(parser: argparse.ArgumentParser) -> None:
    """Arguments: model, sizes, run options, ``--param --view --layers -o``."""
    add_sync_args(parser, layers="0", what="the layer to draw (one)")
    parser.add_argument(
        "--param",
        metavar="NAME",
        default=None,
        help="vLLM parameter name, or a unique part of it (layout view; experts view:"
        " w13 or w2, default the first)",
    )
    parser.add_argument(
        "--view",
        choices=("layout", "transfer", "experts"),
        default="layout",
        help="layout of one parameter, the transfer map, or the routed experts (w13 by default)",
    )
    parser.add_argument(
        "--step",
        type=int,
        default=None,
        metavar="K",
        help="layout view: also draw recorded step K (1-based): what it read and wrote",
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="PATH",
        help="*.png or *.svg in an existing folder; written atomically (temp file + rename)",
    )
    add_timeout_arg(parser)


def render_main(args: argparse.Namespace) -> int:
    """Run the sync in process (real sizes unless ``--scaled``), build the diagram, save it;
    prints the path."""
    from syncviz.cli.output import atomic_output, checked_output, say

    output = checked_output(args.output, (".png", ".svg"))  # before any work is spent
    spec, src, dst = load_inputs(args)
    if len(args.layers) != 1:
        raise SyncvizError(
            f"render draws one layer, not {len(args.layers)}", fix="use e.g. --layers 0"
        )
    # torch and matplotlib load only once the input is known good: bad input fails fast.
    from syncviz.check import findings_words
    from syncviz.diagram import layout_diagram, render, transfer_diagram
    from syncviz.diagram.experts import expert_diagram
    from syncviz.run.inprocess import run_sync

    checkpoint()  # a Ctrl-C that torch's start-up swallowed

    scaled = bool(args.scaled)
    if scaled:
        spec = spec.scaled(src, dst)
    choice = synchronizer_choice(args)
    # The embedding, final norm and lm_head live outside the layers: sync them all then.
    layers = None if _is_global(args) else args.layers
    # Real sizes keep ids as compact maps (nothing per element, every view drawn from the
    # maps); scaled runs materialize, after run_sync's memory estimate
    # (run.memory.check_memory), refused with the fix when it cannot fit.
    symbolic = not scaled
    result = run_sync(
        spec,
        src,
        dst,
        synchronizer=choice,
        layers=layers,
        timeout=args.timeout,
        provenance="symbolic" if symbolic else "materialized",
    )
    if args.view == "transfer":
        diagram = transfer_diagram(result)
    elif args.view == "experts":
        keys = [p.key for p in result.plan.layout if p.kind.startswith("experts_")]
        if not keys:
            raise SyncvizError(
                f"{spec.name} has no routed experts", fix="use --view layout or an MoE model"
            )
        diagram = expert_diagram(result, resolve_param(keys, args.param or keys[0]))
    else:
        key = resolve_param(result.plan.layout.keys(), args.param)
        diagram = layout_diagram(result, key, step=args.step)
    figure = render(diagram)
    with atomic_output(output) as tmp:
        figure.save(tmp)
    say(output)
    # A synchronizer that failed on a rank (a family the original has no class for, say)
    # is said first, in check's words, before the regions its failure left unwritten.
    for line in findings_words(result)[1]:
        say(f"flow: {line}")
    for line in _words(diagram):
        say(line)
    return 0


GLOBAL_NAMES = ("embed_tokens", "lm_head", "model.norm", "model.model.norm")


def _is_global(args: argparse.Namespace) -> bool:
    """Whether ``--param`` names a parameter outside the layers (embedding, lm_head, norm)."""
    name = args.param or ""
    return args.view == "layout" and any(g in name or name == g for g in GLOBAL_NAMES)


def _words(diagram) -> list[str]:
    """What the picture shows in words, printed beside it: every wrong region, the step."""
    from syncviz.diagram.model import LayoutDiagram

    if not isinstance(diagram, LayoutDiagram):
        return []
    lines = [f"WRONG {line}" for line in diagram.regions()]
    lines += diagram.problems
    if diagram.frame is not None:
        lines += [diagram.frame.text, *diagram.frame.region_lines()]
    return lines or [f"every {diagram.engine} rank holds what the oracle expects"]


def resolve_param(keys: list[str], name: str | None) -> str:
    """The key equal to ``name``, or the only key containing it.

    >>> resolve_param(["a.qkv_proj.weight", "a.o_proj.weight"], "qkv")
    'a.qkv_proj.weight'
    """
    if name is None:
        raise SyncvizError("--param is required for --view layout", fix="e.g. --param qkv_proj")
    if name in keys:
        return name
    hits = [k for k in keys if name in k]
    if len(hits) != 1:
        found = "no parameter" if not hits else f"{len(hits)} parameters"
        raise SyncvizError(
            f"--param {name!r} matches {found}", fix="use one of: " + ", ".join(hits or keys)
        )
    return hits[0]


COMMAND = Command(
    "render",
    "draw a layout or transfer diagram of one parameter to PNG or SVG",
    render_configure,
    render_main,
)
