"""Copies the example workflows' input pictures into ComfyUI's input folder, never over a user's file.

The shipped workflows name their pictures in LoadImage nodes, which read ComfyUI's `input/` folder; the
pictures ship in `workflows/input/`. Copying them on start (rather than asking users to) makes every
workflow run as loaded. No ComfyUI import here: the repo-root `__init__.py` passes ComfyUI's folder in.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..thinkdiff_core.files import write_atomic

SHIPPED_INPUTS = Path(__file__).resolve().parents[1] / "workflows" / "input"
"""The pack's folder of workflow input pictures (its README.md says where each comes from)."""

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def copy_shipped_inputs(input_directory: str | Path, source: Path = SHIPPED_INPUTS) -> list[Path]:
    """Copy each picture of `source` into `input_directory` unless a file of that name is already there.

    Returns the files it wrote (empty on every start after the first). Each copy is written under a
    temporary name and renamed, so a ComfyUI stopped mid-copy never leaves a truncated picture behind
    that the next start would then keep.
    """
    destination = Path(input_directory)
    written = []
    for picture in sorted(source.iterdir()):
        target = destination / picture.name
        if picture.suffix.lower() not in PICTURE_SUFFIXES or target.exists():
            continue
        try:
            write_atomic(target, lambda temporary, picture=picture: shutil.copyfile(picture, temporary))
        except FileExistsError:  # the user put one there while we copied: theirs stays
            continue
        written.append(target)
    return written
