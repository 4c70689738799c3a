"""``syncviz render``: draw a layout, transfer or expert diagram of a sync run to PNG/SVG.

>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> render_configure(parser)
>>> args = parser.parse_args(["--preset", "llama3-8b", "--param", "qkv", "-o", "x.png"])
>>> args.view, args.synchronizer, args.scaled, args.layers
('layout', 'chatlearn', True, [0])
"""

from __future__ import annotations

import argparse

from syncviz.cli.args import (
    add_layers_arg,
    add_model_args,
    add_parallel_args,
    add_run_args,
    check_layers,
    load_parallel,
    load_spec,
    synchronizer_choice,
    validate_sizes,
)
from syncviz.cli.command import Command
from syncviz.errors import SyncvizError


def render_configure(parser: argparse.ArgumentParser) -> None:
    """Arguments: model, sizes, run options, ``--param --view --layers -o``."""
    add_model_args(parser)
    add_parallel_args(parser)
    add_run_args(parser)
    add_layers_arg(parser, default="0", what="the layer to draw (one)")
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
        help="layout view: show the regroup up to recorded op K (1-based) and what it moved",
    )
    parser.add_argument("-o", "--output", required=True, metavar="PATH", help="*.png or *.svg")


def render_main(args: argparse.Namespace) -> int:
    """Run the sync in process, build the diagram, save it; prints the path."""
    from syncviz.check import check
    from syncviz.diagram import layout_diagram, render, transfer_diagram
    from syncviz.diagram.experts import expert_diagram
    from syncviz.run.inprocess import run_sync

    spec = load_spec(args)
    src, dst = load_parallel(args)
    validate_sizes(spec, src, dst)
    check_layers(spec, args.layers)
    if len(args.layers) != 1:
        raise SyncvizError(
            f"render draws one layer, not {len(args.layers)}", fix="use e.g. --layers 0"
        )
    if args.scaled:
        spec = spec.scaled(src, dst)
    choice = synchronizer_choice(args)
    result = run_sync(spec, src, dst, synchronizer=choice, layers=args.layers)
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
        diagram = layout_diagram(result, key, check(result))
        if args.step is not None:
            _cut_at_step(result, key, diagram, args.step)
    path = render(diagram).save(args.output)
    print(path)
    return 0


def _cut_at_step(result, key: str, diagram, step: int) -> None:
    """Keep the recorded ops up to ``step`` and say, on the figure, what that op moved."""
    from syncviz.journey import param_steps

    steps = param_steps(result, key)
    if not 1 <= step <= len(steps):
        raise SyncvizError(
            f"--step {step} is out of range: {key} has {len(steps)} recorded ops",
            fix=f"use --step 1..{len(steps)}" if steps else "leave --step out",
        )
    chosen = steps[step - 1]
    diagram.steps = diagram.steps[:step]
    moved = ", ".join(chosen.blocks) if chosen.blocks else "blocks not replayable here"
    diagram.notes.append(f"step {step}/{len(steps)}: {chosen.text} (moves {moved})")


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
