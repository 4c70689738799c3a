"""The ``syncviz`` command line: one module per subcommand, registered in a table.

>>> main(["presets"])  # doctest: +ELLIPSIS
llama2-7b            llama-legacy  32 layers, hidden 4096, 32 heads / 32 K/V groups
...
0

Every failure is one line on stderr (``syncviz: error: ...``) and an exit code
that means one thing (:data:`EXIT_CODES`, shown by ``syncviz --help``): 2 for
bad input, 3 when the run itself failed, 130 / 143 after Ctrl-C / SIGTERM.
To add a subcommand: write a module with ``COMMAND = Command(name, help,
configure, run)`` (``configure(parser)``, ``run(args) -> int``) and add it to
the table below, or call :func:`register`.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from syncviz.cli import check, diagnose, layout, presets, render
from syncviz.cli.command import Command, HelpFormatter, UsageError
from syncviz.cli.interrupts import (
    end_process,
    exit_code,
    handle_signals,
    interrupted_code,
    running,
    say_stopped,
)
from syncviz.cli.output import say
from syncviz.errors import SyncvizError

PROG = "syncviz"

COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (layout.COMMAND, check.COMMAND, presets.COMMAND, render.COMMAND, diagnose.COMMAND)
}


def register(command: Command) -> Command:
    """Add a subcommand to the table :func:`main` builds its parser from."""
    COMMANDS[command.name] = command
    return command


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message)


__all__ = ["COMMANDS", "EXIT_CODES", "Command", "UsageError", "build_parser", "main", "register"]

EXIT_CODES = """\
exit codes:
  0    all right (every vLLM tensor matches; the diagram was written)
  1    a finding: some weights are wrong, or the synchronizer raised
  2    bad input: a flag, a config or trace file, a size, a path (one line on stderr)
  3    the run itself failed: a rank died or stalled past --timeout, the
       synchronizer could not be loaded, or memory ran out
  130  interrupted (Ctrl-C); 143 terminated (SIGTERM); both clean up first

what runs: --synchronizer package.module:Class imports that module (from the
current directory or PYTHONPATH) and so runs its code, as --family FILE.py runs
that file; the current directory is searched for nothing else. config.json,
trace files and --family FILE.json are only parsed as JSON.
SYNCVIZ_TRACEBACK=1 prints the traceback of an unexpected error.
"""


def build_parser() -> argparse.ArgumentParser:
    """The parser with every registered subcommand."""
    from syncviz import __version__

    parser = _Parser(
        prog=PROG,
        description="See and check Megatron -> vLLM weight layouts.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for command in COMMANDS.values():
        command.configure(
            sub.add_parser(command.name, help=command.help, formatter_class=HelpFormatter)
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (see :data:`EXIT_CODES`).

    With ``argv`` None the command line is this process's own (the ``syncviz``
    script, ``python -m syncviz``): once the command has cleaned up, the process
    ends here, flushed, without the interpreter's teardown, and a signal before or
    after the command ends it at once (see :mod:`syncviz.cli.interrupts`).
    """
    owns_process = argv is None
    with handle_signals(owns_process=owns_process):
        try:
            code = _dispatch(argv)
        except KeyboardInterrupt as stop:  # a second signal while a failure was being told
            code = exit_code(stop)
            say_stopped(code)
        if owns_process:
            end_process(code)
    return code


def _dispatch(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
        with running():
            return COMMANDS[args.command].run(args)
    except UsageError as err:
        return _fail(str(err), 2)
    except SyncvizError as err:
        return _fail(str(err), err.exit_code)
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM (Terminated)
        code = exit_code(stop)
        say_stopped(code)
        return code
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except BrokenPipeError:  # output piped into `head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except MemoryError:
        return _fail("the run ran out of memory: use --scaled or fewer --layers", 3)
    except Exception as err:  # a bug or an unforeseen failure: still one line
        if os.environ.get("SYNCVIZ_TRACEBACK"):
            traceback.print_exc()
        return _fail(
            f"unexpected {type(err).__name__}: {err} (set SYNCVIZ_TRACEBACK=1 to see where;"
            " please report it)",
            3,
        )


def _fail(message: str, code: int) -> int:
    stopped = interrupted_code()
    if stopped is not None:  # the failure came of a signal (e.g. an import it cut short)
        say_stopped(stopped)
        return stopped
    say(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    return code
