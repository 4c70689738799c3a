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
from typing import Any, ClassVar

from syncviz.engines import DEFAULT_ENGINE, ENGINE_NAMES
from syncviz.errors import SyncvizError
from syncviz.parallel import EXPERT_PLACEMENTS, Parallel, validate
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
    add_family_arg(parser)


# Options a subcommand takes whole, by flag: argparse's settings for each, spelled once
# (the add_*_arg functions below add them by name).
OPTIONS: dict[str, dict[str, Any]] = {
    "--mtp": {
        "action": "store_true",
        "help": "also lay out the multi-token-prediction layer(s) after the last layer"
        " (layer num_hidden_layers on; models whose config counts them)",
    },
    "--family": {
        "metavar": "PATH",
        "help": "a model family of your own: a .py file defining FAMILY = FamilyInfo(...) or a"
        " .json file of its fields; its presets and architecture are then known",
    },
    "--engine": {
        "choices": ENGINE_NAMES,
        "default": DEFAULT_ENGINE,
        "help": "the inference engine the weights go to (default vllm)",
    },
    "--dst-expert-placement": {
        "choices": EXPERT_PLACEMENTS,
        "default": "linear",
        "help": "how the engine places whole experts under --dst-ep: contiguous (linear,"
        " the first E mod ep ranks one more) or rank r holding r, r+ep, ... (round_robin)",
    },
    "--dst-dp-attention": {
        "type": int,
        "default": 1,
        "metavar": "N",
        "help": "DP attention size (SGLang): attention sharded over dst tp / N ranks",
    },
}


def add_options(parser: argparse.ArgumentParser, *flags: str) -> None:
    """Add each of ``flags`` with its :data:`OPTIONS` settings.

    >>> parser = argparse.ArgumentParser()
    >>> add_options(parser, "--mtp", "--dst-dp-attention")
    >>> parser.parse_args(["--mtp"])
    Namespace(mtp=True, dst_dp_attention=1)
    """
    for flag in flags:
        parser.add_argument(flag, **OPTIONS[flag])


def add_mtp_arg(parser: argparse.ArgumentParser) -> None:
    """``--mtp``: lay out the multi-token-prediction layer(s) the model's config counts."""
    add_options(parser, "--mtp")


def add_family_arg(parser: argparse.ArgumentParser) -> None:
    """``--family PATH``: a family of one's own, declared in a .py or .json file."""
    add_options(parser, "--family")


def load_family_arg(args: argparse.Namespace) -> None:
    """Read, check and register the ``--family`` file, if one was given (before the model
    is read: its presets and config.json architecture come from it)."""
    path = getattr(args, "family", None)
    if path is not None:
        from syncviz.family_file import load_family

        load_family(path)


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
    load_family_arg(args)
    mtp = bool(getattr(args, "mtp", False))
    if args.preset is None:
        spec = ModelSpec.from_hf_config(args.config, mtp=mtp)
        for note in spec.notes:  # said, never a reason to stop
            print(f"syncviz: note: {note}", file=sys.stderr)
        return spec
    if args.preset in PRESETS:
        return preset(args.preset, mtp=mtp)
    if args.preset in shipped_configs():
        spec = shipped_config(args.preset)
        return spec.with_mtp(0, f"shipped config {args.preset}") if mtp else spec
    known = (*PRESETS, *shipped_configs())
    close = difflib.get_close_matches(args.preset, known, n=3, cutoff=0.6)
    fix = (
        "did you mean " + spoken(tuple(close)) + "?"
        if close
        else "use one of " + ", ".join(known) + " (`syncviz presets` lists them)"
    )
    raise SyncvizError(f"unknown preset {args.preset!r}", fix=fix)


def add_parallel_args(parser: argparse.ArgumentParser) -> None:
    """``--src-tp --src-pp --src-ep --dst-tp --dst-pp --dst-ep`` (each defaults to 1), and the
    destination's engine: ``--engine``, ``--dst-expert-placement``, ``--dst-dp-attention``."""
    for side, who in (("src", "trainer"), ("dst", "inference engine")):
        for size in ("tp", "pp", "ep"):
            parser.add_argument(
                f"--{side}-{size}", type=int, default=1, metavar="N", help=f"{who} {size} size"
            )
    add_engine_arg(parser)
    add_engine_layout_args(parser)


def add_engine_layout_args(parser: argparse.ArgumentParser) -> None:
    """``--dst-expert-placement`` and ``--dst-dp-attention``: how the engine places experts
    and attention (``--dst-ep`` is among the sizes)."""
    add_options(parser, "--dst-expert-placement", "--dst-dp-attention")


def add_engine_arg(parser: argparse.ArgumentParser) -> None:
    """``--engine vllm|sglang`` (default vllm): the destination engine (``syncviz.engines``)."""
    add_options(parser, "--engine")


def load_parallel(args: argparse.Namespace) -> tuple[Parallel, Parallel]:
    """The (src, dst) sizes from :func:`add_parallel_args`."""
    src = Parallel(tp=args.src_tp, pp=args.src_pp, ep=args.src_ep)
    dst_fields = ("tp", "pp", "ep", "expert_placement", "dp_attention")
    dst = Parallel(engine=args.engine, **{f: getattr(args, "dst_" + f) for f in dst_fields})
    return src, dst


