"""What a subcommand is: its name, help line, arguments and what it runs.

>>> Command("hello", "say hello", lambda parser: None, lambda args: 0).name
'hello'
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """A subcommand: its help line, how it adds its arguments, and what it runs."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """Bad command-line input, reported as one line and exit status 2."""


class HelpFormatter(argparse.HelpFormatter):
    """Help that shows each option's default, unless it has none worth saying
    (None, False) or its help already says it.

    >>> parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    >>> _ = parser.add_argument("--src-tp", type=int, default=1, help="trainer tp size")
    >>> "trainer tp size (default: 1)" in parser.format_help()
    True
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default in (None, False, argparse.SUPPRESS)
            or isinstance(default, bool)
            or action.option_strings == []
        ):
            return action.help
        shown = ",".join(map(str, default)) if isinstance(default, list) else "%(default)s"
        return f"{text} (default: {shown})"
