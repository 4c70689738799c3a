"""Argument groups every subcommand shares: the model, the parallel sizes, the timeout.

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
import math

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


DEFAULT_TIMEOUT_S = 600.0  # the same default as run_sync: seconds for a scaled model


def add_timeout_arg(parser: argparse.ArgumentParser) -> None:
    """``--timeout SECONDS``: bounds the whole run, set-up included, on either executor."""
    parser.add_argument(
        "--timeout",
        type=seconds,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"stop the run (exit 3, naming the stuck rank) after this long"
        f" (default {DEFAULT_TIMEOUT_S:g})",
    )


def seconds(text: str) -> float:
    """A positive, finite number of seconds.

    >>> seconds("2.5")
    2.5
    >>> seconds("nan")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: --timeout ('nan') must be a positive, finite number of seconds
    """
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 < value < math.inf):
        raise argparse.ArgumentTypeError(
            f"--timeout ({text!r}) must be a positive, finite number of seconds"
        )
    return value


def positive_int(flag: str):
    """An argparse type for a positive integer, naming ``flag`` in its error.

    >>> positive_int("--n")("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: --n ('0') must be a positive integer
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise argparse.ArgumentTypeError(f"{flag} ({text!r}) must be a positive integer")
        return value

    return parse


def layer_list(text: str) -> list[int]:
    """``--layers 0,1``: distinct non-negative layer numbers; empty or repeated is an error.

    An empty value is refused because a CI script with an unset variable would
    otherwise check nothing and pass.

    >>> layer_list("3, 1")
    [3, 1]
    >>> layer_list("")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: --layers ('') names no layer: give e.g. 0,1, or leave ...
    >>> layer_list("0,0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: --layers ('0,0') repeats layer 0: list each layer once
    """
    parts = [part.strip() for part in text.split(",")]
    if not any(parts):
        raise argparse.ArgumentTypeError(
            f"--layers ({text!r}) names no layer: give e.g. 0,1, or leave --layers out"
            " to check every layer"
        )
    if not all(part.isdigit() for part in parts):
        raise argparse.ArgumentTypeError(
            f"--layers ({text!r}) must be comma-separated layer numbers (0 or more), e.g. 0,1"
        )
    layers = [int(part) for part in parts]
    repeated = sorted({n for n in layers if layers.count(n) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(
            f"--layers ({text!r}) repeats layer {', '.join(map(str, repeated))}:"
            " list each layer once"
        )
    return layers
