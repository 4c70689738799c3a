"""The ``syncviz`` command line: one small function per subcommand, registered in a table.

>>> main(["layout", "--preset", "llama3-8b", "--src-tp", "2", "--dst-tp", "4", "--layer", "0"])
... # doctest: +ELLIPSIS, +NORMALIZE_WHITESPACE
llama3-8b (llama-mcore), layer 0: trainer tp=2 pp=1 ep=1 -> vLLM tp=4 pp=1
...
model.model.layers.0.self_attn.qkv_proj.weight  (qkv, global [6144, 4096])
  src pp0 tp0 module.module.decoder.layers.0.self_attention.linear_qkv.weight [3072, 4096]:
      rows 0-511: Q heads 0-3; rows 512-639: K head 0; rows 640-767: V head 0; ...
...
0

Bad input exits with status 2 and one line on stderr (``syncviz: error: ...``).
To add a subcommand: write ``configure(parser)`` and ``run(args) -> int`` and
call :func:`register`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from syncviz.errors import SyncvizError
from syncviz.parallel import Parallel
from syncviz.presets import PRESETS, preset
from syncviz.spec import ModelSpec

PROG = "syncviz"


@dataclass(frozen=True)
class Command:
    """A subcommand: its help line, how it adds its arguments, and what it runs."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}


def register(command: Command) -> Command:
    """Add a subcommand to the table :func:`main` builds its parser from."""
    COMMANDS[command.name] = command
    return command


class UsageError(Exception):
    """Bad command-line input, reported as one line and exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message)


# ---------------------------------------------------------------- shared argument groups


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """``--preset NAME | --config PATH`` (one of them is required)."""
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--preset", metavar="NAME", help="one of: " + ", ".join(PRESETS))
    group.add_argument(
        "--config", metavar="PATH", help="a Hugging Face config.json (or its folder)"
    )


def load_spec(args: argparse.Namespace) -> ModelSpec:
    """The model the user named with ``--preset`` or ``--config``."""
    if args.preset is not None:
        return preset(args.preset)
    return ModelSpec.from_hf_config(args.config)


def add_parallel_args(parser: argparse.ArgumentParser) -> None:
    """``--src-tp --src-pp --src-ep --dst-tp --dst-pp`` (each defaults to 1)."""
    for side, who in (("src", "trainer"), ("dst", "vLLM")):
        for size in ("tp", "pp") + (("ep",) if side == "src" else ()):
            parser.add_argument(
                f"--{side}-{size}", type=int, default=1, metavar="N", help=f"{who} {size} size"
            )


def load_parallel(args: argparse.Namespace) -> tuple[Parallel, Parallel]:
    """The (src, dst) sizes from :func:`add_parallel_args`."""
    src = Parallel(tp=args.src_tp, pp=args.src_pp, ep=args.src_ep)
    dst = Parallel(tp=args.dst_tp, pp=args.dst_pp)
    return src, dst


def validate_sizes(spec: ModelSpec, src: Parallel, dst: Parallel) -> None:
    """The project's size rules (``syncviz.parallel.validate``) when that module has them."""
    from syncviz import parallel

    check = getattr(parallel, "validate", None)
    if check is not None:
        check(spec, src, dst)


# ---------------------------------------------------------------- syncviz layout


