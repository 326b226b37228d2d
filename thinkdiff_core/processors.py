"""Image processors on their PIL backend, the one place that knows how transformers 4 and 5 spell it.

The fast (torchvision) processors need torchvision, which many installs (and the CPU wheels) lack; the
PIL ones give the reference preprocessing. transformers 5 selects them with `backend="pil"` and names
the BLIP class `BlipImageProcessorPil`; 4.x's slow processors are the PIL ones.
"""

from __future__ import annotations

import os
from typing import Any

import transformers
from transformers import AutoImageProcessor

TRANSFORMERS_MAJOR = int(transformers.__version__.split(".")[0])


def load_pil_image_processor(folder: str | os.PathLike[str], trust_remote_code: bool = False):
    """The folder's image processor (VLM, LLaVA judge, CLIP scorer) on its PIL backend."""
    backend = {"backend": "pil"} if TRANSFORMERS_MAJOR >= 5 else {"use_fast": False}
    return AutoImageProcessor.from_pretrained(folder, trust_remote_code=trust_remote_code, **backend)


def blip_pil_image_processor(settings: dict[str, Any]):
    """BLIP-2's image processor built from `settings` (no folder needed) on its PIL backend."""
    if TRANSFORMERS_MAJOR >= 5:
        from transformers import BlipImageProcessorPil as processor_class
    else:
        from transformers import BlipImageProcessor as processor_class
    return processor_class(do_convert_rgb=True, **settings)
