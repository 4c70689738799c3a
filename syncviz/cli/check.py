"""``syncviz check``: sync a model on simulated ranks and check every vLLM tensor.

Exit 0 when every tensor matches, 1 on a mismatch or a synchronizer exception,
2 on bad input, 3 when the run itself failed (see ``syncviz --help``).
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from syncviz.cli.args import (
    add_sync_args,
    add_timeout_arg,
    load_inputs,
    positive_int,
    synchronizer_choice,
)
from syncviz.cli.command import Command
from syncviz.cli.interrupts import checkpoint
from syncviz.cli.output import report_text
from syncviz.run.options import SyncOptions
from syncviz.spec import CONFIG_BOUNDS


def _check_configure(parser: argparse.ArgumentParser) -> None:
    add_sync_args(parser, layers=None, what="layers to check (default: all)")
    parser.add_argument(
        "--expert-comm",
        choices=("allgather", "alltoall"),
        default=SyncOptions.expert_comm,
        help="how routed experts are regrouped (MoE)",
    )
    parser.add_argument(
        "--executor", choices=("inprocess", "ray"), default="inprocess", help="where ranks run"
    )
    parser.add_argument(
        "--src-vocab-divisible-by",
        type=positive_int("--src-vocab-divisible-by", most=CONFIG_BOUNDS["vocab_size"]),
        default=SyncOptions.src_vocab_divisible_by,
        metavar="N",
        help="the trainer's --make-vocab-size-divisible-by (None: pads like vLLM, to 64)",
    )
    parser.add_argument(
        "--values",
        choices=("ids", "random"),
        default=SyncOptions.values,
        help="what the trainer shards hold: provenance ids, or random float32 weights",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="list every parameter and line (by default findings repeated across layers"
        " are told once)",
    )
    add_timeout_arg(parser)


def _check_run(args: argparse.Namespace) -> int:
    spec, src, dst = load_inputs(args)
    from syncviz.check import check  # torch: only once the input is known good
    from syncviz.run.inprocess import run_sync

    checkpoint()  # a Ctrl-C that torch's start-up swallowed

    real = spec
    if args.scaled:
        spec = spec.scaled(src, dst)
    # Real sizes keep ids symbolic (nothing per element); Ray and random weights need
    # real buffers, so they estimate their memory first and refuse what cannot fit.
    symbolic = not args.scaled and args.values == "ids" and args.executor == "inprocess"
    if not symbolic and (not args.scaled or args.values == "random"):
        _say_memory(spec, src, dst, args)
    whole_model = args.layers is None
    # Ray's own messages (a worker died, ...) print to stdout: keep it for the report.
    ray = args.executor == "ray"
    quiet = contextlib.redirect_stdout(sys.stderr) if ray else contextlib.nullcontext()
    with quiet:
        result = run_sync(
            spec,
            src,
            dst,
            synchronizer=synchronizer_choice(args),
            layers=args.layers,
            expert_comm=args.expert_comm,
            executor=args.executor,
            show_progress=whole_model and not args.json,
            values=args.values,
            src_vocab_divisible_by=args.src_vocab_divisible_by,
            timeout=args.timeout,
            provenance="symbolic" if symbolic else "materialized",
        )
    report = check(
        result,
        show_progress=whole_model and not args.json,
        real=real if args.scaled else None,
    )
    print(report.to_json() if args.json else report_text(report, verbose=args.verbose))
    return 0 if report.ok else 1


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
