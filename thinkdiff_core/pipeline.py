"""ThinkDiff for scripts, both variants, on diffusers' `FluxPipeline`.

The pipeline is a composition, not a reimplementation. It runs four steps, each one the library's
shared code:

1. feature source: `ThinkDiffTokens` from the variant's model (`thinkdiff_core.variants`):
   ThinkDiff-LVLM asks a VLM (`VisionLanguageModel.generate`, batched over requests) and keeps its
   answer's token features; ThinkDiff-CLIP runs BLIP-2's vision tower over each request's images
   (`VisionEncoder.encode`);
2. aligner: `LoadedAligner(tokens)` maps them to T5-encoder space;
3. conditioning: `merge_conditioning` puts the aligned tokens into the variant's base conditioning,
   exactly as the ComfyUI nodes do: LVLM `replace`s an empty prompt (pooled CLIP-L of ""); CLIP
   `prepend`s the images to FLUX's own T5 encoding of the prompt (pooled CLIP-L of the prompt);
4. FLUX: diffusers' `FluxPipeline` samples with `prompt_embeds` / `pooled_prompt_embeds` from step 3.
   FLUX's T5-XXL is loaded for the CLIP variant only.

The variant comes from the aligner's metadata (`LoadedAligner.info.variant`): pass the CLIP aligner
with a vision encoder, or the LVLM aligner with a VLM. `ThinkDiffPipeline.flux_inputs` returns what
step 4 receives, and `__call__` passes exactly that, so a script can inspect (or a test can check)
the FLUX inputs without sampling.

Batches: FLUX has no text attention mask. The VLM's rows all have `max_new_tokens` positions under the
reference settings (min = max new tokens), so a batch conditions each image exactly as a single run
would. If rows stop early at different lengths, the shorter rows are padded with zero positions (what
`LoadedAligner` does) and FLUX attends to those zeros: batch such prompts one at a time if that matters.
A CLIP batch needs the same image count in every request (its rows are then equally long).

Methods (`method=`, ThinkDiff-LVLM; the comparisons a reproduction needs, on the same VLM answers):
`thinkdiff` (the paper), `thinkdiff+text` (the reference's multi-image-input script: each request's
`prompt` encoded by FLUX's T5, 128 tokens, after the aligned answer; pooled CLIP-L of that prompt) and
`vlm-text` (no aligner: the VLM's answer text given to FLUX as a plain prompt, FluxPipeline's own
encoding at its default 512 T5 tokens). Both text methods need FLUX's T5: `from_pretrained(load_t5=True)`.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from .checkpoint import LoadedAligner, load_aligner
from .conditioning import merge_conditioning
from .tokens import ThinkDiffTokens
from .variants import (
    REFERENCE_SIZE, REFERENCE_SIZE_CLIP, REFERENCE_T5_LENGTH, ReasoningSource, ThinkDiffRequest, VisionSource, check_parts,
    t5_prompt_conditioning,
)
from .vision import VisionEncoder
from .memory import choose_precision
from .devices import compute_device, resolve_dtype
from .hub import download_file, model_folder, split_hub_file
from .vlm import GenerationSettings, VisionLanguageModel, vlm_folder

__all__ = [
    "FLUX_DEV_ID", "OFFICIAL_CLIP_ALIGNER", "OFFICIAL_LVLM_ALIGNER", "OFFLOAD_MODES", "QWEN2_VL_ID",
    "METHODS", "REFERENCE_GUIDANCE", "REFERENCE_SIZE", "REFERENCE_SIZE_CLIP", "REFERENCE_STEPS", "REFERENCE_T5_LENGTH",
    "FluxInputs", "ThinkDiffOutput", "ThinkDiffPipeline", "ThinkDiffRequest", "resolve_aligner_file",
    "resolve_flux_folder",
]

FLUX_DEV_ID = "black-forest-labs/FLUX.1-dev"
QWEN2_VL_ID = "Qwen/Qwen2-VL-7B-Instruct"
OFFICIAL_LVLM_ALIGNER = "Mifucius/ThinkDiff/thinkdiff_lvlm.pth"
"""`<hub repo>/<file>`: the official ThinkDiff-LVLM aligner, fetched with huggingface_hub when no local file is given."""
OFFICIAL_CLIP_ALIGNER = "Mifucius/ThinkDiff/thinkdiff_clip.pth"
"""The official ThinkDiff-CLIP aligner. The file name is the one the reference test configs load
(`ckpt: .../release/thinkdiff_clip.pth`); the Hub repo's listing was not checked from here."""

