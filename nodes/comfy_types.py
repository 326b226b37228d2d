"""The socket types only ThinkDiff nodes produce and read, and what the node schemas share."""

from __future__ import annotations

import dataclasses
import inspect

from comfy_api.latest import io

VLM = io.Custom("THINKDIFF_VLM")
VISION = io.Custom("THINKDIFF_VISION")
ALIGNER = io.Custom("THINKDIFF_ALIGNER")
TOKENS = io.Custom("THINKDIFF_TOKENS")

LOADERS = "loaders/thinkdiff"
CONDITIONING = "conditioning/thinkdiff"

MAX_IMAGES = 16
"""Slots of the growing image lists (Reason, Encode Images)."""

ADVANCED = {"advanced": True} if "advanced" in inspect.signature(io.Input.__init__).parameters else {}
"""Folds an input most users never touch away, on ComfyUI releases that can (0.8.0 cannot: there it is nothing)."""


def search_aliases(*aliases: str) -> dict[str, list[str]]:
    """Other words the node search finds a node by, on ComfyUI releases whose schema takes them (0.8.0's does not)."""
    fields = {field.name for field in dataclasses.fields(io.Schema)}
    return {"search_aliases": list(aliases)} if "search_aliases" in fields else {}


def image_list(tooltip: str) -> io.Autogrow.Input:
    """The growing list of pictures the Reason and Encode Images nodes read, in slot order."""
    return io.Autogrow.Input("images", tooltip=tooltip, template=io.Autogrow.TemplatePrefix(
        io.Image.Input("image", tooltip=tooltip), prefix="image", min=1, max=MAX_IMAGES))
