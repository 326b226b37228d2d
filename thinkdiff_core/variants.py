"""The two ThinkDiff variants, as the scripting pipeline runs them.

A variant is three choices; everything else (aligner, `merge_conditioning`, FLUX) is shared:

| | ThinkDiff-LVLM (reasoning) | ThinkDiff-CLIP (composition) |
|---|---|---|
| feature source | the VLM's generated-token features (`VisionLanguageModel.generate`) | BLIP-2's vision tower, 65 tokens per image (`VisionEncoder.encode`) |
| base conditioning | no text tokens; pooled CLIP-L of "" | FLUX's own T5 encoding of the prompt; pooled CLIP-L of the prompt |
| merge mode | `replace` | `prepend`: `[image 1, ..., image N, prompt]` |

`ReasoningSource` and `VisionSource` hold those choices. The pipeline picks one from the aligner's
metadata (`LoadedAligner.info.variant`); `check_parts` refuses a VLM or vision encoder that the
aligner cannot read before anything large is loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from .checkpoint import LoadedAligner
from .conditioning import Conditioning
from .images import ImageInput, as_pil_list
from .prompts import build_prompt
from .tokens import CLIP_RECIPE, ThinkDiffTokens
from .vision import VisionEncoder
from .vision_files import BLIP2_HUB_ID
from .vlm import GenerationSettings, VisionLanguageModel

FEATURE_SOURCES = ("generated", "input", "both")
"""What an LVLM aligner reads: the paper's generated-token states, or its ablations' prompt-token states
(then the generated ones for "both"). Training records it in the aligner's provenance (`features`)."""
REFERENCE_SIZE = 512
"""ThinkDiff-LVLM's reference image size (CoBSAT runs)."""
REFERENCE_SIZE_CLIP = 1024
"""ThinkDiff-CLIP's reference image size (`flux_height`/`flux_width` of the reference test configs)."""
REFERENCE_T5_LENGTH = 128
"""T5 length of the CLIP variant's prompt: the reference test configs set `flux_max_sequence_length: 128`
(FluxPipeline's own default is 512). FLUX has no text mask, so the padding positions count: keep 128 to
match the reference images."""
FLUX_MAX_T5_LENGTH = 512


@dataclass
class ThinkDiffRequest:
    """One image to make: the reference images, and what goes with them in each variant.

    LVLM: `words`, `preset` and `instruction` choose the VLM prompt (`build_prompt`): `cobsat_reasoning`
    takes one word per image plus the query word; `compose` takes optional labels and a final request;
    `custom` uses `instruction`; `prompt` must stay empty (FLUX sees the VLM's answer alone).
    CLIP: `prompt` is the text FLUX reads after the images (may be empty); there is no VLM, so `words`
    and `instruction` must stay empty.
    """

    images: Sequence[ImageInput]
    words: Sequence[str] = ()
    preset: str = "cobsat_reasoning"
    instruction: str = ""
    prompt: str = ""


