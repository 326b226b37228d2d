"""ThinkDiff-CLIP nodes: load BLIP-2's vision tower, and turn pictures into tokens for the Conditioning node."""

from __future__ import annotations

import comfy.model_management as model_management
from comfy_api.latest import io

from ..thinkdiff_core.devices import DTYPES, resolve_dtype
from ..thinkdiff_core.vision import VisionEncoder
from . import comfy_types as types
from .comfy_models import VISION_MODELS, ManagedModel
from .operations import encode_images


class ThinkDiffVisionLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ThinkDiffVisionLoader",
            display_name="Load ThinkDiff Vision Encoder",
            category=types.LOADERS,
            description="Loads the frozen BLIP-2 vision tower (EVA ViT-g) ThinkDiff-CLIP reads pictures with; from a "
                        "blip2-flan-t5-xxl folder only the vision tensors are read.",
            inputs=[
                io.Combo.Input("model", options=VISION_MODELS.options(), tooltip=(
                    "A BLIP-2 folder or a converted vision .safetensors in models/thinkdiff/ or models/clip_vision/.")),
                io.Combo.Input("dtype", options=["auto", *DTYPES], default="auto", tooltip=(
                    "Weight precision; auto: bf16 on CUDA, fp16 on Apple MPS, fp32 on the CPU.")),
            ],
            outputs=[types.VISION.Output("vision", display_name="vision", tooltip="For ThinkDiff Encode Images.")],
            **types.search_aliases("blip-2 vision", "eva vit"),
        )

    @classmethod
    def execute(cls, model: str, dtype: str) -> io.NodeOutput:
        encoder = VisionEncoder.from_pretrained(
            VISION_MODELS.path(model), dtype=resolve_dtype(dtype, model_management.get_torch_device()),
        )
        return io.NodeOutput(ManagedModel(encoder, encoder.model))


class ThinkDiffVisionEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ThinkDiffVisionEncode",
            display_name="ThinkDiff Encode Images (CLIP)",
            category=types.CONDITIONING,
            description="Turns pictures into ThinkDiff-CLIP tokens (65 per picture, in order), for ThinkDiff "
                        "Conditioning with the CLIP aligner in prepend mode.",
            inputs=[
                types.VISION.Input("vision", tooltip="The vision tower from Load ThinkDiff Vision Encoder."),
                types.image_list("The pictures, in order; connecting the last slot adds another."),
            ],
            outputs=[types.TOKENS.Output("tokens", display_name="tokens", tooltip=(
                "For ThinkDiff Conditioning with the CLIP aligner (thinkdiff_clip.pth)."))],
            **types.search_aliases("image prompt", "compose images"),
        )

    @classmethod
    def execute(cls, vision: ManagedModel[VisionEncoder], images: io.Autogrow.Type) -> io.NodeOutput:
        try:
            tokens = encode_images(vision.ready(), images)
        finally:
            model_management.soft_empty_cache()
        return io.NodeOutput(tokens.to(model_management.intermediate_device()))
