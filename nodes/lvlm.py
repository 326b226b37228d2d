"""ThinkDiff-LVLM nodes: load a VLM, and let it reason over pictures and words."""

from __future__ import annotations

import comfy.model_management as model_management
import comfy.utils
from comfy_api.latest import io, ui

from ..thinkdiff_core import PRESETS, GenerationSettings, VisionLanguageModel
from ..thinkdiff_core.memory import choose_precision
from ..thinkdiff_core.precision import PRECISIONS, folder_census
from . import comfy_types as types
from .comfy_models import ManagedVLM, device_options, device_room, list_vlm_folders, load_device, vlm_folder_path
from .operations import reason, token_callback


class ThinkDiffVLMLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ThinkDiffVLMLoader",
            display_name="Load ThinkDiff VLM",
            category=types.LOADERS,
            description=(
                "Loads a Qwen2-VL, Qwen2.5-VL or Qwen3-VL model folder (Hugging Face layout, with config.json) from "
                "models/vlm/ or models/LLM/. ComfyUI's memory manager holds it: it moves to the GPU when the Reason "
                "node runs and is offloaded when another model needs the room."
            ),
            inputs=[
                io.Combo.Input("model", options=list_vlm_folders(), tooltip=(
                    "A model folder under models/vlm/ or models/LLM/ (or a path extra_model_paths.yaml gives for "
                    "'vlm' or 'LLM'), e.g. Qwen2-VL-7B-Instruct, the VLM the official ThinkDiff-LVLM aligner was "
                    "trained on.")),
                io.Combo.Input("dtype", options=list(PRECISIONS), default="auto", display_name="precision", tooltip=(
                    "How the weights are held. bf16/fp16/fp32: plain (Qwen2-VL-7B is 16.6 GB in bf16). fp8: stored as "
                    "float8 with scales, computed in bf16: about half the bytes, near-bf16 features (needs torchao). "
                    "nf4: 4-bit, about a third (needs bitsandbytes). auto: bf16 (fp16 without bf16, fp32 on the CPU), "
                    "or fp8 where bf16 plus a generation's working memory does not fit the card; the log says which. "
                    "The vision tower and norms always stay in the compute dtype.")),
                io.Boolean.Input("trust_remote_code", default=False, tooltip=(
                    "Run Python code shipped inside the model folder. Off: only transformers' own Qwen-VL code runs. "
                    "Switch on only for a folder whose code you trust.")),
                io.Combo.Input("device", options=device_options(), default="default", tooltip=(
                    "Where the VLM runs: default is ComfyUI's device; cpu keeps it off the GPU (slow); cuda:N puts it "
                    "on another GPU than FLUX's.")),
            ],
            outputs=[types.VLM.Output("vlm", display_name="vlm", tooltip="The loaded VLM, for the ThinkDiff Reason node.")],
        )

    @classmethod
    def execute(cls, model: str, dtype: str, trust_remote_code: bool, device: str) -> io.NodeOutput:
        folder, target = vlm_folder_path(model), load_device(device)
        precision = choose_precision(dtype, folder, target, trust_remote_code, device_room(target))
        quantize_on = None
        if precision.quantized and target.type == "cuda":  # seconds on the GPU, minutes on the CPU
            model_management.free_memory(folder_census(folder, trust_remote_code).bytes(precision), target)
            quantize_on = target
        progress = comfy.utils.ProgressBar(1)
        vlm = VisionLanguageModel.from_pretrained(folder, dtype=precision, trust_remote_code=trust_remote_code,
                                                  on_progress=progress.update_absolute, quantize_on=quantize_on)
        return io.NodeOutput(ManagedVLM(vlm, vlm.model, target))


