"""Argument groups every subcommand shares: the model, the parallel sizes.

>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> add_model_args(parser)
>>> add_parallel_args(parser)
>>> args = parser.parse_args(["--preset", "llama3-8b", "--src-tp", "2", "--dst-tp", "4"])
>>> load_parallel(args)
(Parallel(tp=2, pp=1, ep=1, dp=1), Parallel(tp=4, pp=1, ep=1, dp=1))
"""

from __future__ import annotations

import argparse

from syncviz.parallel import Parallel
from syncviz.presets import PRESETS, preset
from syncviz.spec import ModelSpec


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
