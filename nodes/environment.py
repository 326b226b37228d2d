"""The load-time check of what ComfyUI's environment must give us (transformers is ComfyUI's, not ours).

requirements.txt deliberately does not list transformers, so installing the pack never changes it;
instead the pack refuses to load on an older one, with the command that fixes it.
"""

from __future__ import annotations

import re
from importlib import metadata

MINIMUM_TRANSFORMERS = (4, 57)
"""4.57 is the first release with Qwen3-VL and the `AutoModelForImageTextToText` loading we use."""


def _release(version: str) -> tuple[int, ...]:
    """The leading release numbers of a version string: '4.57.0.dev0' -> (4, 57, 0)."""
    match = re.match(r"\d+(?:\.\d+)*", version.strip())
    return tuple(int(part) for part in match.group(0).split(".")) if match else ()


def transformers_problem(installed: str | None) -> str | None:
    """What is wrong with the installed transformers version (None when it will do)."""
    wanted = ".".join(map(str, MINIMUM_TRANSFORMERS))
    fix = f'run `python -m pip install "transformers>={wanted}"` with the Python that runs ComfyUI, then restart ComfyUI.'
    if installed is None:
        return f"ThinkDiff nodes need transformers >= {wanted}, which is not installed: {fix}"
    if _release(installed)[:2] < MINIMUM_TRANSFORMERS:
        return f"ThinkDiff nodes need transformers >= {wanted}, but {installed} is installed: {fix}"
    return None


def require_transformers() -> None:
    """Raise ImportError (ComfyUI logs it as this pack's import failure) if transformers is too old."""
    try:
        installed = metadata.version("transformers")
    except metadata.PackageNotFoundError:
        installed = None
    problem = transformers_problem(installed)
    if problem:
        raise ImportError(problem)