def _layout_configure(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    add_parallel_args(parser)
    parser.add_argument("--layer", type=int, default=0, metavar="N", help="global layer index")
    parser.add_argument(
        "--globals", action="store_true", help="also show the embedding, final norm and lm_head"
    )


def _layout_run(args: argparse.Namespace) -> int:
    from syncviz.oracle import model_layout

    spec = load_spec(args)
    src, dst = load_parallel(args)
    validate_sizes(spec, src, dst)
    layout = model_layout(spec, src, dst, layers=[args.layer], include_globals=args.globals)
    print(
        f"{spec.name} ({spec.family}), layer {args.layer}: trainer tp={src.tp} pp={src.pp}"
        f" ep={src.ep} -> vLLM tp={dst.tp} pp={dst.pp}"
    )
    src_stage, dst_stage = layout.src_stage(args.layer), layout.dst_stage(args.layer)
    local = args.layer - src_stage * (spec.num_layers // src.pp)
    print(
        f"trainer stage {src_stage} holds it as its local layer {local}; vLLM stage {dst_stage}"
        f" names it by its global index {args.layer}"
    )
    for param in layout.params:
        print()
        print(f"{param.key}  ({param.kind}, global {list(param.global_shape)})")
        for line in _rank_lines("src", param, param.src):
            print(line)
        for line in _rank_lines("dst", param, param.dst):
            print(line)
    return 0


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


register(
    Command(
        "layout",
        "say what each trainer and vLLM rank holds of one layer",
        _layout_configure,
        _layout_run,
    )
)


# ---------------------------------------------------------------- syncviz check


def _check_configure(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    add_parallel_args(parser)
    parser.add_argument(
        "--synchronizer",
        default="chatlearn",
        metavar="NAME",
        help="chatlearn (the faithful port), corrected, or package.module:ClassName",
    )
    parser.add_argument(
        "--layers", type=_layer_list, default=None, metavar="0,1", help="layers (default: all)"
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--scaled",
        dest="scaled",
        action="store_true",
        default=True,
        help="layout-preserving small sizes (default)",
    )
    size.add_argument("--exact", dest="scaled", action="store_false", help="the true sizes")
    parser.add_argument(
        "--expert-comm", choices=("allgather", "alltoall"), default="allgather", help="MoE"
    )
    parser.add_argument("--executor", choices=("inprocess", "ray"), default="inprocess")
    parser.add_argument(
        "--src-vocab-divisible-by",
        type=int,
        default=None,
        metavar="N",
        help="the trainer's --make-vocab-size-divisible-by (default: pads like vLLM, to 64)",
    )
    parser.add_argument(
        "--values",
        choices=("ids", "random"),
        default="ids",
        help="what the trainer shards hold: provenance ids, or random float32 weights",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def _layer_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--layers ({text!r}) must be comma-separated layer numbers, e.g. 0,1"
        ) from None


def _check_run(args: argparse.Namespace) -> int:
    from syncviz.check import check
    from syncviz.run.inprocess import run_sync

    spec = load_spec(args)
    src, dst = load_parallel(args)
    validate_sizes(spec, src, dst)
    if args.layers is not None:
        bad = [n for n in args.layers if not 0 <= n < spec.num_layers]
        if bad:
            raise SyncvizError(
                f"--layers {bad} out of range for {spec.num_layers} layers",
                fix=f"use layers 0..{spec.num_layers - 1}",
            )
    if args.scaled:
        spec = spec.scaled(src, dst)
    whole_model = args.layers is None
    result = run_sync(
        spec,
        src,
        dst,
        synchronizer=args.synchronizer,
        layers=args.layers,
        expert_comm=args.expert_comm,
        executor=args.executor,
        show_progress=whole_model and not args.json,
        values=args.values,
        src_vocab_divisible_by=args.src_vocab_divisible_by,
    )
    report = check(result, args.synchronizer, show_progress=whole_model and not args.json)
    print(report.to_json() if args.json else report.text())
    return 0 if report.ok else 1


register(
    Command(
        "check",
        "sync a model on simulated ranks and check every vLLM tensor (exit 1 on a mismatch)",
        _check_configure,
        _check_run,
    )
)


# ---------------------------------------------------------------- syncviz presets


def _presets_run(args: argparse.Namespace) -> int:
    for name, spec in PRESETS.items():
        moe = f", {spec.num_experts} experts" if spec.is_moe else ""
        print(
            f"{name:20} {spec.family:13} {spec.num_layers} layers, hidden {spec.hidden_size},"
            f" {spec.num_attention_heads} heads / {spec.num_query_groups} K/V groups{moe}"
        )
    return 0


register(Command("presets", "list the model presets", lambda parser: None, _presets_run))


# ---------------------------------------------------------------- syncviz render


def _render_configure(parser: argparse.ArgumentParser) -> None:
    from syncviz.diagram.render_cli import render_configure

    render_configure(parser)


def _render_run(args: argparse.Namespace) -> int:
    from syncviz.diagram.render_cli import render_main

    return render_main(args)


register(
    Command(
        "render",
        "draw a layout or transfer diagram of one parameter to PNG or SVG",
        _render_configure,
        _render_run,
    )
)


# ---------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    """The parser with every registered subcommand."""
    parser = _Parser(prog=PROG, description="See and check Megatron -> vLLM weight layouts.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for command in COMMANDS.values():
        command.configure(sub.add_parser(command.name, help=command.help))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for bad input)."""
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command].run(args)
    except (UsageError, SyncvizError) as err:
        message = " ".join(str(err).split())
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except BrokenPipeError:  # output piped into `head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