def validate_sizes(spec: ModelSpec, src: Parallel, dst: Parallel) -> None:
    """The size rules (:func:`syncviz.parallel.validate`), before any work starts."""
    validate(spec, src, dst)


def load_inputs(args: argparse.Namespace) -> tuple[ModelSpec, Parallel, Parallel]:
    """The model and the (src, dst) sizes, checked against each other and ``--layers``
    before any work starts (bad input fails fast, before torch loads).

    >>> args = argparse.Namespace(preset="llama3-8b", config=None, src_tp=2, src_pp=1,
    ...     src_ep=1, dst_tp=4, dst_pp=1, dst_ep=1, engine="vllm",
    ...     dst_expert_placement="linear", dst_dp_attention=1, layers=[0])
    >>> spec, src, dst = load_inputs(args)
    >>> spec.name, src.tp, dst.tp
    ('llama3-8b', 2, 4)
    """
    spec = load_spec(args)
    src, dst = load_parallel(args)
    validate_sizes(spec, src, dst)
    check_layers(spec, args.layers)
    return spec, src, dst


def add_sync_args(parser: argparse.ArgumentParser, *, layers: str | None, what: str) -> None:
    """What a command that runs a sync reads: the model (and ``--mtp``), the sizes,
    ``--synchronizer``, ``--scaled/--exact`` (real sizes unless ``--scaled``) and
    ``--layers`` (default ``layers``, help ``what``)."""
    add_model_args(parser)
    add_mtp_arg(parser)
    add_parallel_args(parser)
    add_run_args(parser, scaled_default=False)
    add_layers_arg(parser, default=layers, what=what)


def add_run_args(parser: argparse.ArgumentParser, *, scaled_default: bool = True) -> None:
    """``--synchronizer`` and ``--scaled/--exact``: how a simulated sync runs."""
    parser.add_argument(
        "--synchronizer", default="chatlearn", metavar="NAME", help=SYNCHRONIZER_HELP
    )
    add_size_arg(
        parser,
        scaled_default=scaled_default,
        scaled_help="layout-preserving small sizes" + (" (default)" if scaled_default else ""),
        exact_help="the true sizes"
        + ("" if scaled_default else " (default; ids kept as compact maps)"),
    )


def add_size_arg(
    parser: argparse.ArgumentParser, *, scaled_default: bool, scaled_help: str, exact_help: str
) -> None:
    """``--scaled`` (layout-preserving small sizes) or ``--exact`` (the true ones): one
    ``scaled`` flag, default ``scaled_default``."""
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--scaled", dest="scaled", action="store_true", default=scaled_default, help=scaled_help
    )
    size.add_argument("--exact", dest="scaled", action="store_false", help=exact_help)


def synchronizer_choice(args: argparse.Namespace) -> str:
    """The ``--synchronizer`` value; for ``module:Class`` the current directory is searched
    for that module's top-level package, and for nothing else (see :class:`_CwdFinder`)."""
    choice = args.synchronizer
    module, colon, _ = choice.partition(":")
    top = module.split(".")[0]
    if colon and top.isidentifier():
        _CwdFinder.add(top, os.getcwd())
    return choice


class _CwdFinder:
    """Finds the named top-level modules in the current directory, and only those.

    Putting the directory on ``sys.path`` would let a ``./matplotlib.py`` or
    ``./ray.py`` there shadow the installed package; this finder answers for the
    ``--synchronizer`` module's own name only (first, as ``python -m`` would).

    >>> import pathlib, sys, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> _ = (pathlib.Path(folder) / "cwd_only_mod.py").write_text("X = 1")
    >>> _CwdFinder.add("cwd_only_mod", folder)
    >>> import cwd_only_mod; cwd_only_mod.X, folder in sys.path
    (1, False)
    """

    names: ClassVar[dict[str, str]] = {}  # top-level name -> folder searched for it

    @classmethod
    def add(cls, name: str, folder: str) -> None:
        cls.names[name] = folder
        if cls not in sys.meta_path:
            sys.meta_path.insert(0, cls)  # type: ignore[arg-type]

    @classmethod
    def find_spec(cls, fullname: str, path: object = None, target: object = None):
        folder = cls.names.get(fullname)
        if folder is None:
            return None
        from importlib.machinery import PathFinder

        return PathFinder.find_spec(fullname, [folder])


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


# No model has this many layers (a config.json may hold at most 1,024): numbers above it
# are not spelled out one by one, so `--layers 0-99999999999` costs nothing to refuse.
LAYER_CAP = 1 << 16


class Layers(list):
    """Layer numbers in order, once each (a ``list[int]``), with ``spans``: the
    ``(first, last)`` ranges as written, for messages about them."""

    spans: tuple[tuple[int, int], ...] = ()


