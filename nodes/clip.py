"""ThinkDiff-CLIP nodes: load BLIP-2's vision tower, and turn pictures into tokens for the Conditioning node."""

from __future__ import annotations

import comfy.model_management as model_management
from comfy_api.latest import io

from ..thinkdiff_core.vision import VisionEncoder
from ..thinkdiff_core.vlm import resolve_dtype
from . import spec
from .comfy_models import ManagedModel, list_vision_models, vision_model_path
from .comfy_schema import build_schema
from .operations import encode_images


class ThinkDiffVisionLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return build_schema(spec.VISION_LOADER, live={spec.VISION_MODELS: list_vision_models()})

    @classmethod
    def execute(cls, model: str, dtype: str) -> io.NodeOutput:
        encoder = VisionEncoder.from_pretrained(
            vision_model_path(model), dtype=resolve_dtype(dtype, model_management.get_torch_device()),
        )
        return io.NodeOutput(ManagedModel(encoder, encoder.model))


class ThinkDiffVisionEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return build_schema(spec.VISION_ENCODE)

    @classmethod
    def execute(cls, vision: ManagedModel[VisionEncoder], images: io.Autogrow.Type) -> io.NodeOutput:
        try:
            tokens = encode_images(vision.ready(), images)
        finally:
            model_management.soft_empty_cache()
        return io.NodeOutput(tokens.to(model_management.intermediate_device()))
