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
