"""Argument groups every subcommand shares: the model, the sizes, the run options, layers.

Each option is spelled once, here: ``--preset/--config``, ``--src-tp ...``,
``--synchronizer`` (``chatlearn``, ``corrected`` or ``module:Class``),
``--scaled/--exact``, ``--layers 0-3,7`` (``--layer`` is the same option).

>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> add_model_args(parser)
>>> add_parallel_args(parser)
>>> args = parser.parse_args(["--preset", "llama3-8b", "--src-tp", "2", "--dst-tp", "4"])
>>> load_parallel(args)
(Parallel(tp=2, pp=1, ep=1, dp=1), Parallel(tp=4, pp=1, ep=1, dp=1))
>>> layer_list("0-3,7")
[0, 1, 2, 3, 7]
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import sys

from syncviz.errors import SyncvizError
from syncviz.parallel import Parallel, validate
from syncviz.presets import PRESETS, preset, shipped_config, shipped_configs
from syncviz.rules import spoken
from syncviz.spec import ModelSpec

SYNCHRONIZER_HELP = "chatlearn (the faithful port), corrected, or package.module:ClassName"


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """``--preset NAME | --config PATH`` (one of them is required)."""
    group = parser.add_mutually_exclusive_group(required=True)
    names = ", ".join((*PRESETS, *shipped_configs()))
    group.add_argument("--preset", metavar="NAME", help=f"a preset or shipped config: {names}")
    group.add_argument(
        "--config", metavar="PATH", help="a Hugging Face config.json (or its folder)"
    )


def load_spec(args: argparse.Namespace) -> ModelSpec:
    """The model named by ``--preset`` (a preset or a shipped config) or ``--config``.

    >>> load_spec(argparse.Namespace(preset="gqa-custom", config=None)).num_query_groups
    4
    >>> try:
    ...     load_spec(argparse.Namespace(preset="llama3-8", config=None))
    ... except SyncvizError as err:
    ...     print(err)
    unknown preset 'llama3-8': did you mean llama3-8b, llama3-70b or llama2-7b?
    """
    if args.preset is None:
        spec = ModelSpec.from_hf_config(args.config)
        for note in spec.notes:  # said, never a reason to stop
            print(f"syncviz: note: {note}", file=sys.stderr)
        return spec
    if args.preset in PRESETS:
        return preset(args.preset)
    if args.preset in shipped_configs():
        return shipped_config(args.preset)
    known = (*PRESETS, *shipped_configs())
    close = difflib.get_close_matches(args.preset, known, n=3, cutoff=0.6)
    fix = (
        "did you mean " + spoken(tuple(close)) + "?"
        if close
        else "use one of " + ", ".join(known) + " (`syncviz presets` lists them)"
    )
    raise SyncvizError(f"unknown preset {args.preset!r}", fix=fix)


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
    """The size rules (:func:`syncviz.parallel.validate`), before any work starts."""
    validate(spec, src, dst)


def add_run_args(parser: argparse.ArgumentParser, *, scaled_default: bool = True) -> None:
    """``--synchronizer`` and ``--scaled/--exact``: how a simulated sync runs."""
    parser.add_argument(
        "--synchronizer", default="chatlearn", metavar="NAME", help=SYNCHRONIZER_HELP
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--scaled",
        dest="scaled",
        action="store_true",
        default=scaled_default,
        help="layout-preserving small sizes" + (" (default)" if scaled_default else ""),
    )
    size.add_argument(
        "--exact",
        dest="scaled",
        action="store_false",
        help="the true sizes" + ("" if scaled_default else " (default; ids kept as compact maps)"),
    )


def synchronizer_choice(args: argparse.Namespace) -> str:
    """The ``--synchronizer`` value; for ``module:Class`` the current directory is made
    importable first, as ``python -m`` would (the console script does not do it)."""
    choice = args.synchronizer
    if ":" in choice and os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    return choice


def add_layers_arg(parser: argparse.ArgumentParser, *, default: str | None, what: str) -> None:
    """``--layers 0-3,7`` (``--layer`` spells the same option)."""
    parser.add_argument(
        "--layers",
        "--layer",
        dest="layers",
        type=layer_list,
        default=None if default is None else layer_list(default),
        metavar="0-3,7",
        help=what,
    )


def layer_list(text: str) -> list[int]:
    """Layer numbers from ``0,1``, ranges ``0-3`` or both (``0-3,7``), in order, once each.

    >>> layer_list("5"), layer_list("3-1")
    ([5], [1, 2, 3])
    >>> import contextlib, io
    >>> with contextlib.redirect_stderr(io.StringIO()) as err:
    ...     layer_list("0,0")
    [0]
    >>> err.getvalue().split(";")[0]
    "syncviz: note: --layers '0,0' names layer 0 more than once"
    """
    out: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            first, dash, last = part.partition("-")
            a, b = int(first), int(last) if dash else int(first)
            out += range(min(a, b), max(a, b) + 1)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--layers ({text!r}) must be layer numbers and ranges, e.g. 0-3,7"
        ) from None
    if not out:  # an unset variable in a CI script must not check nothing and pass
        raise argparse.ArgumentTypeError(f"--layers ({text!r}) names no layer; e.g. 0-3,7")
    repeated = sorted({n for n in out if out.count(n) > 1})
    if repeated:  # counted once, and said so: a repeat is often a typo
        print(
            f"syncviz: note: --layers {text!r} names layer {','.join(map(str, repeated))}"
            " more than once; each layer is checked once",
            file=sys.stderr,
        )
    return list(dict.fromkeys(out))


def check_layers(spec: ModelSpec, layers: list[int] | None) -> None:
    """Refuse layers outside the model, naming the valid range."""
    bad = [n for n in layers or () if not 0 <= n < spec.num_layers]
    if bad:
        raise SyncvizError(
            f"--layers {','.join(map(str, bad))} out of range for {spec.num_layers} layers",
            fix=f"use layers 0-{spec.num_layers - 1}",
        )


DEFAULT_TIMEOUT_S = 600.0  # the same default as run_sync: seconds for a scaled model


def add_timeout_arg(parser: argparse.ArgumentParser) -> None:
    """``--timeout SECONDS``: bounds the whole run, set-up included, on either executor."""
    parser.add_argument(
        "--timeout",
        type=seconds,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help="stop the run (exit 3, naming the stuck rank) after this long"
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
