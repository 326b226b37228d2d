"""The socket types only ThinkDiff nodes produce and read, and what the node schemas share."""

from __future__ import annotations

from comfy_api.latest import io

VLM = io.Custom("THINKDIFF_VLM")
VISION = io.Custom("THINKDIFF_VISION")
ALIGNER = io.Custom("THINKDIFF_ALIGNER")
TOKENS = io.Custom("THINKDIFF_TOKENS")

LOADERS = "loaders/thinkdiff"
CONDITIONING = "conditioning/thinkdiff"

MAX_IMAGES = 16
"""Slots of the growing image lists (Reason, Encode Images)."""

DTYPE_TOOLTIP = (
    "Weight precision. auto: bf16 on CUDA (what the reference ran; fp16 if the GPU lacks bf16), fp16 on Apple MPS, "
    "fp32 on the CPU.")
"""Both loaders' `dtype` choice, resolved by `thinkdiff_core.devices.resolve_dtype`."""