class ThinkDiffReason(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        settings = GenerationSettings()
        images_tooltip = "The pictures, in order; connecting the last slot adds another. A batch counts as that many pictures."
        return io.Schema(
            node_id="ThinkDiffReason",
            display_name="ThinkDiff Reason (VLM)",
            category=types.CONDITIONING,
            description=(
                "The VLM reads the images and words and writes its answer; the features of the tokens it writes are "
                "what the aligner turns into FLUX conditioning. With a fixed seed ComfyUI reuses the result instead "
                "of running the VLM again."
            ),
            inputs=[
                types.VLM.Input("vlm", tooltip="The VLM from Load ThinkDiff VLM."),
                io.Autogrow.Input("images", tooltip=images_tooltip, template=io.Autogrow.TemplatePrefix(
                    io.Image.Input("image", tooltip=images_tooltip), prefix="image", min=1, max=types.MAX_IMAGES)),
                io.String.Input("words", default="", multiline=True,
                                placeholder="one word per line: a word for each picture, then the word to reason about",
                                tooltip=(
                    "One per line. cobsat_reasoning: a word for each picture, then the query word (3 lines for 2 "
                    "pictures). compose/custom: nothing, a label per picture, or a label per picture plus a final "
                    "request.")),
                io.Combo.Input("preset", options=list(PRESETS), default=PRESETS[0], tooltip=(
                    "The instruction given to the VLM. cobsat_reasoning: the ThinkDiff paper's in-context reasoning "
                    "prompt (what comes next after these word/picture pairs). compose: describe one picture that "
                    "combines them. custom: your own instruction below.")),
                io.String.Input("custom_instruction", default="", multiline=True,
                                placeholder="used by the custom preset only",
                                tooltip="The instruction for the custom preset, placed before the pictures and words."),
                io.Int.Input("seed", default=settings.seed, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip=(
                    "Sampling seed. Keep it fixed to get the same text again and let ComfyUI skip the VLM on "
                    "re-runs.")),
                io.Float.Input("temperature", default=settings.temperature, min=0.0, max=2.0, step=0.05, tooltip=(
                    "Sampling temperature (the paper uses 0.6); 0 picks the most likely token every time.")),
                io.Float.Input("top_p", default=settings.top_p, min=0.01, max=1.0, step=0.01, tooltip=(
                    "Nucleus sampling: sample among the most likely tokens that make up this probability (the paper "
                    "uses 0.9).")),
                io.Int.Input("max_new_tokens", default=settings.max_new_tokens, min=1, max=4096, tooltip=(
                    "How many tokens the VLM may write; each becomes one FLUX prompt token (the paper uses 128).")),
                io.Int.Input("min_new_tokens", default=settings.min_new_tokens, min=0, max=4096, tooltip=(
                    "Tokens written before the VLM may stop. The paper uses min = max = 128, so FLUX always gets 128 "
                    "tokens.")),
                io.Int.Input("max_pixels", default=0, min=0, max=64_000_000, step=1024, tooltip=(
                    "Shrink each picture to at most this many pixels before the VLM sees it (aspect kept). 0: the "
                    "model's own limit (Qwen2-VL: about 12.8 megapixels), as in the reference. A 12-megapixel photo "
                    "costs gigabytes of working memory; 1000000 is plenty for most pictures.")),
            ],
            outputs=[
                types.TOKENS.Output("tokens", display_name="tokens", tooltip=(
                    "Features of the tokens the VLM wrote, for the ThinkDiff Conditioning node.")),
                io.String.Output("text", display_name="text", tooltip="The VLM's answer as text (also shown on this node)."),
            ],
        )

    @classmethod
    def execute(cls, vlm: ManagedVLM, images: io.Autogrow.Type, words: str, preset: str, custom_instruction: str,
                seed: int, temperature: float, top_p: float, max_new_tokens: int, min_new_tokens: int,
                max_pixels: int) -> io.NodeOutput:
        settings = GenerationSettings(seed, temperature, top_p, max_new_tokens, min_new_tokens)
        progress = comfy.utils.ProgressBar(max_new_tokens)
        on_token = token_callback(model_management.throw_exception_if_processing_interrupted, progress.update_absolute)
        try:
            tokens = reason(vlm.wrapped, images, words, preset, custom_instruction, settings, on_token, max_pixels,
                            make_room=vlm.make_room)
        finally:
            model_management.soft_empty_cache()
        tokens = tokens.to(model_management.intermediate_device())
        return io.NodeOutput(tokens, tokens.text, ui=ui.PreviewText(tokens.text))
