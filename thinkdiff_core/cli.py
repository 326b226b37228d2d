"""What every command-line tool of the project shares: which errors are the user's to fix, and how they end.

A user error (a bad option, a missing or damaged file, a destination that cannot be written) ends with
one `error: ...` line on stderr and exit code 2, never a traceback; anything else is a bug and keeps its
traceback. Every `--help` shows each option's default (`ShowsDefaults`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from safetensors import SafetensorError

from .precision import MissingDependency

USER_ERRORS = (ValueError, OSError, SafetensorError, NotImplementedError, MissingDependency)
"""OSError covers missing files, existing destinations, full disks and permissions."""


class ShowsDefaults(argparse.HelpFormatter):
    """Appends `(default: X)` to an option's help unless the help already speaks of its default, or there is none
    worth showing (None, False, empty: the help says what leaving the option out does)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        nothing = default is None or default is False or default in ([], "", argparse.SUPPRESS)
        if nothing or "default" in text or not action.option_strings:
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})".lstrip()


def run_cli(work: Callable[[], object]) -> int:
    """Run a tool's work: 0 when it finishes, 2 with one `error:` line for a user error."""
    try:
        work()
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def at_least(value: int, minimum: int) -> int:
    """`value`, refused (ValueError) below `minimum`: a count of 0 is never quietly read as "use the default"."""
    if value < minimum:
        raise ValueError(f"must be at least {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An argparse type for counts and sizes: 0 or less is refused rather than read as 'use the default'."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    try:
        return at_least(value, 1)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
