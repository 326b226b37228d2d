"""Where a model comes from: a local path, or a Hugging Face Hub id, downloaded only because the user named one.

Every loader (VLM, BLIP-2 vision tower, aligner, FLUX, training's T5 decoder) asks here, so a mistyped
folder is reported as a missing folder, never turned into a download attempt or a deep traceback.
Whether a text is a Hub id is huggingface_hub's own check (`validate_repo_id`) plus an owner: every
repo these loaders take is `owner/name`. huggingface_hub is imported only when a download happens. The
loaders' own download entries (known models not on disk yet) are downloads.py's.
"""

from __future__ import annotations

import os
from pathlib import Path

from .files import read_json_object


def is_hub_id(text: str) -> bool:
    """Whether `text` is a well-formed `owner/name` Hub repo id."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if text.count("/") != 1:
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def local_or_hub_id(name_or_path: str | os.PathLike[str], missing: str) -> Path | str:
    """The existing local path, or the text itself when nothing exists there and it is a Hub id.

    Anything else raises FileNotFoundError with `missing`, the caller's sentence naming what it expected."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    if is_hub_id(str(name_or_path)):
        return str(name_or_path)
    raise FileNotFoundError(missing)


def check_model_source(name_or_path: str | os.PathLike[str], option: str, expected: str) -> None:
    """Refuse, naming `option`, a model that is neither an existing local path nor a Hub id (for loaders that
    take either themselves, like transformers' `from_pretrained`)."""
    local_or_hub_id(name_or_path, f"{option} {name_or_path}: no such file or folder, and not a Hugging Face Hub id "
                                  f"(owner/name). Give {expected}.")


def model_folder(name_or_path: str | os.PathLike[str], marker: str, missing: str, not_a_model: str) -> Path | str:
    """An existing folder holding `marker` (config.json, model_index.json), or a Hub id left for the caller to fetch.

    A folder without `marker` raises ValueError(`not_a_model`); no folder and no Hub id, FileNotFoundError(`missing`).
    """
    source = local_or_hub_id(name_or_path, missing)
    if isinstance(source, Path) and not (source.is_dir() and (source / marker).is_file()):
        if source.is_dir():
            raise ValueError(not_a_model)
        raise FileNotFoundError(missing)
    return source


def download_snapshot(repo_id: str, allow_patterns: list[str]) -> Path:
    """The Hub repo's files matching `allow_patterns`, downloaded (or found in the Hub cache) into one folder."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, allow_patterns=allow_patterns))


TRANSFORMERS_FILES = ["*.json", "*.safetensors", "*.jinja", "*.txt"]
"""What a transformers model folder needs from its Hub repo (configs, weights, chat template, vocabularies)."""


def transformers_folder(name_or_path: str | os.PathLike[str], hub_example: str, folder_example: str) -> Path:
    """A local transformers model folder (with config.json), or a Hub id downloaded (or found in the cache) to one."""
    source = model_folder(
        name_or_path, "config.json",
        missing=f"No model folder at {Path(name_or_path).expanduser()}, and {str(name_or_path)!r} is not a Hub id like "
                f"{hub_example!r}.",
        not_a_model=f"{Path(name_or_path).expanduser()} has no config.json, so it is not a Hugging Face model folder. "
                    f"Point at the folder that holds config.json and the *.safetensors files (e.g. {folder_example}).")
    return source if isinstance(source, Path) else download_snapshot(source, TRANSFORMERS_FILES)


def split_hub_file(spec: str) -> tuple[str, str] | None:
    """`owner/name/path/in/repo` -> (repo id, file), or None when `spec` does not read as one."""
    parts = spec.split("/", 2)
    if len(parts) < 3 or not parts[2] or spec.startswith((".", "/", "~")) or not is_hub_id("/".join(parts[:2])):
        return None
    return "/".join(parts[:2]), parts[2]


def download_file(repo_id: str, filename: str, fix: str) -> Path:
    """One file of a Hub repo, downloaded (or found in the Hub cache); an unreachable file raises
    FileNotFoundError that names it and ends with `fix`."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return Path(hf_hub_download(repo_id, filename))
    except (OSError, ValueError, EntryNotFoundError) as error:  # offline, unknown repo or file, no access
        details = str(error).splitlines()[0][:200] if str(error) else "no details"
        raise FileNotFoundError(f"Could not fetch {filename} from the Hub repo {repo_id} ({type(error).__name__}: "
                                f"{details}). {fix}") from error


def model_id_of(folder: Path) -> str:
    """A readable id for a local folder: its `_name_or_path` if it names a Hub repo, else the folder name."""
    config = read_json_object(folder / "config.json")
    name = str(config.get("_name_or_path", ""))
    return name if is_hub_id(name) else folder.name
