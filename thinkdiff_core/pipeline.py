"""ThinkDiff for scripts: images + words -> VLM reasoning -> aligner -> FLUX, on diffusers' `FluxPipeline`.

The pipeline is a composition, not a reimplementation. It runs four steps, each one the library's
shared code:

1. feature source: the VLM answers the prompt and its generated-token features come back as
   `ThinkDiffTokens` (`VisionLanguageModel.generate`, batched over prompts);
2. aligner: `LoadedAligner(tokens)` maps them to T5-encoder space;
3. conditioning: `merge_conditioning` puts the aligned tokens into a base conditioning that carries
   the pooled CLIP-L vector and the guidance, exactly as the ComfyUI nodes do;
4. FLUX: diffusers' `FluxPipeline` samples with `prompt_embeds` / `pooled_prompt_embeds` from step 3
   (its T5 is never loaded: ThinkDiff-LVLM has no T5 text at all).

`ThinkDiffPipeline.flux_inputs` returns what step 4 receives, and `__call__` passes exactly that, so
a script can inspect (or a test can check) the FLUX inputs without sampling.

Only the LVLM (reasoning) variant is wired. The CLIP (composition) variant fits the same frame: its
feature source is the BLIP-2 vision encoder (`thinkdiff_core.vision`, not in this branch yet), its base
conditioning is the T5 encoding of the prompt with the pooled CLIP-L vector of that prompt, and its
merge mode is `prepend`; `_feature_tokens` and `_base_conditioning` are the two places it plugs in.

Batches: FLUX has no text attention mask. The VLM's rows all have `max_new_tokens` positions under the
reference settings (min = max new tokens), so a batch conditions each image exactly as a single run
would. If rows stop early at different lengths, the shorter rows are padded with zero positions (what
`LoadedAligner` does) and FLUX attends to those zeros: batch such prompts one at a time if that matters.
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from .checkpoint import LoadedAligner, load_aligner
from .conditioning import merge_conditioning
from .images import as_pil
from .prompts import build_prompt
from .tokens import ThinkDiffTokens
from .vlm import DTYPES, HUB_ID, GenerationSettings, VisionLanguageModel, resolve_dtype

FLUX_DEV_ID = "black-forest-labs/FLUX.1-dev"
QWEN2_VL_ID = "Qwen/Qwen2-VL-7B-Instruct"
OFFICIAL_LVLM_ALIGNER = "Mifucius/ThinkDiff/thinkdiff_lvlm.pth"
"""`<hub repo>/<file>`: the official ThinkDiff-LVLM aligner, fetched with huggingface_hub when no local file is given."""

REFERENCE_GUIDANCE = 3.5
REFERENCE_STEPS = 28
REFERENCE_SIZE = 512
OFFLOAD_MODES = ("none", "model", "sequential")
HUB_FILE = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)/(?P<file>[\w./-]+)$")
ImageInput = Image.Image | torch.Tensor | str | os.PathLike


@dataclass
class ThinkDiffRequest:
    """One image to make: the reference images and words, and how the VLM is asked.

    `preset` and `instruction` choose the VLM prompt (`build_prompt`): `cobsat_reasoning` takes one word
    per image plus the query word; `compose` takes optional labels and a final request; `custom` uses
    `instruction`. `prompt` is the text prompt of the CLIP variant and must stay empty for the LVLM
    variant, whose FLUX conditioning is the VLM's answer alone.
    """

    images: Sequence[ImageInput]
    words: Sequence[str] = ()
    preset: str = "cobsat_reasoning"
    instruction: str = ""
    prompt: str = ""


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
    tokens: ThinkDiffTokens
    flux_inputs: FluxInputs


def clip_pooled(text_encoder: torch.nn.Module, tokenizer, texts: Sequence[str], device: torch.device) -> torch.Tensor:
    """CLIP-L pooled vectors `[len(texts), hidden]` the way FLUX reads them: padded to the tokenizer's max length."""
    ids = tokenizer(list(texts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    with torch.no_grad():
        return text_encoder(ids.to(device), output_hidden_states=False).pooler_output


def resolve_aligner_file(spec: str | os.PathLike[str]) -> Path:
    """A local aligner file, or `<hub repo>/<file>` fetched (or found in the cache) with huggingface_hub."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    match = HUB_FILE.match(str(spec))
    if path.exists() or match is None or str(spec).startswith((".", "/", "~")):
        raise FileNotFoundError(
            f"No aligner file at {path}, and {str(spec)!r} is not a Hub file like '{OFFICIAL_LVLM_ALIGNER}'. "
            f"Give the path of a .pth/.safetensors aligner."
        )
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(match["repo"], match["file"]))
    except (OSError, ValueError) as error:  # offline, unknown repo or file, no access
        raise FileNotFoundError(
            f"Could not fetch {match['file']} from the Hub repo {match['repo']} ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200]}). Download it where you have access and pass its local path."
        ) from error


def resolve_flux_folder(spec: str | os.PathLike[str]) -> str:
    """A local diffusers FLUX folder (with `model_index.json`) or a Hub id, checked before any loading."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ValueError(
                f"{path} has no model_index.json, so it is not a diffusers pipeline folder. Point at the FLUX "
                f"folder that holds model_index.json, transformer/, vae/, text_encoder/ (e.g. FLUX.1-dev)."
            )
        return str(path)
    if path.exists() or not HUB_ID.match(str(spec)):
        raise FileNotFoundError(f"No FLUX folder at {path}, and {str(spec)!r} is not a Hub id like '{FLUX_DEV_ID}'.")
    return str(spec)


def _diffusers_dtype_kwarg(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """diffusers 0.42 renamed `torch_dtype` to `dtype` (the old name warns); older releases know only `torch_dtype`."""
    import diffusers
    from packaging.version import Version

    return {"dtype" if Version(diffusers.__version__) >= Version("0.42") else "torch_dtype": dtype}


def _check_variant(aligner: LoadedAligner) -> None:
    if aligner.info.variant != "lvlm":
        raise NotImplementedError(
            f"This aligner is a ThinkDiff-{aligner.info.variant.upper()} aligner; the scripting pipeline runs the "
            f"LVLM variant only so far. Use thinkdiff_lvlm.pth (or an aligner trained on a VLM's generated tokens)."
        )


def _check_offload(mode: str, device: torch.device) -> None:
    if mode not in OFFLOAD_MODES:
        raise ValueError(f"Unknown offload mode {mode!r}; choose one of {OFFLOAD_MODES}.")
    if mode != "none" and device.type == "cpu":
        raise ValueError(
            f"offload={mode!r} moves models between the CPU and an accelerator, but the device is the CPU. "
            f"Use offload='none' on a CPU-only machine, or give device='cuda'."
        )


class ThinkDiffPipeline:
    """ThinkDiff-LVLM on diffusers' FLUX. Build with `from_pretrained`, call with requests."""

    def __init__(self, flux, aligner: LoadedAligner, vlm: VisionLanguageModel | None) -> None:
        self.flux = flux
        self.aligner = aligner
        self.vlm = vlm
        self.offload = "none"
        self._check_parts()

    @property
    def variant(self) -> str:
        return self.aligner.info.variant

    def _check_parts(self) -> None:
        """Refuse parts that cannot work together, before any compute, naming sizes and the fix."""
        _check_variant(self.aligner)
        if self.vlm is None:
            raise ValueError("The LVLM variant needs its VLM: pass vlm=VisionLanguageModel.from_pretrained(...).")
        if self.vlm.hidden_size != self.aligner.module.input_size:
            raise ValueError(
                f"The VLM {self.vlm.model_id} has hidden size {self.vlm.hidden_size} but the aligner expects "
                f"{self.aligner.module.input_size} (trained on {self.aligner.info.source_model_id}). Load the VLM "
                f"the aligner was trained for."
            )
        joint = self.flux.transformer.config.joint_attention_dim
        if joint != self.aligner.module.output_size:
            raise ValueError(
                f"The FLUX transformer reads prompt embeddings of width {joint} but the aligner writes "
                f"{self.aligner.module.output_size}. Use an aligner trained for this model's text encoder width."
            )
        if self.flux.text_encoder is None or self.flux.tokenizer is None:
            raise ValueError("FLUX's CLIP-L text encoder and tokenizer are needed for the pooled vector; load them.")

    @classmethod
    def from_pretrained(
        cls,
        flux: str | os.PathLike[str] = FLUX_DEV_ID,
        aligner: str | os.PathLike[str] | LoadedAligner = OFFICIAL_LVLM_ALIGNER,
        vlm: str | os.PathLike[str] | VisionLanguageModel = QWEN2_VL_ID,
        dtype: str = "auto",
        device: torch.device | str | None = None,
        offload: str = "none",
        trust_remote_code: bool = False,
    ) -> "ThinkDiffPipeline":
        """Load FLUX (without its T5), the aligner and the VLM from local paths or the Hub.

        `offload`: `none` keeps everything on `device`; `model` keeps whole models on the CPU and moves
        each to the GPU while it runs (diffusers' model CPU offload; the VLM is moved off before FLUX
        runs); `sequential` streams FLUX layer by layer (slowest, least GPU memory). In both offload
        modes the VLM visits the GPU whole while it generates (about 16 GB for Qwen2-VL-7B in bf16).
        Cheap checks (paths, offload mode, aligner variant) run before any large model loads.
        """
        from diffusers import FluxPipeline

        target = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        _check_offload(offload, target)
        torch_dtype = resolve_dtype(dtype, target)
        flux_source = resolve_flux_folder(flux)
        loaded_aligner = aligner if isinstance(aligner, LoadedAligner) else load_aligner(resolve_aligner_file(aligner))
        _check_variant(loaded_aligner)
        dtype_name = {value: name for name, value in DTYPES.items()}[torch_dtype]
        loaded_vlm = vlm if isinstance(vlm, VisionLanguageModel) else VisionLanguageModel.from_pretrained(
            vlm, dtype=dtype_name, trust_remote_code=trust_remote_code)
        flux_pipeline = FluxPipeline.from_pretrained(
            flux_source, text_encoder_2=None, tokenizer_2=None, **_diffusers_dtype_kwarg(torch_dtype))
        pipeline = cls(flux_pipeline, loaded_aligner, loaded_vlm)
        if offload == "none":
            pipeline.to(target)
        else:
            pipeline.enable_offload(offload, target)
        return pipeline

    def to(self, device: torch.device | str) -> "ThinkDiffPipeline":
        """Put every part on `device` (no offloading)."""
        self.flux.to(device)
        self.aligner.module.to(device)
        if self.vlm is not None:
            self.vlm.model.to(device)
        return self

    def enable_offload(self, mode: str, device: torch.device | str) -> None:
        """diffusers' model (`model`) or sequential (`sequential`) CPU offload for FLUX; the VLM lives on the
        CPU and visits `device` only while it generates."""
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
        if self.vlm is not None:
            self.vlm.model.to("cpu")

    @property
    def device(self) -> torch.device:
        """Where inputs go and where computation happens (the GPU even while offloaded models rest on the CPU)."""
        return self.flux._execution_device

    @contextlib.contextmanager
    def _vlm_on_device(self) -> Iterator[VisionLanguageModel]:
        """The VLM on the execution device for as long as it generates; with offloading, back on the CPU
        (and its GPU memory released) before FLUX runs."""
        self.vlm.model.to(self.device)
        try:
            yield self.vlm
        finally:
            if self.offload != "none":
                self.vlm.model.to("cpu")
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()

    # --- the four steps ---

    def feature_tokens(self, requests: Sequence[ThinkDiffRequest], settings: GenerationSettings,
                       on_token: Callable[[int, int], None] | None = None) -> ThinkDiffTokens:
        """Step 1, the feature source: the VLM's generated-token features for every request (one batch)."""
        for request in requests:
            if request.prompt:
                raise ValueError(
                    "ThinkDiff-LVLM conditions FLUX on the VLM's answer alone, so a text prompt has no place here "
                    f"(got prompt={request.prompt!r}). Put your request in the words, or use preset='custom' with "
                    "an instruction."
                )
        prompts = [build_prompt(r.preset, [as_pil(image) for image in r.images], list(r.words), r.instruction)
                   for r in requests]
        with self._vlm_on_device() as vlm:
            return vlm.generate(prompts, settings, on_token=on_token)

    def _base_conditioning(self, requests: Sequence[ThinkDiffRequest], guidance_scale: float) -> list:
        """The base CONDITIONING the aligned tokens are merged into: pooled CLIP-L of the empty prompt.

        Its `cond` is empty: in `replace` mode only its width, dtype and device matter (the nodes pass the
        empty prompt's T5 output there, which `replace` discards). The requests are where the CLIP variant
        will read its prompts (T5 tokens and pooled CLIP-L of each prompt); the LVLM variant needs none.
        """
        dtype = self.flux.transformer.dtype
        pooled = clip_pooled(self.flux.text_encoder, self.flux.tokenizer, [""], self.device).to(dtype)
        cond = torch.zeros(1, 0, self.flux.transformer.config.joint_attention_dim, dtype=dtype, device=self.device)
        return [[cond, {"pooled_output": pooled, "guidance": guidance_scale}]]

    def flux_inputs(self, tokens: ThinkDiffTokens, requests: Sequence[ThinkDiffRequest],
                    guidance_scale: float = REFERENCE_GUIDANCE) -> FluxInputs:
        """Steps 2 and 3: `LoadedAligner(tokens)` merged by `merge_conditioning` -> what FLUX receives."""
        aligned = self.aligner(tokens)
        conditioning = merge_conditioning(self._base_conditioning(requests, guidance_scale), aligned, "replace")
        cond, extras = conditioning[0]
        return FluxInputs(cond, extras["pooled_output"], float(extras["guidance"]), conditioning)

    def __call__(
        self,
        requests: ThinkDiffRequest | Sequence[ThinkDiffRequest],
        settings: GenerationSettings = GenerationSettings(),
        image_seeds: Sequence[int] | None = None,
        guidance_scale: float = REFERENCE_GUIDANCE,
        num_inference_steps: int = REFERENCE_STEPS,
        height: int = REFERENCE_SIZE,
        width: int = REFERENCE_SIZE,
        on_token: Callable[[int, int], None] | None = None,
        progress: bool = True,
    ) -> ThinkDiffOutput:
        """Make one image per request in one VLM batch and one FLUX batch.

        `settings.seed` seeds the VLM's sampling; `image_seeds[i]` seeds image i's starting noise
        (default `settings.seed + i`), so an image does not depend on how many others share its batch.
        """
        requests = [requests] if isinstance(requests, ThinkDiffRequest) else list(requests)
        if not requests:
            raise ValueError("No requests: give at least one ThinkDiffRequest.")
        if height % 16 or width % 16:
            raise ValueError(f"FLUX needs height and width in multiples of 16; got {height}x{width}. Try 512x512.")
        seeds = list(image_seeds) if image_seeds is not None else [settings.seed + i for i in range(len(requests))]
        if len(seeds) != len(requests):
            raise ValueError(f"Got {len(seeds)} image seeds for {len(requests)} requests; give one seed per request.")
        tokens = self.feature_tokens(requests, settings, on_token)
        inputs = self.flux_inputs(tokens, requests, guidance_scale)
        self.flux.set_progress_bar_config(disable=not progress)
        images = self.flux(
            prompt_embeds=inputs.prompt_embeds, pooled_prompt_embeds=inputs.pooled_prompt_embeds,
            guidance_scale=inputs.guidance_scale, num_inference_steps=num_inference_steps, height=height, width=width,
            generator=[torch.Generator("cpu").manual_seed(seed) for seed in seeds], output_type="pil",
        ).images
        return ThinkDiffOutput(images, tokens.texts, tokens, inputs)

