"""``syncviz diagnose``: judge real engine rank dumps (vLLM, SGLang) against their checkpoint.

Exit 0 when every tensor matches, 1 on any mismatch, missing or stale tensor, 2
when nothing judged is wrong but some tensor was not checkable (the engine emptied
or repacked it after loading), and 2 on bad input (missing files, shapes that fit
no valid dst tp, a folder that is not a checkpoint).
"""

from __future__ import annotations

import argparse

from syncviz.cli.args import (
    add_engine_arg,
    add_engine_layout_args,
    add_family_arg,
    add_layers_arg,
    load_family_arg,
)
from syncviz.cli.command import Command
from syncviz.cli.interrupts import checkpoint
from syncviz.cli.output import report_text
from syncviz.errors import SyncvizError


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reference",
        required=True,
        metavar="HF_DIR",
        help="the Hugging Face checkpoint folder (config.json + *.safetensors)",
    )
    parser.add_argument(
        "--dump",
        required=True,
        metavar="DUMP_DIR",
        help="one tp{t}.safetensors per engine rank (pp{p}-tp{t}.safetensors when --dst-pp > 1)",
    )
    parser.add_argument("--dst-tp", type=int, required=True, metavar="D", help="engine tp size")
    parser.add_argument("--dst-pp", type=int, default=1, metavar="P", help="engine pp size")
    parser.add_argument(
        "--dst-ep", type=int, default=1, metavar="N", help="engine expert parallel size"
    )
    add_engine_arg(parser)
    add_engine_layout_args(parser)
    add_layers_arg(
        parser,
        default=None,
        what="layers to judge (default: all, with the embedding, final norm and lm_head)",
    )
    parser.add_argument(
        "--previous",
        action="append",
        default=[],
        metavar="PREV_DIR",
        help="an earlier checkpoint (same format as --reference; repeatable): wrong values"
        " found there are named stale",
    )
    parser.add_argument(
        "--trace", default=None, metavar="TRACE_DIR", help="traces from syncviz.record"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_family_arg(parser)


def _run(args: argparse.Namespace) -> int:
    from syncviz.diagnose import diagnose

    checkpoint()  # a Ctrl-C that torch's start-up swallowed
    load_family_arg(args)  # a checkpoint of a family of one's own: its architecture

    for name in ("dst_tp", "dst_pp", "dst_ep", "dst_dp_attention"):
        if getattr(args, name) < 1:
            flag = "--" + name.replace("_", "-")
            raise SyncvizError(
                f"{flag} ({getattr(args, name)}) must be positive", fix="use the engine's size"
            )
    report = diagnose(
        args.reference,
        args.dump,
        args.dst_tp,
        args.dst_pp,
        layers=args.layers,
        trace=args.trace,
        show_progress=not args.json,
        previous=args.previous,
        engine=args.engine,
        dst_ep=args.dst_ep,
        expert_placement=args.dst_expert_placement,
        dp_attention=args.dst_dp_attention,
    )
    print(report.to_json() if args.json else report_text(report))
    return report.exit_code


COMMAND = Command(
    "diagnose",
    "judge real engine rank dumps against their checkpoint (exit 1 on a mismatch)",
    _configure,
    _run,
)