def clip_pooled(text_encoder: torch.nn.Module, tokenizer, texts: Sequence[str], device: torch.device) -> torch.Tensor:
    """CLIP-L pooled vectors `[len(texts), hidden]` the way FLUX reads them: padded to the tokenizer's max length."""
    ids = tokenizer(list(texts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    with torch.no_grad():
        return text_encoder(ids.to(device), output_hidden_states=False).pooler_output


def t5_prompt_conditioning(flux, prompts: Sequence[str], guidance_scale: float, device: torch.device,
                           max_sequence_length: int = REFERENCE_T5_LENGTH) -> Conditioning:
    """FluxPipeline's own prompt encoding: T5 of each prompt padded to `max_sequence_length`, CLIP-L pooled."""
    with torch.no_grad():
        t5, pooled, _ = flux.encode_prompt(prompt=list(prompts), prompt_2=None, device=device,
                                           max_sequence_length=max_sequence_length)
    dtype = flux.transformer.dtype
    return [[t5.to(dtype), {"pooled_output": pooled.to(dtype), "guidance": guidance_scale}]]


class ReasoningSource:
    """ThinkDiff-LVLM: a VLM reasons over images and words; its answer's token features are the prompt.

    `base_conditioning(..., with_text=True)` is the reference's multi-image-input script (the
    pipeline's `thinkdiff+text` method): each request's prompt, encoded by FLUX's T5 (128 tokens),
    follows the aligned answer and its CLIP-L pooled vector is FLUX's; FLUX's T5 must then be loaded.
    """

    variant: ClassVar[str] = "lvlm"
    merge_mode: ClassVar[str] = "replace"
    reference_size: ClassVar[int] = REFERENCE_SIZE
    needs_t5: ClassVar[bool] = False
    """FLUX's T5-XXL (~9.5 GB in bf16) is never loaded: the aligned answer replaces the prompt."""

    def __init__(self, vlm: VisionLanguageModel, features: str = "generated") -> None:
        if features not in FEATURE_SOURCES:
            raise ValueError(f"features must be one of {FEATURE_SOURCES}, got {features!r}.")
        self.vlm, self.features = vlm, features

    @property
    def model(self) -> torch.nn.Module:
        """The module that visits the accelerator while tokens are made."""
        return self.vlm.model

    @property
    def hidden_size(self) -> int:
        return self.vlm.hidden_size

    @property
    def model_id(self) -> str:
        return self.vlm.model_id

    @staticmethod
    def check_requests(requests: Sequence[ThinkDiffRequest]) -> None:
        for request in requests:
            if request.prompt:
                raise ValueError(
                    "ThinkDiff-LVLM conditions FLUX on the VLM's answer alone, so a text prompt has no place here "
                    f"(got prompt={request.prompt!r}). Put your request in the words, or use preset='custom' with "
                    "an instruction; for images + a prompt use the ThinkDiff-CLIP aligner."
                )

    def tokens(self, requests: Sequence[ThinkDiffRequest], settings: GenerationSettings,
               on_token: Callable[[int, int], None] | None = None) -> ThinkDiffTokens:
        """The VLM's generated-token features for every request, in one batch; for an aligner trained on the
        paper's ablations (`features` input or both), the prompt tokens' states (then the generated ones)."""
        prompts = [build_prompt(r.preset, as_pil_list(r.images), list(r.words), r.instruction)
                   for r in requests]
        answer = self.vlm.generate(prompts, settings, on_token=on_token, prompt_features=self.features != "generated")
        if self.features == "generated":
            return answer
        rows = [prompt if self.features == "input" else torch.cat([prompt, generated[:length]])
                for prompt, generated, length in zip(answer.prompt_features, answer.features, answer.lengths)]
        features = answer.features.new_zeros(len(rows), max(len(row) for row in rows), answer.hidden_size)
        for index, row in enumerate(rows):
            features[index, :len(row)] = row
        return ThinkDiffTokens(features, answer.source_model_id, answer.token_recipe, lengths=[len(r) for r in rows],
                               texts=answer.texts, token_ids=answer.token_ids)

    def base_conditioning(self, flux, requests: Sequence[ThinkDiffRequest], guidance_scale: float,
                          device: torch.device, with_text: bool = False) -> Conditioning:
        """Pooled CLIP-L of the empty prompt and no text tokens (`replace` keeps only the width of `cond`;
        the nodes pass the empty prompt's T5 output there, which `replace` discards); `with_text`: the
        prompts' own encoding (`t5_prompt_conditioning`), which the aligned answer goes before."""
        if with_text:
            return t5_prompt_conditioning(flux, [r.prompt for r in requests], guidance_scale, device)
        dtype = flux.transformer.dtype
        pooled = clip_pooled(flux.text_encoder, flux.tokenizer, [""], device).to(dtype)
        cond = torch.zeros(1, 0, flux.transformer.config.joint_attention_dim, dtype=dtype, device=device)
        return [[cond, {"pooled_output": pooled, "guidance": guidance_scale}]]


class VisionSource:
    """ThinkDiff-CLIP: BLIP-2 vision tokens of each image, placed before the prompt's own T5 tokens."""

    variant: ClassVar[str] = "clip"
    merge_mode: ClassVar[str] = "prepend"
    reference_size: ClassVar[int] = REFERENCE_SIZE_CLIP
    needs_t5: ClassVar[bool] = True

    def __init__(self, encoder: VisionEncoder, max_sequence_length: int = REFERENCE_T5_LENGTH) -> None:
        if not 1 <= max_sequence_length <= FLUX_MAX_T5_LENGTH:
            raise ValueError(f"max_sequence_length must be between 1 and {FLUX_MAX_T5_LENGTH} (FLUX's T5 limit); got "
                             f"{max_sequence_length}. The reference uses {REFERENCE_T5_LENGTH}.")
        self.encoder = encoder
        self.max_sequence_length = max_sequence_length

    @property
    def model(self) -> torch.nn.Module:
        return self.encoder.model

    @property
    def hidden_size(self) -> int:
        return self.encoder.hidden_size

    @property
    def model_id(self) -> str:
        return self.encoder.model_id

    @staticmethod
    def check_requests(requests: Sequence[ThinkDiffRequest]) -> None:
        for request in requests:
            if request.words or request.instruction:
                raise ValueError(
                    "ThinkDiff-CLIP has no VLM, so words and instructions are not read (got "
                    f"words={list(request.words)}, instruction={request.instruction!r}). Write what you want in the "
                    "prompt (--prompt); for reasoning over images and words use the ThinkDiff-LVLM aligner with a VLM."
                )
        counts = [len(request.images) for request in requests]
        if len(set(counts)) > 1:
            raise ValueError(
                f"A ThinkDiff-CLIP batch needs the same number of images in every request; got {counts}. FLUX has no "
                f"text mask, so padding the shorter rows would change their images: make one call per image count."
            )

    def tokens(self, requests: Sequence[ThinkDiffRequest], settings: GenerationSettings | None = None,
               on_token: Callable[[int, int], None] | None = None) -> ThinkDiffTokens:
        """`[B, N*65, D]`: row b is `VisionEncoder.encode(request b's images)`, the images in their order.
        `settings` and `on_token` belong to the VLM and are not used."""
        rows = [self.encoder.encode(request.images) for request in requests]
        return ThinkDiffTokens(torch.cat([row.features for row in rows]), self.encoder.model_id, CLIP_RECIPE)

    def base_conditioning(self, flux, requests: Sequence[ThinkDiffRequest], guidance_scale: float,
                          device: torch.device) -> Conditioning:
        """FluxPipeline's own prompt encoding of each request's prompt (`t5_prompt_conditioning`)."""
        return t5_prompt_conditioning(flux, [r.prompt for r in requests], guidance_scale, device,
                                      self.max_sequence_length)


SOURCES: dict[str, type[ReasoningSource] | type[VisionSource]] = {"lvlm": ReasoningSource, "clip": VisionSource}


def check_parts(aligner: LoadedAligner, vlm: object | None, vision_encoder: object | None) -> None:
    """Refuse a feature model the aligner cannot read, before any large model loads, naming the fix."""
    trained_on = f"{aligner.info.token_recipe}, trained on {aligner.info.source_model_id}"
    if aligner.info.variant == "clip":
        if vlm is not None:
            raise ValueError(
                f"This is a ThinkDiff-CLIP aligner ({trained_on}): it reads BLIP-2 vision tokens, not a VLM's answer. "
                f"Pass the vision encoder (vision_encoder= / --vision-encoder: a BLIP-2 folder, a converted vision file "
                f"or '{BLIP2_HUB_ID}') instead of the VLM, or use a ThinkDiff-LVLM aligner (thinkdiff_lvlm.pth)."
            )
        if vision_encoder is None:
            raise ValueError(
                f"A ThinkDiff-CLIP aligner ({trained_on}) needs its vision encoder: pass vision_encoder= "
                f"(--vision-encoder) with a BLIP-2 folder, a vision file from `python -m thinkdiff_core.convert "
                f"vision`, or the Hub id '{BLIP2_HUB_ID}'."
            )
    elif vision_encoder is not None:
        raise ValueError(
            f"This is a ThinkDiff-LVLM aligner ({trained_on}): it reads the features of a VLM's generated answer, not "
            f"vision tokens. Drop the vision encoder (vision_encoder= / --vision-encoder) and give the VLM (vlm= / "
            f"--vlm), or use the ThinkDiff-CLIP aligner (thinkdiff_clip.pth) with the vision encoder."
        )