REFERENCE_GUIDANCE = 3.5
REFERENCE_STEPS = 28
OFFLOAD_MODES = ("none", "model", "sequential")
METHODS = ("thinkdiff", "thinkdiff+text", "vlm-text")
PLAIN_PROMPT_T5_LENGTH = 512
"""`vlm-text`: FluxPipeline's default T5 length, what a user gets by pasting the answer into FLUX."""
FeatureSource = ReasoningSource | VisionSource


@dataclass
class FluxInputs:
    """Exactly what the pipeline hands to `FluxPipeline`."""

    prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor
    guidance_scale: float
    conditioning: list = field(repr=False, default_factory=list)
    """The merged `[[cond, extras]]` these were read from (the nodes' CONDITIONING format)."""


@dataclass
class ThinkDiffOutput:
    images: list[Image.Image]
    texts: list[str]
    """The VLM's answer per image (LVLM); empty for ThinkDiff-CLIP, which has no VLM."""
    tokens: ThinkDiffTokens
    flux_inputs: FluxInputs


def resolve_aligner_file(spec: str | os.PathLike[str]) -> Path:
    """A local aligner file, or `<hub repo>/<file>` fetched (or found in the cache) with huggingface_hub."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    hub_file = None if path.exists() else split_hub_file(str(spec))
    if hub_file is None:
        raise FileNotFoundError(
            f"No aligner file at {path}, and {str(spec)!r} is not a Hub file like '{OFFICIAL_LVLM_ALIGNER}'. "
            f"Give the path of a .pth/.safetensors aligner."
        )
    return download_file(*hub_file, fix="Download it where you have access and pass its local path.")


def resolve_flux_folder(spec: str | os.PathLike[str]) -> str:
    """A local diffusers FLUX folder (with `model_index.json`) or a Hub id (diffusers downloads it), checked
    before any loading."""
    path = Path(spec).expanduser()
    return str(model_folder(
        spec, "model_index.json",
        missing=f"No FLUX folder at {path}, and {str(spec)!r} is not a Hub id like '{FLUX_DEV_ID}'.",
        not_a_model=f"{path} has no model_index.json, so it is not a diffusers pipeline folder. Point at the FLUX "
                    f"folder that holds model_index.json, transformer/, vae/, text_encoder/ (e.g. FLUX.1-dev)."))


def _diffusers_dtype_kwarg(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """diffusers 0.42 renamed `torch_dtype` to `dtype` (the old name warns); older releases know only `torch_dtype`."""
    import diffusers
    from packaging.version import Version

    return {"dtype" if Version(diffusers.__version__) >= Version("0.42") else "torch_dtype": dtype}


def _check_offload(mode: str, device: torch.device) -> None:
    if mode not in OFFLOAD_MODES:
        raise ValueError(f"Unknown offload mode {mode!r}; choose one of {OFFLOAD_MODES}.")
    if mode != "none" and device.type == "cpu":
        raise ValueError(
            f"offload={mode!r} moves models between the CPU and an accelerator, but the device is the CPU. "
            f"Use offload='none' on a CPU-only machine, or give device='cuda'."
        )


class ThinkDiffPipeline:
    """ThinkDiff (LVLM or CLIP, chosen by the aligner) on diffusers' FLUX. Build with `from_pretrained`, call with requests."""

    def __init__(self, flux, aligner: LoadedAligner, source: FeatureSource) -> None:
        self.flux = flux
        self.aligner = aligner
        self.source = source
        self.offload = "none"
        self.allow_other_vlm = False  # True aligns another VLM family's tokens (experiments; thinkdiff_core.families)
        self._check_parts()

    @property
    def variant(self) -> str:
        return self.aligner.info.variant

    def _check_parts(self) -> None:
        """Refuse parts that cannot work together, before any compute, naming sizes and the fix."""
        source, aligner = self.source, self.aligner
        if source.variant != aligner.info.variant:
            raise ValueError(
                f"The aligner is a ThinkDiff-{aligner.info.variant.upper()} aligner ({aligner.info.token_recipe}, trained "
                f"on {aligner.info.source_model_id}) but the feature source is ThinkDiff-{source.variant.upper()}'s "
                f"({source.model_id}). Pair the CLIP aligner with a vision encoder and the LVLM aligner with a VLM."
            )
        if source.hidden_size != aligner.module.input_size:
            raise ValueError(
                f"The {source.variant.upper()} feature model {source.model_id} has hidden size {source.hidden_size} but "
                f"the aligner expects {aligner.module.input_size} (trained on {aligner.info.source_model_id}). Load the "
                f"model the aligner was trained for."
            )
        joint = self.flux.transformer.config.joint_attention_dim
        if joint != aligner.module.output_size:
            raise ValueError(
                f"The FLUX transformer reads prompt embeddings of width {joint} but the aligner writes "
                f"{aligner.module.output_size}. Use an aligner trained for this model's text encoder width."
            )
        if self.flux.text_encoder is None or self.flux.tokenizer is None:
            raise ValueError("FLUX's CLIP-L text encoder and tokenizer are needed for the pooled vector; load them.")
        if source.needs_t5:
            if self.flux.text_encoder_2 is None or self.flux.tokenizer_2 is None:
                raise ValueError("ThinkDiff-CLIP puts the images before FLUX's T5 encoding of the prompt: load FLUX with "
                                 "its text_encoder_2 and tokenizer_2 (from_pretrained does so for a CLIP aligner).")
            if self.flux.text_encoder_2.config.d_model != joint:
                raise ValueError(f"FLUX's T5 writes width {self.flux.text_encoder_2.config.d_model} but its transformer "
                                 f"reads {joint}: the FLUX folder is inconsistent.")

    @classmethod
    def from_pretrained(
        cls,
        flux: str | os.PathLike[str] = FLUX_DEV_ID,
        aligner: str | os.PathLike[str] | LoadedAligner = OFFICIAL_LVLM_ALIGNER,
        vlm: str | os.PathLike[str] | VisionLanguageModel | None = None,
        vision_encoder: str | os.PathLike[str] | VisionEncoder | None = None,
        *,
        dtype: str = "auto",
        vlm_precision: str | None = None,
        device: torch.device | str | None = None,
        offload: str = "none",
        trust_remote_code: bool = False,
        max_sequence_length: int = REFERENCE_T5_LENGTH,
        load_t5: bool = False,
    ) -> "ThinkDiffPipeline":
        """Load FLUX, the aligner and the variant's feature model from local paths or the Hub.

        The aligner decides the variant. ThinkDiff-LVLM: give `vlm` (default Qwen2-VL-7B-Instruct);
        FLUX's T5 is not loaded. ThinkDiff-CLIP: give `vision_encoder` (a BLIP-2 folder, a converted
        vision file, or `Salesforce/blip2-flan-t5-xxl`); FLUX's T5-XXL is loaded to encode the prompt,
        padded to `max_sequence_length` tokens (the reference's 128).

        `dtype` is what FLUX, the aligner and the vision tower compute in (`auto`: the device's preference);
        `vlm_precision` is the VLM's (`thinkdiff_core.precision`: also `fp8`, `int8` and `nf4`, weights quantized;
        `auto` falls back to fp8 where bf16 weights do not fit the card), by default `dtype`.

        `offload`: `none` keeps everything on `device`; `model` keeps whole models on the CPU and moves
        each to the GPU while it runs (diffusers' model CPU offload for FLUX and its text encoders; the
        VLM or vision tower is moved off before FLUX runs); `sequential` streams FLUX layer by layer
        (slowest, least GPU memory). In both offload modes the VLM visits the GPU whole while it
        generates (about 16 GB for Qwen2-VL-7B in bf16; the BLIP-2 tower about 2 GB).
        Cheap checks (paths, offload mode, aligner variant) run before any large model loads.
        `load_t5` also loads FLUX's T5-XXL for ThinkDiff-LVLM (the `thinkdiff+text` and `vlm-text` methods).
        """
        from diffusers import FluxPipeline

        target = compute_device(device)
        _check_offload(offload, target)
        torch_dtype = resolve_dtype(dtype, target)
        flux_source = resolve_flux_folder(flux)
        loaded_aligner = aligner if isinstance(aligner, LoadedAligner) else load_aligner(resolve_aligner_file(aligner))
        check_parts(loaded_aligner, vlm, vision_encoder)
        if loaded_aligner.info.variant == "clip":
            encoder = vision_encoder if isinstance(vision_encoder, VisionEncoder) else VisionEncoder.from_pretrained(
                vision_encoder, dtype=torch_dtype)
            source: FeatureSource = VisionSource(encoder, max_sequence_length)
        else:
            vlm = vlm if vlm is not None else QWEN2_VL_ID
            if not isinstance(vlm, VisionLanguageModel):
                precision = choose_precision(vlm_precision or dtype, vlm_folder(vlm), target, trust_remote_code)
                vlm = VisionLanguageModel.from_pretrained(vlm, dtype=precision, trust_remote_code=trust_remote_code)
            source = ReasoningSource(vlm, loaded_aligner.info.provenance.get("features", "generated"))
        without_t5 = {} if source.needs_t5 or load_t5 else {"text_encoder_2": None, "tokenizer_2": None}
        flux_pipeline = FluxPipeline.from_pretrained(flux_source, **without_t5, **_diffusers_dtype_kwarg(torch_dtype))
        pipeline = cls(flux_pipeline, loaded_aligner, source)
        if offload == "none":
            pipeline.to(target)
        else:
            pipeline.enable_offload(offload, target)
        return pipeline

    def to(self, device: torch.device | str) -> "ThinkDiffPipeline":
        """Put every part on `device` (no offloading)."""
        self.flux.to(device)
        self.aligner.module.to(device)
        self.source.model.to(device)
        return self

    def enable_offload(self, mode: str, device: torch.device | str) -> None:
        """diffusers' model (`model`) or sequential (`sequential`) CPU offload for FLUX (its text encoders
        included); the VLM or vision tower lives on the CPU and visits `device` only while it runs."""
        device = torch.device(device)
        _check_offload(mode, device)
        if mode == "model":
            self.flux.enable_model_cpu_offload(device=device)
        elif mode == "sequential":
            self.flux.enable_sequential_cpu_offload(device=device)
        else:
            raise ValueError("enable_offload needs 'model' or 'sequential'; use to(device) for no offloading.")
        self.offload = mode
        self.aligner.module.to(device)
        self.source.model.to("cpu")

    @property
    def device(self) -> torch.device:
        """Where inputs go and where computation happens (the GPU even while offloaded models rest on the CPU)."""
        return self.flux._execution_device

    @contextlib.contextmanager
    def _source_on_device(self) -> Iterator[FeatureSource]:
        """The feature model on the execution device for as long as it runs; with offloading, back on the CPU
        (and its GPU memory released) before FLUX runs."""
        self.source.model.to(self.device)
        try:
            yield self.source
        finally:
            if self.offload != "none":
                self.source.model.to("cpu")
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()

    # --- the four steps ---

    def check_method(self, method: str) -> None:
        """Refuse a method this pipeline cannot run, naming the fix."""
        if method not in METHODS:
            raise ValueError(f"Unknown method {method!r}; choose one of {METHODS}.")
        if method != "thinkdiff" and self.variant != "lvlm":
            raise ValueError(f"method {method!r} compares against a VLM's answer: it needs a ThinkDiff-LVLM aligner.")
        if method != "thinkdiff" and (self.flux.text_encoder_2 is None or self.flux.tokenizer_2 is None):
            raise ValueError(f"method {method!r} encodes text with FLUX's T5: build the pipeline with "
                             f"from_pretrained(..., load_t5=True).")

    def feature_tokens(self, requests: Sequence[ThinkDiffRequest], settings: GenerationSettings = GenerationSettings(),
                       on_token: Callable[[int, int], None] | None = None, method: str = "thinkdiff") -> ThinkDiffTokens:
        """Step 1, the feature source: the VLM's answer features (LVLM; `settings` and `on_token` drive its
        sampling) or the images' vision tokens (CLIP) for every request, as one batch. Only
        `thinkdiff+text` reads a request's prompt beside a VLM."""
        self.check_method(method)
        if method != "thinkdiff+text":
            self.source.check_requests(requests)
        with self._source_on_device() as source:
            return source.tokens(requests, settings, on_token)

    def flux_inputs(self, tokens: ThinkDiffTokens, requests: Sequence[ThinkDiffRequest],
                    guidance_scale: float = REFERENCE_GUIDANCE, method: str = "thinkdiff") -> FluxInputs:
        """Steps 2 and 3: `LoadedAligner(tokens)` merged by `merge_conditioning` into the variant's base
        conditioning (built from the requests' prompts for CLIP and `thinkdiff+text`) -> what FLUX
        receives; for `vlm-text`, FLUX's own encoding of the answer texts instead."""
        self.check_method(method)
        if method == "vlm-text":
            conditioning = t5_prompt_conditioning(self.flux, tokens.texts, guidance_scale, self.device,
                                                  PLAIN_PROMPT_T5_LENGTH)
        else:
            aligned = self.aligner(tokens, self.allow_other_vlm)
            if method == "thinkdiff+text":
                base = self.source.base_conditioning(self.flux, requests, guidance_scale, self.device, with_text=True)
                conditioning = merge_conditioning(base, aligned, "prepend")
            else:
                base = self.source.base_conditioning(self.flux, requests, guidance_scale, self.device)
                conditioning = merge_conditioning(base, aligned, self.source.merge_mode)
        cond, extras = conditioning[0]
        return FluxInputs(cond, extras["pooled_output"], float(extras["guidance"]), conditioning)

    def __call__(
        self,
        requests: ThinkDiffRequest | Sequence[ThinkDiffRequest],
        settings: GenerationSettings = GenerationSettings(),
        image_seeds: Sequence[int] | None = None,
        guidance_scale: float = REFERENCE_GUIDANCE,
        num_inference_steps: int = REFERENCE_STEPS,
        height: int | None = None,
        width: int | None = None,
        on_token: Callable[[int, int], None] | None = None,
        progress: bool = True,
        method: str = "thinkdiff",
    ) -> ThinkDiffOutput:
        """Make one image per request in one feature batch and one FLUX batch.

        `settings.seed` seeds the VLM's sampling; `image_seeds[i]` seeds image i's starting noise
        (default `settings.seed + i`), so an image does not depend on how many others share its batch.
        `height`/`width` default to the variant's reference size (LVLM 512, CLIP 1024). `method`: see
        the module docstring (`METHODS`).
        """
        requests = [requests] if isinstance(requests, ThinkDiffRequest) else list(requests)
        if not requests:
            raise ValueError("No requests: give at least one ThinkDiffRequest.")
        height, width = height or self.source.reference_size, width or self.source.reference_size
        if height % 16 or width % 16:
            raise ValueError(f"FLUX needs height and width in multiples of 16; got {height}x{width}. Try 512x512.")
        seeds = list(image_seeds) if image_seeds is not None else [settings.seed + i for i in range(len(requests))]
        if len(seeds) != len(requests):
            raise ValueError(f"Got {len(seeds)} image seeds for {len(requests)} requests; give one seed per request.")
        tokens = self.feature_tokens(requests, settings, on_token, method)
        inputs = self.flux_inputs(tokens, requests, guidance_scale, method)
        return ThinkDiffOutput(self.sample(inputs, seeds, num_inference_steps, height, width, progress), tokens.texts,
                               tokens, inputs)

    def sample(self, inputs: FluxInputs, image_seeds: Sequence[int], num_inference_steps: int = REFERENCE_STEPS,
               height: int | None = None, width: int | None = None, progress: bool = True) -> list[Image.Image]:
        """Step 4: FLUX on exactly `inputs`, image i from `image_seeds[i]` (several methods can share one answer)."""
        height, width = height or self.source.reference_size, width or self.source.reference_size
        self.flux.set_progress_bar_config(disable=not progress)
        return self.flux(
            prompt_embeds=inputs.prompt_embeds, pooled_prompt_embeds=inputs.pooled_prompt_embeds,
            guidance_scale=inputs.guidance_scale, num_inference_steps=num_inference_steps, height=height, width=width,
            generator=[torch.Generator("cpu").manual_seed(seed) for seed in image_seeds], output_type="pil",
        ).images
