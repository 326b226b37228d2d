"""Hugging Face model folders under ComfyUI's model directories, found and resolved safely.

ComfyUI's file lists hold files; a VLM is a folder (config.json, shards, tokenizer), so the loader
lists folders that hold a `config.json` itself, as ComfyUI's diffusers loader does for
`model_index.json`. A listed name is resolved back under the same roots only: a name from a
hand-edited workflow cannot point outside them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

CONFIG_FILE = "config.json"


def find_model_folders(roots: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Names (relative to their root, '/'-separated) of folders holding config.json, sorted, first root wins.

    A model folder's own subfolders are not searched: they hold parts of that model, not other models.
    """
    names: list[str] = []
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for folder, subfolders, files in os.walk(root, followlinks=True):
            if CONFIG_FILE in files and Path(folder) != root:
                names.append(Path(folder).relative_to(root).as_posix())
                subfolders.clear()
            else:
                subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
    return sorted(dict.fromkeys(names))


def resolve_model_folder(roots: Iterable[str | os.PathLike[str]], name: str) -> Path:
    """The folder `name` under the first root that has it, refusing names that leave the roots."""
    roots = [Path(root) for root in roots]
    relative = Path(name)
    if not name or relative.is_absolute() or ".." in relative.parts:
        raise ValueError(f"{name!r} is not a model folder name; pick one of the folders the loader lists.")
    for root in roots:
        candidate = root / relative
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    searched = ", ".join(str(root) for root in roots) or "(no folders registered)"
    raise FileNotFoundError(
        f"No model folder {name!r} with a config.json under {searched}. Put the Hugging Face folder (e.g. "
        f"Qwen2-VL-7B-Instruct with its config.json and *.safetensors) in models/vlm/ or models/LLM/, then refresh."
    )
