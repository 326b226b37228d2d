"""Which VLM family features come from, and the guard that keeps an aligner to the family it was trained on.

Qwen2.5-VL-7B has Qwen2-VL-7B's hidden size (3584), so the official aligner's size check passes with it,
yet its final-norm states live in another space and the images come out poor without any error. Tokens
carry their VLM's id and family, an aligner records the VLM it was trained on; a different family is
refused unless the caller allows it (for experiments), a different checkpoint of the same family (a
fine-tune) only draws a warning.
"""

from __future__ import annotations

import logging
import re
from importlib import metadata

from packaging.version import Version

from .precision import MissingDependency

logger = logging.getLogger(__name__)

FAMILIES = {"qwen2_vl": "Qwen2-VL", "qwen2_5_vl": "Qwen2.5-VL", "qwen3_vl": "Qwen3-VL"}
"""transformers `model_type` -> the family's name, for every supported VLM family."""

MINIMUM_TRANSFORMERS = {"qwen2_vl": "4.57", "qwen2_5_vl": "4.57", "qwen3_vl": "4.57"}
"""The oldest transformers each family runs on here. Qwen3-VL arrived in 4.57. Qwen2-VL (4.46) and Qwen2.5-VL (4.49)
load on older releases, but under 4.56.2 a left-padded batch's features differ from single generations' (by ~1e-2),
so 4.57 is their floor too. The pack itself and ThinkDiff-CLIP need only ComfyUI's own floor (nodes/environment.py):
one family's needs never keep the rest of the pack from loading."""

_ID_PATTERNS = (("qwen3_vl", re.compile(r"qwen3[-_.]?vl")), ("qwen2_5_vl", re.compile(r"qwen2[-_.]5[-_.]?vl")),
                ("qwen2_vl", re.compile(r"qwen2[-_.]?vl")))


def family_from_id(model_id: str) -> str:
    """The family a model id names (`Qwen/Qwen2-VL-7B-Instruct` -> `qwen2_vl`), or "" when it names none."""
    name = model_id.lower()
    return next((family for family, pattern in _ID_PATTERNS if pattern.search(name)), "")


def check_transformers(family: str, installed: str | None = None) -> None:
    """Refuse a VLM family the installed transformers cannot load, naming both versions and the upgrade command."""
    wanted = MINIMUM_TRANSFORMERS.get(family)
    installed = installed or metadata.version("transformers")
    if wanted and Version(installed) < Version(wanted):
        raise MissingDependency(
            f"{FAMILIES[family]} models need transformers >= {wanted}, but {installed} is installed. Run "
            f'`python -m pip install "transformers>={wanted}"` with the Python that runs ComfyUI (or this tool), then '
            f"restart it; the other VLM families and ThinkDiff-CLIP work with the installed version."
        )


def _checkpoint(model_id: str) -> str:
    return model_id.rstrip("/").split("/")[-1].lower()


def check_family(source_id: str, source_family: str, trained_id: str, trained_family: str,
                 allow_other: bool = False) -> None:
    """Refuse features of a VLM family other than the one the aligner was trained on (unless `allow_other`:
    then warn); warn for another checkpoint of the same family. Unknown families ("") are not judged."""
    if not source_family or not trained_family:
        return
    if source_family != trained_family:
        names = f"{FAMILIES.get(source_family, source_family)} ({source_id})"
        trained = f"{FAMILIES.get(trained_family, trained_family)} ({trained_id})"
        if allow_other:
            logger.warning("ThinkDiff: aligning %s features with an aligner trained on %s (allowed): expect poor images.",
                           names, trained)
            return
        raise ValueError(
            f"These tokens come from {names} but the aligner was trained on {trained}. Another VLM family's "
            f"features live in another space even when the sizes match, so the image would be poor. Load "
            f"{trained_id} in the VLM loader, or use an aligner trained for {source_id}; to experiment anyway, "
            f"switch on allow_other_vlm on the Conditioning node (library: allow_other_vlm=True)."
        )
    if _checkpoint(source_id) != _checkpoint(trained_id):
        logger.warning("ThinkDiff: the tokens come from %s but the aligner was trained on %s (same family, %s): "
                       "fine if it is a fine-tune of it.", source_id, trained_id, FAMILIES.get(source_family, source_family))
