"""Aligner loading and the conditioning it makes: shared by every ThinkDiff token source (VLM, vision encoder)."""

from __future__ import annotations

from comfy_api.latest import io

from ..thinkdiff_core import MODES, TARGETS, LoadedAligner, ThinkDiffTokens, load_aligner
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
                "Turns ThinkDiff tokens into conditioning with the aligner, merged into a base conditioning from the "
                "model's usual T5-XXL text encoder: FLUX.1 and FLUX.1 Kontext (pooled vector, guidance and reference "
                "latents kept), SD3 / SD3.5 (the CLIP-L+G segment and pooled vector kept, only the T5 tokens are "
                "ThinkDiff's), Chroma and LTX-Video (T5 only, the attention mask extended). Models that read other "
                "4096-wide features (HunyuanVideo's Llama, Wan's umT5, Cosmos' T5) need an aligner of their own."
            ),
            inputs=[
                types.ALIGNER.Input("aligner", tooltip=(
                    "The aligner from Load ThinkDiff Aligner, trained for the tokens' source model.")),
                types.TOKENS.Input("tokens", tooltip=(
                    "Tokens from ThinkDiff Reason (LVLM) or ThinkDiff Encode Images (CLIP); the aligner must be the "
                    "one trained for them.")),
                io.Conditioning.Input("conditioning", tooltip=(
                    "Base conditioning from the model's own text encoder (FLUX: CLIPTextEncode with DualCLIPLoader type "
                    "flux, FluxGuidance, ReferenceLatent for Kontext; SD3: TripleCLIPLoader; Chroma / LTX-Video: "
                    "CLIPLoader type chroma / ltxv); what ThinkDiff does not rewrite is kept. LVLM recipe: an empty prompt. CLIP recipe: your prompt, "
                    "whose T5 tokens follow the images.")),
                io.Combo.Input("mode", options=list(MODES), default=MODES[0], tooltip=(
                    "replace: the aligned tokens are the whole prompt (the ThinkDiff-LVLM recipe). prepend: put them "
                    "before the base prompt's own T5 tokens (the ThinkDiff-CLIP recipe). append: put them after.")),
                io.Combo.Input("target", options=list(TARGETS), default="auto", tooltip=(
                    "The model the conditioning is for. auto reads it from the base: a pooled vector of width 768 is "
                    "FLUX (and Kontext), 2048 is SD3, none is Chroma / LTX-Video. A named target refuses a base from "
                    "another model's text encoder and says which one to connect.")),
                io.Float.Input("strength", default=1.0, min=0.0, max=10.0, step=0.01, tooltip=(
                    "Multiplies the aligned tokens, as Redux's multiply does: below 1.0 the prompt's own tokens weigh "
                    "more in prepend / append. 1.0 is the paper's recipe.")),
                io.Int.Input("token_budget", default=0, min=0, max=4096, tooltip=(
                    "The longest text the model should see (e.g. 128 for LTX-Video, 226 for CogVideoX-style models): "
                    "the base's masked padding is trimmed to fit, and the node refuses when the real tokens alone are "
                    "longer. 0: no budget.")),
                io.Boolean.Input("allow_other_vlm", default=False, tooltip=(
                    "Align tokens of another VLM family than the aligner was trained on (say Qwen2.5-VL tokens with "
                    "the official Qwen2-VL aligner). Off: refused, since the sizes match but the images come out "
                    "poor. On: for experiments; a warning is logged.")),
            ],
            outputs=[io.Conditioning.Output("conditioning", display_name="conditioning", tooltip=(
                "Conditioning for the target model's sampler."))],
        )

    @classmethod
    def execute(cls, aligner: ManagedModel[LoadedAligner], tokens: ThinkDiffTokens, conditioning: list,
                mode: str, target: str, strength: float, token_budget: int, allow_other_vlm: bool) -> io.NodeOutput:
        aligner.wrapped.check_tokens(tokens, allow_other_vlm)  # refuse a mismatch before moving any weights
        return io.NodeOutput(condition(aligner.ready(), tokens, conditioning, mode, allow_other_vlm, target, strength,
                                       token_budget))