def layer_list(text: str) -> Layers:
    """Layer numbers from ``0,1``, ranges ``0-3`` or both (``0-3,7``), in order, once each.

    >>> layer_list("5"), layer_list("3-1")
    ([5], [1, 2, 3])
    >>> import contextlib, io
    >>> with contextlib.redirect_stderr(io.StringIO()) as err:
    ...     layer_list("0,0")
    [0]
    >>> err.getvalue().split(";")[0]
    "syncviz: note: --layers '0,0' names layer 0 more than once"

    Numbers above :data:`LAYER_CAP` are not spelled out: a range reaching past it
    stops there and keeps its last number (out of range for any model, so it is
    never silently dropped):

    >>> huge = layer_list("2-99999999999")
    >>> len(huge), huge[-1], huge.spans
    (65536, 99999999999, ((2, 99999999999),))
    """
    spans: list[tuple[int, int]] = []
    try:
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            first, dash, last = part.partition("-")
            a, b = int(first), int(last) if dash else int(first)
            spans.append((min(a, b), max(a, b)))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--layers ({text!r}) must be layer numbers and ranges, e.g. 0-3,7"
        ) from None
    if not spans:  # an unset variable in a CI script must not check nothing and pass
        raise argparse.ArgumentTypeError(f"--layers ({text!r}) names no layer; e.g. 0-3,7")
    out: dict[int, None] = {}
    repeated: set[int] = set()
    for a, b in spans:
        numbers = range(a, min(b, LAYER_CAP) + 1)
        if b > LAYER_CAP:
            numbers = [*numbers, b]
        repeated.update(n for n in numbers if n in out)
        out.update(dict.fromkeys(numbers))
    if repeated:  # counted once, and said so: a repeat is often a typo
        shown = _spans_text(sorted(repeated))
        print(
            f"syncviz: note: --layers {text!r} names layer {shown}"
            " more than once; each layer is checked once",
            file=sys.stderr,
        )
    layers = Layers(out)
    layers.spans = tuple(spans)
    return layers


def _spans_text(numbers: list[int]) -> str:
    """Sorted numbers as ``0-3,7``.

    >>> _spans_text([0, 1, 2, 3, 7])
    '0-3,7'
    """
    return _runs_text([(n, n) for n in numbers])


def _runs_text(spans: list[tuple[int, int]], most: int = 6) -> str:
    """Inclusive ``(first, last)`` spans, merged where they touch, as ``0-3,7`` (at most
    ``most`` runs, then ``...``).

    >>> _runs_text([(5, 9), (0, 3), (4, 4), (20, 20)]), _runs_text([(1, 1), (3, 3)], most=1)
    ('0-9,20', '1,...')
    """
    runs: list[list[int]] = []
    for a, b in sorted(spans):
        if runs and a <= runs[-1][1] + 1:
            runs[-1][1] = max(runs[-1][1], b)
        else:
            runs.append([a, b])
    words = [f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:most]]
    return ",".join(words + (["..."] if len(runs) > most else []))


def check_layers(spec: ModelSpec, layers: list[int] | None) -> None:
    """Refuse layers outside the model, naming them and the model's layer count.

    >>> from syncviz.presets import preset
    >>> try:
    ...     check_layers(preset("llama3-8b"), layer_list("30-99999999999"))
    ... except SyncvizError as err:
    ...     print(err)
    --layers 32-99999999999 out of range: llama3-8b has 32 layers: use layers 0-31
    """
    if not layers:
        return
    count = spec.all_layers  # multi-token-prediction layers, when laid out, come last
    spans = getattr(layers, "spans", None) or tuple((n, n) for n in layers)
    bad = [(max(a, count), b) for a, b in spans if b >= count]
    bad += [(a, min(b, -1)) for a, b in spans if a < 0]
    if bad:
        shown = _runs_text(bad)
        raise SyncvizError(
            f"--layers {shown} out of range: {spec.name} has {count} layers",
            fix=f"use layers 0-{count - 1}",
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


MAX_TIMEOUT_S = 7 * 24 * 3600.0  # a week: beyond it the clocks' arithmetic overflows


def seconds(text: str) -> float:
    """A positive number of seconds, at most :data:`MAX_TIMEOUT_S` (a week).

    >>> seconds("2.5")
    2.5
    >>> try:
    ...     seconds("1e10")
    ... except argparse.ArgumentTypeError as err:
    ...     print(err)
    --timeout ('1e10') must be a positive number of seconds, at most 604800 (a week)
    """
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 < value <= MAX_TIMEOUT_S):
        raise argparse.ArgumentTypeError(
            f"--timeout ({text!r}) must be a positive number of seconds,"
            f" at most {MAX_TIMEOUT_S:.0f} (a week)"
        )
    return value


def positive_int(flag: str, most: int | None = None):
    """An argparse type for a positive integer (at most ``most``), naming ``flag`` and the
    allowed range in its error.

    >>> positive_int("--n")("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: --n ('0') must be a positive integer
    >>> positive_int("--n", most=64)("65")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: --n ('65') must be an integer from 1 to 64
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1 or (most is not None and value > most):
            allowed = "a positive integer" if most is None else f"an integer from 1 to {most}"
            raise argparse.ArgumentTypeError(f"{flag} ({text!r}) must be {allowed}")
        return value

    return parse
