"""The command-line ending every tool shares: a user error is one `error:` line and exit code 2.

generate, convert, train.align, train.precompute, train.evaluate and train.cobsat all end through
`run_cli`, so a missing file, a bad value or a damaged safetensors file reads the same everywhere and
never as a traceback. Bugs (any other exception) still raise: their traceback is what a report needs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from safetensors import SafetensorError

from .precision import MissingDependency

# OSError covers missing, unreadable and unwritable files (FileNotFoundError, PermissionError, a full
# disk); SafetensorError a truncated or foreign .safetensors file; MissingDependency names its pip command.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, SafetensorError, NotImplementedError,
                                                 MissingDependency)


def run_cli(work: Callable[[], str | None]) -> int:
    """Run a tool's work and print what it returns (exit 0); a user error prints one line (exit 2)."""
    try:
        text = work()
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if text:
        print(text)
    return 0


def positive_int(text: str) -> int:
    """argparse type for counts and sizes: `--steps 0` is refused, not silently read as "the default"."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
