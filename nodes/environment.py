"""The load-time check of what ComfyUI's environment must give us (transformers is ComfyUI's, not ours).

requirements.txt deliberately does not list transformers, so installing the pack never changes it. The pack asks
only what ComfyUI itself asks; a VLM family that needs a newer release says so when it is loaded
(`thinkdiff_core.families.MINIMUM_TRANSFORMERS`), so one family's needs never keep the whole pack from loading.
"""

from __future__ import annotations

from importlib import metadata

from packaging.version import Version

MINIMUM_TRANSFORMERS = "4.50.3"
"""ComfyUI's own floor (its requirements.txt), and enough for ThinkDiff-CLIP and the aligner."""


def transformers_problem(installed: str | None) -> str | None:
    """What is wrong with the installed transformers version (None when it will do)."""
    fix = (f'run `python -m pip install "transformers>={MINIMUM_TRANSFORMERS}"` with the Python that runs ComfyUI, '
           f"then restart ComfyUI.")
    if installed is None:
        return f"ThinkDiff nodes need transformers >= {MINIMUM_TRANSFORMERS}, which is not installed: {fix}"
    if Version(installed) < Version(MINIMUM_TRANSFORMERS):
        return f"ThinkDiff nodes need transformers >= {MINIMUM_TRANSFORMERS}, but {installed} is installed: {fix}"
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
