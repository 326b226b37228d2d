"""ThinkDiff core library: everything the ComfyUI nodes, scripts and training share.

Imports no ComfyUI module. The public pieces:

- `Aligner`, `LoadedAligner`, `AlignerInfo`, `load_aligner`, `save_aligner`, `convert_official`
- `VisionLanguageModel`, `GenerationSettings` (Qwen-VL generation with generated-token feature capture)
- `Prompt`, `build_prompt`, `cobsat_prompt`, `compose_prompt` (prompt presets)
- `VisionEncoder` (ThinkDiff-CLIP's BLIP-2 vision tower)
- `ThinkDiffTokens` (features + provenance), `merge_conditioning` (conditioning assembly for FLUX,
  Kontext, SD3, Chroma, LTX-Video: `TARGETS`)
- `ThinkDiffPipeline` (VLM or vision tower -> aligner -> FLUX), imported on first use so that importing
  this package never imports diffusers
"""

from .quiet import drop_harmless_notices

drop_harmless_notices()  # before transformers is imported: it imports torchao, which speaks at import

from .aligner import T5_HIDDEN_SIZE, Aligner, T5RMSNorm
from .checkpoint import AlignerInfo, LoadedAligner, convert_official, load_aligner, save_aligner
from .conditioning import MODES, TARGETS, merge_conditioning
from .prompts import PRESETS, Prompt, build_prompt, cobsat_prompt, compose_prompt, parse_words
from .tokens import CLIP_RECIPE, LVLM_RECIPE, ThinkDiffTokens
from .vision import VisionEncoder
from .vlm import GenerationSettings, VisionLanguageModel

__all__ = [
    "Aligner", "AlignerInfo", "CLIP_RECIPE", "GenerationSettings", "LVLM_RECIPE", "LoadedAligner", "MODES",
    "PRESETS", "Prompt", "T5RMSNorm", "T5_HIDDEN_SIZE", "TARGETS", "ThinkDiffPipeline", "ThinkDiffTokens",
    "VisionEncoder", "VisionLanguageModel", "build_prompt", "cobsat_prompt", "compose_prompt", "convert_official",
    "load_aligner", "merge_conditioning", "parse_words", "save_aligner",
]


def __getattr__(name: str):
    """`ThinkDiffPipeline` on first use: the pipeline module imports diffusers, which the nodes and training do not need."""
    if name == "ThinkDiffPipeline":
        from .pipeline import ThinkDiffPipeline

        return ThinkDiffPipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
