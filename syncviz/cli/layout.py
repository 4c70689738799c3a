"""``syncviz layout``: say in words what each trainer and vLLM rank holds of one layer.

>>> from syncviz.cli import main
>>> main(["layout", "--preset", "llama3-8b", "--src-tp", "2", "--dst-tp", "4", "--layer", "0"])
... # doctest: +ELLIPSIS, +NORMALIZE_WHITESPACE
llama3-8b (llama-mcore), layer 0: trainer tp=2 pp=1 ep=1 -> vLLM tp=4 pp=1
...
model.model.layers.0.self_attn.qkv_proj.weight  (qkv, global [6144, 4096])
  src pp0 tp0 module.module.decoder.layers.0.self_attention.linear_qkv.weight [3072, 4096]:
      rows 0-511: Q heads 0-3; rows 512-639: K head 0; rows 640-767: V head 0; ...
...
0
"""

from __future__ import annotations

import argparse

from syncviz.cli.args import (
    add_layers_arg,
    add_model_args,
    add_mtp_arg,
    add_parallel_args,
    add_size_arg,
    load_inputs,
)
from syncviz.cli.command import Command
from syncviz.cli.interrupts import checkpoint
from syncviz.cli.output import say


def _layout_configure(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    add_mtp_arg(parser)
    add_parallel_args(parser)
    add_layers_arg(parser, default="0", what="global layers to describe")
    parser.add_argument(
        "--globals", action="store_true", help="also show the embedding, final norm and lm_head"
    )
    add_size_arg(
        parser,
        scaled_default=False,
        scaled_help="layout-preserving small sizes (a small teaching picture)",
        exact_help="the model's real sizes (default)",
    )


def _layout_run(args: argparse.Namespace) -> int:
    spec, src, dst = load_inputs(args)
    if args.scaled:
        spec = spec.scaled(src, dst)
    for number, layer in enumerate(args.layers):
        if number:
            say()
        _describe_layer(spec, src, dst, layer, args.globals and number == 0)
    return 0


def _dst_extra(dst) -> str:
    """The destination's expert parallel and DP attention, when set (nothing otherwise)."""
    extra = f" ep={dst.ep} ({dst.expert_placement})" if dst.ep > 1 else ""
    return extra + (f" dp_attention={dst.dp_attention}" if dst.dp_attention > 1 else "")


def _describe_layer(spec, src, dst, layer: int, with_globals: bool) -> None:
    from syncviz.oracle import model_layout

    checkpoint()  # a Ctrl-C that torch's start-up swallowed

    layout = model_layout(spec, src, dst, layers=[layer], include_globals=with_globals)
    say(
        f"{spec.name} ({spec.family}), layer {layer}: trainer tp={src.tp} pp={src.pp}"
        f" ep={src.ep} -> {dst.engine_name} tp={dst.tp} pp={dst.pp}{_dst_extra(dst)}"
    )
    src_stage, dst_stage = layout.src_stage(layer), layout.dst_stage(layer)
    local = layer - src_stage * (spec.num_layers // src.pp)
    held = f"its local layer {local}"
    if spec.is_mtp_layer(layer):
        held = f"its multi-token-prediction layer {layer - spec.num_layers}"
    say(
        f"trainer stage {src_stage} holds it as {held}; {dst.engine_name} stage"
        f" {dst_stage}"
        f" names it by its global index {layer}"
    )
    for param in layout.params:
        say()
        say(f"{param.key}  ({param.kind}, global {list(param.global_shape)})")
        for line in _rank_lines("src", param, param.src):
            say(line)
        for line in _rank_lines("dst", param, param.dst):
            say(line)


def _rank_lines(side: str, param, tensors) -> list[str]:
    """One line pair per rank; consecutive TP ranks holding the same thing share one."""
    rows: list[tuple[tuple, int, int, str]] = []  # (key, first tp, last tp, text)
    for t in tensors:
        ep = getattr(t, "ep", None)
        text = param.describe(t.index)
        key = (t.pp, ep, t.name, t.shape, text)
        if rows and rows[-1][0] == key and rows[-1][2] == t.tp - 1:
            rows[-1] = (key, rows[-1][1], t.tp, text)
        else:
            rows.append((key, t.tp, t.tp, text))
    lines = []
    for (pp, ep, name, shape, _), first, last, text in rows:
        tp = f"tp{first}" if first == last else f"tp{first}-{last} (each)"
        where = f"pp{pp} {tp}" + ("" if ep is None else f" ep{ep}")
        lines.append(f"  {side} {where} {name} {list(shape)}:")
        lines.append(f"      {text}")
    return lines


COMMAND = Command(
    "layout",
    "say what each trainer and vLLM rank holds of one layer",
    _layout_configure,
    _layout_run,
)
