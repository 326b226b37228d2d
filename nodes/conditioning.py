"""Aligner loading and the conditioning it makes: shared by every ThinkDiff token source (VLM, vision encoder)."""

from __future__ import annotations

from comfy_api.latest import io

from ..thinkdiff_core import MODES, LoadedAligner, ThinkDiffTokens, load_aligner
from . import comfy_types as types
from .comfy_models import ManagedModel, aligner_path, list_aligner_files
from .operations import condition


class ThinkDiffAlignerLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ThinkDiffAlignerLoader",
            display_name="Load ThinkDiff Aligner",
            category=types.LOADERS,
            description=(
                "Loads a ThinkDiff aligner from models/thinkdiff/: the official thinkdiff_lvlm.pth or "
                "thinkdiff_clip.pth (read as weights only, never unpickled otherwise) or a .safetensors aligner "
                "written by this pack. The aligner maps the VLM's (or the vision encoder's) features into the T5 "
                "space FLUX reads its prompt from."
            ),
            inputs=[
                io.Combo.Input("aligner_name", options=list_aligner_files(), tooltip=(
                    "An aligner file under models/thinkdiff/: thinkdiff_lvlm.pth (official, for Qwen2-VL-7B-Instruct "
                    "and ThinkDiff Reason), thinkdiff_clip.pth (official, for the BLIP-2 vision tower and ThinkDiff "
                    "Encode Images) or a .safetensors aligner.")),
            ],
            outputs=[types.ALIGNER.Output("aligner", display_name="aligner", tooltip=(
                "The aligner, for the ThinkDiff Conditioning node."))],
        )

    @classmethod
    def execute(cls, aligner_name: str) -> io.NodeOutput:
        aligner = load_aligner(aligner_path(aligner_name))
        return io.NodeOutput(ManagedModel(aligner, aligner.module))


class ThinkDiffConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ThinkDiffConditioning",
            display_name="ThinkDiff Conditioning",
            category=types.CONDITIONING,
            description=(
                "Turns ThinkDiff tokens into FLUX conditioning with the aligner, merged into a base conditioning from "
                "your usual FLUX text encoder, whose pooled vector and guidance are kept."
            ),
            inputs=[
                types.ALIGNER.Input("aligner", tooltip=(
                    "The aligner from Load ThinkDiff Aligner, trained for the tokens' source model.")),
                types.TOKENS.Input("tokens", tooltip=(
                    "Tokens from ThinkDiff Reason (LVLM) or ThinkDiff Encode Images (CLIP); the aligner must be the "
                    "one trained for them.")),
                io.Conditioning.Input("conditioning", tooltip=(
                    "Base FLUX conditioning (CLIPTextEncode with a FLUX DualCLIPLoader, FluxGuidance, ...); its pooled "
                    "CLIP-L vector and guidance are kept. LVLM recipe: an empty prompt. CLIP recipe: your prompt, "
                    "whose T5 tokens follow the images.")),
                io.Combo.Input("mode", options=list(MODES), default=MODES[0], tooltip=(
                    "replace: the aligned tokens are the whole prompt (the ThinkDiff-LVLM recipe). prepend: put them "
                    "before the base prompt's own T5 tokens (the ThinkDiff-CLIP recipe). append: put them after.")),
                io.Boolean.Input("allow_other_vlm", default=False, tooltip=(
                    "Align tokens of another VLM family than the aligner was trained on (say Qwen2.5-VL tokens with "
                    "the official Qwen2-VL aligner). Off: refused, since the sizes match but the images come out "
                    "poor. On: for experiments; a warning is logged.")),
            ],
            outputs=[io.Conditioning.Output("conditioning", display_name="conditioning", tooltip=(
                "FLUX conditioning for any sampler."))],
        )

    @classmethod
    def execute(cls, aligner: ManagedModel[LoadedAligner], tokens: ThinkDiffTokens, conditioning: list,
                mode: str, allow_other_vlm: bool) -> io.NodeOutput:
        aligner.wrapped.check_tokens(tokens, allow_other_vlm)  # refuse a mismatch before moving any weights
        return io.NodeOutput(condition(aligner.ready(), tokens, conditioning, mode, allow_other_vlm))
