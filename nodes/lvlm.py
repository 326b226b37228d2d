"""ThinkDiff-LVLM nodes: load a VLM, and let it reason over pictures and words."""

from __future__ import annotations

import comfy.model_management as model_management
import comfy.utils
from comfy_api.latest import io, ui

from ..thinkdiff_core import PRESETS, GenerationSettings, VisionLanguageModel
from ..thinkdiff_core.memory import choose_precision
from ..thinkdiff_core.precision import PRECISIONS, folder_census
from ..thinkdiff_core.progress import cancellable
from . import comfy_types as types
from .comfy_models import VLM_FOLDERS, ManagedVLM, device_options, device_room, load_device
from .operations import reason


class ThinkDiffVLMLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ThinkDiffVLMLoader",
            display_name="Load ThinkDiff VLM",
            category=types.LOADERS,
            description="Loads a Qwen2-VL, Qwen2.5-VL or Qwen3-VL folder from models/vlm/ or models/LLM/; ComfyUI's "
                        "memory manager moves it to the GPU when Reason runs and offloads it for other models.",
            inputs=[
                io.Combo.Input("model", options=VLM_FOLDERS.options(), tooltip=(
                    "A Hugging Face model folder; the official aligner was trained on Qwen2-VL-7B-Instruct.")),
                io.Combo.Input("dtype", options=list(PRECISIONS), default="auto", display_name="precision", tooltip=(
                    "Weight precision: fp8 and int8 take about half of bf16's memory (int8 the closest to bf16), "
                    "nf4 about a third; auto picks what fits the card.")),
                io.Boolean.Input("trust_remote_code", default=False, **types.ADVANCED, tooltip=(
                    "Run Python code shipped inside the model folder; only for a folder you trust.")),
                io.Combo.Input("device", options=device_options(), default="default", **types.ADVANCED, tooltip=(
                    "default: ComfyUI's device; cpu keeps the VLM off the GPU; cuda:N puts it on another GPU.")),
            ],
            outputs=[types.VLM.Output("vlm", display_name="vlm", tooltip="The VLM, for ThinkDiff Reason.")],
            **types.search_aliases("qwen vl loader", "vision language model"),
        )

    @classmethod
    def execute(cls, model: str, dtype: str, trust_remote_code: bool, device: str) -> io.NodeOutput:
        folder, target = VLM_FOLDERS.path(model), load_device(device)
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
        return io.Schema(
            node_id="ThinkDiffReason",
            display_name="ThinkDiff Reason (VLM)",
            category=types.CONDITIONING,
            description="The VLM reads the pictures and words and writes its answer; the features of the tokens it "
                        "writes are what the aligner turns into conditioning.",
            inputs=[
                types.VLM.Input("vlm", tooltip="The VLM from Load ThinkDiff VLM."),
                types.image_list("The pictures, in order; connecting the last slot adds another."),
                io.String.Input("words", default="", multiline=True, tooltip="One per line; see the node's help.",
                                placeholder="one word per line: a word for each picture, then the word to reason about"),
                io.Combo.Input("preset", options=list(PRESETS), default=PRESETS[0], tooltip=(
                    "The instruction: the paper's reasoning prompt, compose, or your own (custom).")),
                io.String.Input("custom_instruction", default="", multiline=True, tooltip="For the custom preset.",
                                placeholder="used by the custom preset only"),
                io.Int.Input("seed", default=settings.seed, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Fixed, ComfyUI reuses the answer instead of running the VLM again."),
                io.Float.Input("temperature", default=settings.temperature, min=0.0, max=2.0, step=0.05,
                               tooltip="Sampling temperature (the paper: 0.6); 0 is greedy."),
                io.Float.Input("top_p", default=settings.top_p, min=0.01, max=1.0, step=0.01, **types.ADVANCED,
                               tooltip="Nucleus sampling (the paper: 0.9)."),
                io.Int.Input("max_new_tokens", default=settings.max_new_tokens, min=1, max=4096,
                             tooltip="Tokens the VLM may write, each one prompt token (the paper: 128)."),
                io.Int.Input("min_new_tokens", default=settings.min_new_tokens, min=0, max=4096, **types.ADVANCED,
                             tooltip="Tokens written before the VLM may stop (the paper: 128)."),
                io.Int.Input("max_pixels", default=0, min=0, max=64_000_000, step=1024, **types.ADVANCED,
                             tooltip="Shrink each picture to at most this many pixels (0: the model's own limit)."),
            ],
            outputs=[
                types.TOKENS.Output("tokens", display_name="tokens", tooltip="For ThinkDiff Conditioning."),
                io.String.Output("text", display_name="text", tooltip="The VLM's answer (also shown on the node)."),
            ],
            **types.search_aliases("reasoning", "vlm prompt", "qwen"),
        )

    @classmethod
    def execute(cls, vlm: ManagedVLM, images: io.Autogrow.Type, words: str, preset: str, custom_instruction: str,
                seed: int, temperature: float, top_p: float, max_new_tokens: int, min_new_tokens: int,
                max_pixels: int) -> io.NodeOutput:
        settings = GenerationSettings(seed, temperature, top_p, max_new_tokens, min_new_tokens)
        progress = comfy.utils.ProgressBar(max_new_tokens)
        on_token = cancellable(model_management.throw_exception_if_processing_interrupted, progress.update_absolute)
        try:
            tokens = reason(vlm.wrapped, images, words, preset, custom_instruction, settings, on_token, max_pixels,
                            make_room=vlm.make_room)
        finally:
            model_management.soft_empty_cache()
        tokens = tokens.to(model_management.intermediate_device())
        return io.NodeOutput(tokens, tokens.text, ui=ui.PreviewText(tokens.text))
