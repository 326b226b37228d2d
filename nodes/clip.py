"""ThinkDiff-CLIP nodes: load BLIP-2's vision tower, and turn pictures into tokens for the Conditioning node."""

from __future__ import annotations

import comfy.model_management as model_management
from comfy_api.latest import io

from ..thinkdiff_core.vision import VisionEncoder
from ..thinkdiff_core.devices import DTYPES, resolve_dtype
from . import comfy_types as types
from .comfy_models import ManagedModel, list_vision_models, vision_model_path
from .operations import encode_images


class ThinkDiffVisionLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ThinkDiffVisionLoader",
            display_name="Load ThinkDiff Vision Encoder",
            category=types.LOADERS,
            description=(
                "Loads the frozen BLIP-2 vision tower (EVA ViT-g) that ThinkDiff-CLIP reads images with: from a full "
                "blip2-flan-t5-xxl folder only the vision tensors are read (the language model is never loaded), or "
                "from a vision-only .safetensors written by `python -m thinkdiff_core.convert vision`. ComfyUI's "
                "memory manager holds it: it moves to the GPU when Encode Images runs and is offloaded when another "
                "model needs the room."
            ),
            inputs=[
                io.Combo.Input("model", options=list_vision_models(), tooltip=(
                    "A BLIP-2 folder (config.json with model_type blip-2, e.g. blip2-flan-t5-xxl) or a converted "
                    "vision .safetensors under models/thinkdiff/ or models/clip_vision/ (or a path "
                    "extra_model_paths.yaml gives for 'thinkdiff' or 'clip_vision'). Aligners and other CLIP vision "
                    "models are not listed.")),
                io.Combo.Input("dtype", options=["auto", *DTYPES], default="auto", tooltip=types.DTYPE_TOOLTIP),
            ],
            outputs=[types.VISION.Output("vision", display_name="vision", tooltip=(
                "The loaded vision tower, for ThinkDiff Encode Images."))],
        )

    @classmethod
    def execute(cls, model: str, dtype: str) -> io.NodeOutput:
        encoder = VisionEncoder.from_pretrained(
            vision_model_path(model), dtype=resolve_dtype(dtype, model_management.get_torch_device()),
        )
        return io.NodeOutput(ManagedModel(encoder, encoder.model))


class ThinkDiffVisionEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        images_tooltip = ("The pictures, in order; connecting the last slot adds another. A batch counts as that many "
                          "pictures. Each adds 65 tokens to the FLUX prompt.")
        return io.Schema(
            node_id="ThinkDiffVisionEncode",
            display_name="ThinkDiff Encode Images (CLIP)",
            category=types.CONDITIONING,
            description=(
                "Turns pictures into ThinkDiff-CLIP tokens: each picture is resized to 224x224 and read by the vision "
                "tower; its class token and its 16x16 patch grid shrunk to 8x8 give 65 tokens, the pictures' tokens "
                "in order. Feed them with the CLIP aligner to ThinkDiff Conditioning in prepend mode, so FLUX sees "
                "the pictures before your prompt."
            ),
            inputs=[
                types.VISION.Input("vision", tooltip="The vision tower from Load ThinkDiff Vision Encoder."),
                io.Autogrow.Input("images", tooltip=images_tooltip, template=io.Autogrow.TemplatePrefix(
                    io.Image.Input("image", tooltip=images_tooltip), prefix="image", min=1, max=types.MAX_IMAGES)),
            ],
            outputs=[types.TOKENS.Output("tokens", display_name="tokens", tooltip=(
                "65 tokens per picture, in order, for ThinkDiff Conditioning with the CLIP aligner "
                "(thinkdiff_clip.pth)."))],
        )

    @classmethod
    def execute(cls, vision: ManagedModel[VisionEncoder], images: io.Autogrow.Type) -> io.NodeOutput:
        try:
            tokens = encode_images(vision.ready(), images)
        finally:
            model_management.soft_empty_cache()
        return io.NodeOutput(tokens.to(model_management.intermediate_device()))
