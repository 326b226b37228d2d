"""ThinkDiff core library: everything the ComfyUI nodes, scripts and training share.

Imports no ComfyUI module. The public pieces:

- `Aligner`, `LoadedAligner`, `AlignerInfo`, `load_aligner`, `save_aligner`, `convert_official`
- `VisionLanguageModel`, `GenerationSettings` (Qwen-VL generation with generated-token feature capture)
- `Prompt`, `build_prompt`, `cobsat_prompt`, `compose_prompt` (prompt presets)
- `ThinkDiffTokens` (features + provenance), `merge_conditioning` (conditioning assembly for FLUX,
  Kontext, SD3, Chroma, LTX-Video: `TARGETS`)
"""

from .aligner import T5_HIDDEN_SIZE, Aligner, T5RMSNorm
from .checkpoint import AlignerInfo, LoadedAligner, convert_official, load_aligner, save_aligner
from .conditioning import MODES, TARGETS, merge_conditioning
from .prompts import PRESETS, Prompt, build_prompt, cobsat_prompt, compose_prompt, parse_words
from .tokens import CLIP_RECIPE, LVLM_RECIPE, ThinkDiffTokens
from .vlm import GenerationSettings, VisionLanguageModel

__all__ = [
    "Aligner", "AlignerInfo", "CLIP_RECIPE", "GenerationSettings", "LVLM_RECIPE", "LoadedAligner", "MODES",
    "PRESETS", "Prompt", "T5RMSNorm", "T5_HIDDEN_SIZE", "TARGETS", "ThinkDiffTokens", "VisionLanguageModel", "build_prompt",
    "cobsat_prompt", "compose_prompt", "convert_official", "load_aligner", "merge_conditioning", "parse_words",
    "save_aligner",
]
