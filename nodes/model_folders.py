"""Model folders and files under ComfyUI's model directories, found, filtered and resolved safely.

ComfyUI's file lists hold files; a VLM or a BLIP-2 model is a folder (config.json, shards, tokenizer),
so the loaders list folders that hold a `config.json` itself, as ComfyUI's diffusers loader does for
`model_index.json`. A model folder's own files are parts of that model, never listed on their own (a
BLIP-2 folder's shards are not aligners). Each loader lists only what it can load, judged from a
config or a safetensors header: models/thinkdiff/ holds aligners and vision files side by side, told
apart by their metadata `format`. A listed name is resolved back under the same roots only: a name
from a hand-edited workflow cannot point outside them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ..thinkdiff_core.checkpoint import OFFICIAL_SUFFIXES, SAFETENSORS_SUFFIXES, is_aligner_file
from ..thinkdiff_core.vision_files import is_vision_source

CONFIG_FILE = "config.json"

VLM_FOLDER_KEYS = ("vlm", "LLM")
"""ComfyUI model-folder keys (models/vlm/, models/LLM/, and extra_model_paths.yaml entries) searched for VLMs."""
ALIGNER_FOLDER_KEY = "thinkdiff"
ALIGNER_SUFFIXES = SAFETENSORS_SUFFIXES + OFFICIAL_SUFFIXES
VISION_FOLDER_KEYS = (ALIGNER_FOLDER_KEY, "clip_vision")
"""Keys searched for the ThinkDiff-CLIP vision tower: models/thinkdiff/ and ComfyUI's own models/clip_vision/."""

Roots = Iterable[str | os.PathLike[str]]


def _walk(root: Path) -> Iterator[tuple[Path, bool]]:
    """(path, is_model_folder) for the model folders under `root` and the files outside them; hidden ones skipped."""
    for folder, subfolders, files in os.walk(root, followlinks=True):
        here = Path(folder)
        if CONFIG_FILE in files and here != root:
            yield here, True
            subfolders.clear()
            continue
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield here / name, False


def _find(roots: Roots, keep: Callable[[Path, bool], bool]) -> list[str]:
    """Names (relative to their root, '/'-separated) of the entries `keep` accepts, sorted, listed once."""
    names: list[str] = []
    for root in map(Path, roots):
        if root.is_dir():
            names += [path.relative_to(root).as_posix() for path, is_folder in _walk(root) if keep(path, is_folder)]
    return sorted(dict.fromkeys(names))


def find_model_folders(roots: Roots) -> list[str]:
    """Folders holding config.json (a root that is itself a model folder is not listed)."""
    return _find(roots, lambda path, is_folder: is_folder)


def find_vision_models(roots: Roots) -> list[str]:
    """BLIP-2 folders (config.json with model_type blip-2) and converted vision `.safetensors` files."""
    return _find(roots, lambda path, is_folder: is_vision_source(path))


def find_aligner_files(roots: Roots) -> list[str]:
    """Official `.pth`-style aligner files and our aligner `.safetensors` (not vision files, not model shards)."""
    return _find(roots, lambda path, is_folder: not is_folder and is_aligner_file(path))


def _resolve(roots: Roots, name: str, found: Callable[[Path], bool], what: str, fix: str) -> Path:
    """`root / name` for the first root where `found` accepts it. A name that leaves the roots is refused; one
    found under none gets an error naming `what` was looked for, the folders searched, and the `fix`."""
    relative, roots = Path(name), [Path(root) for root in roots]
    if not name or relative.is_absolute() or ".." in relative.parts:
        raise ValueError(f"{name!r} is not a model name; pick one of the entries the loader lists.")
    path = next((root / relative for root in roots if found(root / relative)), None)
    if path is None:
        searched = ", ".join(map(str, roots)) or "(no folders registered)"
        raise FileNotFoundError(f"No {what} {name!r} under {searched}. {fix}, then refresh.")
    return path


def resolve_vlm_folder(roots: Roots, name: str) -> Path:
    """The VLM folder `name` (holding config.json) under the first root that has it."""
    return _resolve(roots, name, lambda candidate: (candidate / CONFIG_FILE).is_file(), "model folder",
                    "Put the Hugging Face folder (e.g. Qwen2-VL-7B-Instruct with its config.json and "
                    "*.safetensors) in models/vlm/ or models/LLM/")


def resolve_vision_model(roots: Roots, name: str) -> Path:
    """The BLIP-2 folder or converted vision file `name` under the first root that has it."""
    return _resolve(roots, name, lambda candidate: candidate.is_file() or (candidate / CONFIG_FILE).is_file(),
                    "BLIP-2 folder or vision file", "Put the blip2-flan-t5-xxl folder (config.json, *.safetensors) "
                    "or a file from `python -m thinkdiff_core.convert vision` in models/thinkdiff/ or models/clip_vision/")


def resolve_aligner_file(roots: Roots, name: str) -> Path:
    """The aligner file `name` under the first root that has it."""
    return _resolve(roots, name, Path.is_file, "aligner file", "Put thinkdiff_lvlm.pth, thinkdiff_clip.pth or an "
                    "aligner .safetensors in models/thinkdiff/")
