"""ThinkDiff-LVLM nodes: load a VLM, and let it reason over pictures and words."""

from __future__ import annotations

import comfy.model_management as model_management
import comfy.utils
from comfy_api.latest import io, ui

from ..thinkdiff_core import GenerationSettings, VisionLanguageModel
from ..thinkdiff_core.vlm import resolve_dtype
from . import spec
from .comfy_models import ManagedModel, list_vlm_folders, vlm_roots
from .comfy_schema import build_schema
from .model_folders import resolve_model_folder
from .operations import reason, token_callback


class ThinkDiffVLMLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return build_schema(spec.VLM_LOADER, live={spec.VLM_FOLDERS: list_vlm_folders()})

    @classmethod
    def execute(cls, model: str, dtype: str, trust_remote_code: bool) -> io.NodeOutput:
        folder = resolve_model_folder(vlm_roots(), model)
        vlm = VisionLanguageModel.from_pretrained(
            folder, dtype=resolve_dtype(dtype, model_management.get_torch_device()), trust_remote_code=trust_remote_code,
        )
        return io.NodeOutput(ManagedModel(vlm, vlm.model))


class ThinkDiffReason(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return build_schema(spec.REASON)

    @classmethod
    def execute(cls, vlm: ManagedModel[VisionLanguageModel], images: io.Autogrow.Type, words: str, preset: str,
                custom_instruction: str, seed: int, temperature: float, top_p: float, max_new_tokens: int,
                min_new_tokens: int) -> io.NodeOutput:
        settings = GenerationSettings(seed, temperature, top_p, max_new_tokens, min_new_tokens)
        progress = comfy.utils.ProgressBar(max_new_tokens)
        on_token = token_callback(model_management.throw_exception_if_processing_interrupted, progress.update_absolute)
        try:
            tokens = reason(vlm.ready(), images, words, preset, custom_instruction, settings, on_token)
        finally:
            model_management.soft_empty_cache()
        tokens = tokens.to(model_management.intermediate_device())
        return io.NodeOutput(tokens, tokens.text, ui=ui.PreviewText(tokens.text))
