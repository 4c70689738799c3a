"""The ``syncviz`` command line: one module per subcommand, registered in a table.

>>> main(["presets"])  # doctest: +ELLIPSIS
llama2-7b            llama-legacy  32 layers, hidden 4096, 32 heads / 32 K/V groups
...
0

Bad input exits with status 2 and one line on stderr (``syncviz: error: ...``).
To add a subcommand: write a module with ``COMMAND = Command(name, help,
configure, run)`` (``configure(parser)``, ``run(args) -> int``) and add it to
the table below, or call :func:`register`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from syncviz.cli import check, layout, presets, render
from syncviz.cli.command import Command, HelpFormatter, UsageError
from syncviz.errors import SyncvizError

PROG = "syncviz"

COMMANDS: dict[str, Command] = {
    c.name: c for c in (layout.COMMAND, check.COMMAND, presets.COMMAND, render.COMMAND)
}


def register(command: Command) -> Command:
    """Add a subcommand to the table :func:`main` builds its parser from."""
    COMMANDS[command.name] = command
    return command


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message)


__all__ = ["COMMANDS", "Command", "UsageError", "build_parser", "main", "register"]


def build_parser() -> argparse.ArgumentParser:
    """The parser with every registered subcommand."""
    from syncviz import __version__

    parser = _Parser(prog=PROG, description="See and check Megatron -> vLLM weight layouts.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for command in COMMANDS.values():
        command.configure(
            sub.add_parser(command.name, help=command.help, formatter_class=HelpFormatter)
        )
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
