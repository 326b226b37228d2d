"""Atomic file writes (a temp file in the same folder, then a rename), safetensors helpers, and checked reads of
model files.

A reader (or a resumed run) that sees the file sees all of it, so "exists" can mean "done"; a crash
leaves at most a hidden temp file, never a half-written result under the real name.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

SAFETENSORS_SUFFIXES = (".safetensors",)


def current_umask() -> int:
    """The process umask, read without changing it where Linux reports it (setting it, even briefly, would
    race with other threads creating files, as ComfyUI's do)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Call `write(temporary_path)`, then rename the result to `path`; refuse an existing `path` unless `overwrite`.

    The result gets the mode a plain `open()` would give under the user's umask, whatever the writer used
    (safetensors writes owner-only files, which a ComfyUI running as another user could not read).
    """
    path = Path(path).expanduser()
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite (overwrite=True) to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        try:
            write(temporary)
        except (OSError, SafetensorError) as error:
            if isinstance(error, FileExistsError):
                raise
            raise OSError(f"Could not write {path}: {error}. Free some space, or choose a destination you can write "
                          f"to.") from error
        os.chmod(temporary, 0o666 & ~current_umask())
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} appeared while writing; pass --overwrite (overwrite=True) to replace it.")
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(OSError):  # never hide the writer's own error behind a clean-up error
            temporary.unlink(missing_ok=True)
    return path


def write_safetensors_atomic(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], metadata: dict[str, str],
                             overwrite: bool = False) -> Path:
    """Write a `.safetensors` file via a temp file and a rename: never half-written, never replaced unasked."""
    if Path(path).suffix.lower() not in SAFETENSORS_SUFFIXES:
        raise ValueError(f"Expected a .safetensors destination; got {Path(path).name}.")
    return write_atomic(path, lambda temporary: save_file(tensors, str(temporary), metadata=metadata), overwrite)


def safetensors_format(path: str | os.PathLike[str]) -> str | None:
    """The `format` entry of a safetensors file's metadata (None if absent or the file is not safetensors).

    Reads only the header, so listing a folder of multi-gigabyte files stays cheap; our files say
    `thinkdiff-aligner` or `thinkdiff-vision`, which tells them apart without loading any tensor.
    """
    try:
        with safe_open(str(path), framework="pt") as handle:
            return (handle.metadata() or {}).get("format")
    except (SafetensorError, OSError):
        return None


def read_json_object(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A JSON file that must hold an object (config.json, manifests), with errors that name the file."""
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno}); fix it "
                         f"or download it again.") from error
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not valid JSON (not UTF-8 text); download it again.") from error
    if not isinstance(value, dict):
        raise ValueError(f"{path} is not a JSON object (it holds a {type(value).__name__}); a model's config.json is an "
                         f"object like {{\"model_type\": ...}}. Download it again.")
    return value


def check_safetensors_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The folder's `*.safetensors` weight files, each header read once to catch a missing or truncated download
    before a loader fails deep inside with no file named."""
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{folder.name} has no weights (*.safetensors files) in {folder}; the download is incomplete. "
                         f"Download the model's *.safetensors files into that folder.")
    for path in files:
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except (SafetensorError, OSError) as error:
            raise ValueError(f"{path.name} in {folder} is truncated or damaged ({str(error)[:160]}); download that file "
                             f"again.") from error
    return files


def check_writable_folder(folder: str | os.PathLike[str], option: str) -> Path:
    """Make sure results can be written into `folder` (created if missing) before hours of work produce them."""
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".thinkdiff-write-check-"):
            pass
    except OSError as error:
        raise ValueError(f"{option} {folder}: cannot write there ({error.strerror or error}); choose a folder you can "
                         f"write to, or fix its permissions.") from error
    return folder

