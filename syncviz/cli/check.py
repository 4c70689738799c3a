"""``syncviz check``: sync a model on simulated ranks and check every vLLM tensor.

Exit 0 when every tensor matches, 1 on a mismatch or a synchronizer exception,
2 on bad input, 3 when the run itself failed (see ``syncviz --help``).
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from syncviz.cli.args import (
    add_model_args,
    add_parallel_args,
    add_timeout_arg,
    layer_list,
    load_parallel,
    load_spec,
    positive_int,
    validate_sizes,
)
from syncviz.cli.command import Command
from syncviz.errors import SyncvizError


def _check_configure(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    add_parallel_args(parser)
    parser.add_argument(
        "--synchronizer",
        default="chatlearn",
        metavar="NAME",
        help="chatlearn (the faithful port), corrected, or package.module:ClassName"
        " (imports that module from PYTHONPATH, which runs its code)",
    )
    parser.add_argument(
        "--layers", type=layer_list, default=None, metavar="0,1", help="layers (default: all)"
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
        type=positive_int("--src-vocab-divisible-by"),
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
    add_timeout_arg(parser)


def _check_run(args: argparse.Namespace) -> int:
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
    from syncviz.check import check  # torch: only once the input is known good

    if args.scaled:
        spec = spec.scaled(src, dst)
    if not args.scaled or args.values == "random":
        _say_memory(spec, src, dst, args)
    whole_model = args.layers is None
    # Ray's own messages (a worker died, ...) print to stdout: keep it for the report.
    ray = args.executor == "ray"
    quiet = contextlib.redirect_stdout(sys.stderr) if ray else contextlib.nullcontext()
    with quiet:
        result = _run(args, spec, src, dst, whole_model)
    report = check(result, args.synchronizer, show_progress=whole_model and not args.json)
    print(report.to_json() if args.json else report.text())
    return 0 if report.ok else 1


def _run(args: argparse.Namespace, spec, src, dst, whole_model: bool):
    from syncviz.run.inprocess import run_sync

    return run_sync(
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
        timeout=args.timeout,
    )


def _say_memory(spec, src, dst, args: argparse.Namespace) -> None:
    """True sizes materialize every element: say the estimate first (refused if too big)."""
    from syncviz.run.memory import available_bytes, check_memory, size_words
    from syncviz.run.plan import build_plan

    plan = build_plan(
        spec,
        src,
        dst,
        layers=args.layers,
        expert_comm=args.expert_comm,
        values=args.values,
        src_vocab_divisible_by=args.src_vocab_divisible_by,
    )
    need = check_memory(plan)
    have = available_bytes()
    shown = f", {size_words(have)} available" if have is not None else ""
    print(f"memory: this run needs ~{size_words(need)}{shown}", file=sys.stderr)


COMMAND = Command(
    "check",
    "sync a model on simulated ranks and check every vLLM tensor (exit 1 on a mismatch)",
    _check_configure,
    _check_run,
)
