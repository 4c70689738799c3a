"""``syncviz check``: sync a model on simulated ranks and check every vLLM tensor.

Exit 0 when every tensor matches, 1 on a mismatch or a synchronizer exception.
"""

from __future__ import annotations

import argparse

from syncviz.cli.args import (
    add_model_args,
    add_parallel_args,
    load_parallel,
    load_spec,
    validate_sizes,
)
from syncviz.cli.command import Command
from syncviz.errors import SyncvizError
from syncviz.run.memory import refuse_if_too_big


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
        default=False,
        help="layout-preserving small sizes (for teaching pictures; ids materialized)",
    )
    size.add_argument(
        "--exact",
        dest="scaled",
        action="store_false",
        help="the model's real sizes (default; ids kept as compact maps)",
    )
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
    # Real sizes keep ids symbolic (nothing per element); Ray and random weights need
    # real buffers, so they estimate their memory first and refuse what cannot fit.
    symbolic = not args.scaled and args.values == "ids" and args.executor == "inprocess"
    if not symbolic:
        refuse_if_too_big(spec, src, dst, args.layers, args.values)
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
        provenance="symbolic" if symbolic else "materialized",
    )
    report = check(result, args.synchronizer, show_progress=whole_model and not args.json)
    print(report.to_json() if args.json else report.text())
    return 0 if report.ok else 1


COMMAND = Command(
    "check",
    "sync a model on simulated ranks and check every vLLM tensor (exit 1 on a mismatch)",
    _check_configure,
    _check_run,
)
