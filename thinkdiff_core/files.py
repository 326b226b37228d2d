"""Atomic file writes: a temp file in the same folder, then a rename.

A reader (or a resumed run) that sees the file sees all of it, so "exists" can mean "done"; a crash
leaves at most a hidden temp file, never a half-written result under the real name.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Call `write(temporary_path)`, then rename the result to `path`; refuse an existing `path` unless `overwrite`."""
    path = Path(path).expanduser()
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite (overwrite=True) to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(temporary)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} appeared while writing; pass --overwrite (overwrite=True) to replace it.")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path
