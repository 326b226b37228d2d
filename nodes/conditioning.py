"""Aligner loading and the conditioning it makes: shared by every ThinkDiff token source (VLM, vision encoder)."""

from __future__ import annotations

from comfy_api.latest import io

from ..thinkdiff_core import MODES, TARGETS, LoadedAligner, ThinkDiffTokens, load_aligner
from . import comfy_types as types
from .comfy_models import ALIGNER_FILES, ManagedModel
from .operations import condition


class ThinkDiffAlignerLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ThinkDiffAlignerLoader",
            display_name="Load ThinkDiff Aligner",
            category=types.LOADERS,
            description="Loads an aligner from models/thinkdiff/ (official .pth, read as weights only, or this "
                        "pack's .safetensors): it maps VLM or vision features into the T5-XXL prompt space.",
            inputs=[io.Combo.Input("aligner_name", options=ALIGNER_FILES.options(), tooltip=(
                "thinkdiff_lvlm.pth for ThinkDiff Reason, thinkdiff_clip.pth for Encode Images, or a .safetensors."))],
            outputs=[types.ALIGNER.Output("aligner", display_name="aligner", tooltip="For ThinkDiff Conditioning.")],
        )

    @classmethod
    def execute(cls, aligner_name: str) -> io.NodeOutput:
        aligner = load_aligner(ALIGNER_FILES.path(aligner_name))
        return io.NodeOutput(ManagedModel(aligner, aligner.module))


class ThinkDiffConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ThinkDiffConditioning",
            display_name="ThinkDiff Conditioning",
            category=types.CONDITIONING,
            description="Aligns ThinkDiff tokens and merges them into the base conditioning of a T5-XXL model: FLUX.1 "
                        "(and Kontext), SD3 / SD3.5, Chroma, LTX-Video. Models reading other 4096-wide features "
                        "(HunyuanVideo, Wan, Cosmos) need an aligner of their own.",
            inputs=[
                types.ALIGNER.Input("aligner", tooltip="The aligner trained for the tokens' source model."),
                types.TOKENS.Input("tokens", tooltip="From ThinkDiff Reason (LVLM) or Encode Images (CLIP)."),
                io.Conditioning.Input("conditioning", tooltip=(
                    "From the model's own text encoder; LVLM recipe: an empty prompt, CLIP recipe: your prompt.")),
                io.Combo.Input("mode", options=list(MODES), default=MODES[0], tooltip=(
                    "replace: the tokens are the prompt (LVLM recipe); prepend: before the prompt (CLIP recipe).")),
                io.Combo.Input("target", options=list(TARGETS), default="auto", tooltip=(
                    "The model the conditioning is for; auto reads it from the base conditioning.")),
                io.Float.Input("strength", default=1.0, min=0.0, max=10.0, step=0.01, tooltip=(
                    "Scales the aligned tokens; below 1.0 the prompt weighs more (1.0: the paper).")),
                io.Int.Input("token_budget", default=0, min=0, max=4096, **types.ADVANCED, tooltip=(
                    "The longest text the model should see (LTX-Video: 128); the base's padding is trimmed. 0: none.")),
                io.Boolean.Input("allow_other_vlm", default=False, **types.ADVANCED, tooltip=(
                    "Align another VLM family's tokens than the aligner's (experiments: poor images).")),
            ],
            outputs=[io.Conditioning.Output("conditioning", display_name="conditioning", tooltip=(
                "For the target model's sampler."))],
            **types.search_aliases("aligner", "vlm conditioning", "redux"),
        )

    @classmethod
    def execute(cls, aligner: ManagedModel[LoadedAligner], tokens: ThinkDiffTokens, conditioning: list,
                mode: str, target: str, strength: float, token_budget: int, allow_other_vlm: bool) -> io.NodeOutput:
        aligner.wrapped.check_tokens(tokens, allow_other_vlm)  # refuse a mismatch before moving any weights
        return io.NodeOutput(condition(aligner.ready(), tokens, conditioning, mode, allow_other_vlm, target, strength,
                                       token_budget))
