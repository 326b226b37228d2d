"""Qwen2-VL / Qwen2.5-VL / Qwen3-VL: prompt rendering, generation, and generated-token feature capture.

ThinkDiff-LVLM feeds FLUX the VLM's final-norm hidden states of the tokens it *generates*, the state
that produced token i (position P-1+i for a prompt of length P). `generate(output_hidden_states=True)`
would keep every layer for the whole prompt; a forward hook on the final norm keeps exactly
`T x hidden` numbers instead, with identical values.

Inputs are prepared from the tokenizer and image processor directly rather than through
`AutoProcessor`: the Qwen-VL processors also build a video processor that needs torchvision, which
many installs (and the CPU wheels here) do not have.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoTokenizer, StoppingCriteria

from .families import FAMILIES, check_transformers
from .devices import compute_device
from .files import check_safetensors_files, read_json_object
from .hub import model_id_of, transformers_folder
from .memory import choose_precision
from .processors import load_pil_image_processor
from .precision import Precision, gib, quantize_embedding, resolve_precision, weight_bytes
from .progress import reporting_progress
from .prompts import Prompt
from .tokens import LVLM_RECIPE, ThinkDiffTokens

SUPPORTED_MODEL_TYPES = FAMILIES
IMAGE_PAD = "<|image_pad|>"
PLACEHOLDER_TOKENS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
logger = logging.getLogger(__name__)


class UnusableImage(ValueError):
    """A picture the VLM's image processor cannot take; training precompute skips and counts these."""


@dataclass(frozen=True)
class GenerationSettings:
    """Sampling settings; the defaults are the reference inference settings (paper.md).

    Frozen: one instance is the default argument of `generate` and the source of the CLIs' and nodes' defaults."""

    seed: int = 0
    temperature: float = 0.6
    top_p: float = 0.9
    max_new_tokens: int = 128
    min_new_tokens: int = 128

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(
                f"need 1 <= max_new_tokens and 0 <= min_new_tokens <= max_new_tokens; got "
                f"min_new_tokens={self.min_new_tokens}, max_new_tokens={self.max_new_tokens}."
            )
        if not math.isfinite(self.temperature) or self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1; got {self.temperature}, {self.top_p}.")


def vlm_folder(name_or_path: str | os.PathLike[str]) -> Path:
    """A local VLM folder, or a Hub id downloaded (or found in the cache) to one."""
    return transformers_folder(name_or_path, "Qwen/Qwen2-VL-7B-Instruct", "models/vlm/Qwen2-VL-7B-Instruct")


def _check_model_type(folder: Path, trust_remote_code: bool) -> str:
    config = read_json_object(folder / "config.json")
    model_type = config.get("model_type", "")
    if model_type not in SUPPORTED_MODEL_TYPES and not trust_remote_code:
        raise ValueError(
            f"{folder.name} is a {model_type or 'unknown'!r} model; supported VLMs are "
            f"{', '.join(SUPPORTED_MODEL_TYPES.values())} ({', '.join(SUPPORTED_MODEL_TYPES)})."
        )
    check_transformers(model_type)
    return model_type


def _load_chat_template(folder: Path, tokenizer) -> str:
    """The folder's chat template: the processor's file first (what Qwen ships), else the tokenizer's."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    processor_json = folder / "chat_template.json"
    if processor_json.is_file():
        return json.loads(processor_json.read_text())["chat_template"]
    if tokenizer.chat_template:
        return tokenizer.chat_template
    raise ValueError(f"{folder} has no chat template (chat_template.jinja/.json or in tokenizer_config.json).")


class _FinalNormCapture:
    """Forward hook that writes the last position of each final-norm output into a preallocated buffer.

    Prefill yields `[B, P, D]` (its last position produced generated token 0); each decode step yields
    `[B, 1, D]` (the state that produced the next token). Only `B x max_new_tokens x D` is ever held.
    """

    def __init__(self, max_new_tokens: int, keep_prompt: bool = False) -> None:
        self.max_new_tokens, self.keep_prompt = max_new_tokens, keep_prompt
        self.buffer: torch.Tensor | None = None
        self.prompt: torch.Tensor | None = None
        self.count = 0

    def __call__(self, module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        state = output[0] if isinstance(output, tuple) else output
        if self.buffer is None:
            self.buffer = state.new_empty(state.shape[0], self.max_new_tokens, state.shape[-1])
            if self.keep_prompt:
                self.prompt = state.detach().cpu()
        if self.count < self.max_new_tokens:
            self.buffer[:, self.count] = state[:, -1]
        self.count += 1


class _EachToken(StoppingCriteria):
    """Calls `on_token(done, total)` after every generated token; raising from it stops generation."""

    def __init__(self, on_token: Callable[[int, int], None], total: int) -> None:
        self.on_token, self.total, self.done = on_token, total, 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        self.done += 1
        self.on_token(self.done, self.total)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


class VisionLanguageModel:
    """A Qwen-VL model with its tokenizer, image processor and chat template."""

    def __init__(self, model: torch.nn.Module, tokenizer, image_processor, chat_template: str, model_id: str,
                 precision: Precision | None = None) -> None:
        self.model = model
        self.precision = precision or resolve_precision(model.dtype, model.device)
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"  # batched generation appends after the prompt, so pad on the left
        self.image_processor = image_processor
        self.chat_template = chat_template
        self.model_id = model_id
        self.final_norm = model.model.language_model.norm
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
        self.placeholder_ids = [tokenizer.convert_tokens_to_ids(t) for t in PLACEHOLDER_TOKENS]
        eos = model.generation_config.eos_token_id
        self.eos_token_ids = [eos] if isinstance(eos, int) else list(eos or [tokenizer.eos_token_id])
        self.pad_token_id = model.generation_config.pad_token_id
        if self.pad_token_id is None:
            self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_token_ids[0]
        self._wants_mm_token_type_ids = "mm_token_type_ids" in inspect.signature(model.forward).parameters

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike[str], dtype: str | torch.dtype | Precision = "auto",
                        device: torch.device | str | None = None, trust_remote_code: bool = False,
                        on_progress: Callable[[int, int], None] | None = None,
                        quantize_on: torch.device | str | None = None) -> "VisionLanguageModel":
        """Load from a local folder (or a Hub id), with SDPA attention, in the chosen precision.

        `dtype` is a precision (`thinkdiff_core.precision`): `bf16`, `fp16`, `fp32` or a `torch.dtype`;
        `fp8`, `int8` or `nf4` (weights stored quantized, computed in the device's half dtype); `auto` (the
        device's half dtype, or fp8 where that does not fit the card). The model stays on the CPU unless
        `device` is given: callers such as ComfyUI's model manager decide when it goes to the GPU (and
        resolve `auto` against that device themselves, passing a `Precision`). `on_progress(done, total)`
        follows transformers' weight-loading loop (transformers >= 5). `quantize_on` loads (and quantizes) a
        quantized precision's weights there, then moves them to `device` (default the CPU): bitsandbytes takes
        minutes on a CPU for what a GPU does in seconds; the GPU briefly holds the quantized weights.
        """
        folder = vlm_folder(name_or_path)
        _check_model_type(folder, trust_remote_code)
        check_safetensors_files(folder)
        target = compute_device(device)
        precision = choose_precision(dtype, folder, target, trust_remote_code)
        quantization = precision.quantization_config()
        placement = {}
        if quantization is not None:
            placement["quantization_config"] = quantization
            if quantize_on is not None:
                placement["device_map"] = {"": torch.device(quantize_on)}
        with reporting_progress(on_progress):
            model = AutoModelForImageTextToText.from_pretrained(
                folder, dtype=precision.compute, attn_implementation="sdpa", trust_remote_code=trust_remote_code,
                **placement,
            )
        model.eval().requires_grad_(False)
        quantize_embedding(model, precision)
        if device is not None or "device_map" in placement:
            model.to(target if device is not None else "cpu")
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
        image_processor = load_pil_image_processor(folder, trust_remote_code)
        model_id = str(name_or_path) if not Path(name_or_path).expanduser().is_dir() else model_id_of(folder)
        logger.info("ThinkDiff: loaded %s in %s, %s of weights", model_id, precision, gib(weight_bytes(model)))
        return cls(model, tokenizer, image_processor, _load_chat_template(folder, tokenizer), model_id, precision)

    @property
    def family(self) -> str:
        """The VLM family (its transformers `model_type`, e.g. `qwen2_vl`): tokens carry it to the aligner's guard."""
        return self.model.config.model_type

    @property
    def hidden_size(self) -> int:
        return self.final_norm.weight.shape[0]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def render(self, prompt: Prompt) -> str:
        """The prompt as text, image placeholders unexpanded (what `apply_chat_template` renders)."""
        return self.tokenizer.apply_chat_template(
            prompt.messages(), chat_template=self.chat_template, tokenize=False,
            add_generation_prompt=True, add_vision_id=prompt.vision_ids,
        )

    def prepare(self, prompts: Sequence[Prompt]) -> dict[str, torch.Tensor]:
        """Tokenised, left-padded model inputs for a batch of prompts, image placeholders expanded."""
        texts = [self.render(p) for p in prompts]
        images = [image for p in prompts for image in p.images]
        inputs: dict[str, torch.Tensor] = {}
        if images:
            vision = self._process_images(images)
            inputs.update(pixel_values=vision["pixel_values"], image_grid_thw=vision["image_grid_thw"])
            merge = self.image_processor.merge_size ** 2
            counts = iter((vision["image_grid_thw"].prod(-1) // merge).tolist())
            texts = [self._expand_images(text, len(p.images), counts) for text, p in zip(texts, prompts)]
        else:
            texts = [self._expand_images(text, 0, iter(())) for text in texts]
        tokens = self.tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)
        inputs.update(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        if self._wants_mm_token_type_ids:
            inputs["mm_token_type_ids"] = (tokens["input_ids"] == self.image_token_id).to(torch.int32)
        return inputs

    def image_problem(self, image: Image.Image) -> str | None:
        """Why the image processor refuses this picture (e.g. an aspect ratio past Qwen-VL's 200:1), or None."""
        try:
            self.image_processor(images=[image], return_tensors="pt")
        except ValueError as refused:
            width, height = image.size
            return (f"{width}x{height} pixels (aspect ratio {max(width, height) / max(min(width, height), 1):.0f}:1) "
                    f"cannot be read by {self.model_id}: {refused}. Crop or pad it closer to square")
        return None

    def _process_images(self, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        """The image processor's pixels; a picture it refuses is named (the check runs on the failure path only)."""
        try:
            return self.image_processor(images=images, return_tensors="pt")
        except ValueError as error:
            for number, image in enumerate(images, start=1):
                problem = self.image_problem(image)
                if problem:
                    raise UnusableImage(f"Picture {number}: {problem}.") from error
            raise UnusableImage(f"The images could not be prepared for {self.model_id}: {error}.") from error

    @staticmethod
    def _expand_images(text: str, expected: int, counts) -> str:
        pieces = text.split(IMAGE_PAD)
        if len(pieces) - 1 != expected:
            raise ValueError(
                f"The rendered prompt has {len(pieces) - 1} image placeholders but {expected} images were given. "
                f"Give exactly one image per image slot of the prompt (check the chat template and the images)."
            )
        expanded = pieces[0]
        for piece in pieces[1:]:
            expanded += IMAGE_PAD * next(counts) + piece
        return expanded

    @torch.no_grad()
    def generate(self, prompts: Sequence[Prompt], settings: GenerationSettings = GenerationSettings(),
                 on_token: Callable[[int, int], None] | None = None,
                 prompt_features: bool = False) -> ThinkDiffTokens:
        """Generate for each prompt; return texts, token ids and generated-token features.

        Rows that stop at EOS before the others keep `lengths[b]` real positions; later positions
        are zero. Features come back on the CPU in the model's dtype. With `prompt_features` the
        final-norm states of each prompt's own tokens (padding dropped) come back too: the paper's
        input-token ablation trains on those.
        """
        device = self.device
        inputs = {k: v.to(device) for k, v in self.prepare(prompts).items()}
        self._check_context(inputs["input_ids"].shape[1], settings.max_new_tokens)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        sampling = dict(do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=0) \
            if settings.temperature > 0 else dict(do_sample=False, temperature=None, top_p=None, top_k=None)
        stopping = [_EachToken(on_token, settings.max_new_tokens)] if on_token else []
        capture_hook = _FinalNormCapture(settings.max_new_tokens, keep_prompt=prompt_features)
        handle = self.final_norm.register_forward_hook(capture_hook)
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(settings.seed)
                sequences = self.model.generate(
                    **inputs, max_new_tokens=settings.max_new_tokens, min_new_tokens=settings.min_new_tokens,
                    repetition_penalty=1.0, suppress_tokens=self.placeholder_ids, eos_token_id=self.eos_token_ids,
                    pad_token_id=self.pad_token_id, stopping_criteria=stopping, **sampling,
                )
        finally:
            handle.remove()
        generated = sequences[:, inputs["input_ids"].shape[1]:].cpu()
        lengths = self._lengths(generated)
        texts = [self.tokenizer.decode(row[:n], skip_special_tokens=True) for row, n in zip(generated, lengths)]
        if capture_hook.count != generated.shape[1]:
            raise RuntimeError(f"captured {capture_hook.count} states for {generated.shape[1]} generated tokens")
        features = capture_hook.buffer[:, : generated.shape[1]].cpu()
        for row, n in enumerate(lengths):
            features[row, n:] = 0
            generated[row, n:] = self.pad_token_id
        prompts_states = None
        if prompt_features:
            real = inputs["attention_mask"].bool().cpu()
            prompts_states = [capture_hook.prompt[row][real[row]] for row in range(real.shape[0])]
        return ThinkDiffTokens(features, self.model_id, LVLM_RECIPE, lengths=lengths, texts=texts, token_ids=generated,
                               prompt_features=prompts_states, source_family=self.family)

    @property
    def context_length(self) -> int:
        """How many positions (prompt + generated) the language model was trained for."""
        text_config = getattr(self.model.config, "text_config", self.model.config)
        return int(text_config.max_position_embeddings)

    def _check_context(self, prompt_tokens: int, max_new_tokens: int) -> None:
        if prompt_tokens + max_new_tokens > self.context_length:
            room = self.context_length - prompt_tokens
            raise ValueError(
                f"max_new_tokens={max_new_tokens} does not fit: the prompt (with its images) takes {prompt_tokens} of "
                f"{self.model_id}'s {self.context_length} context positions, leaving {max(room, 0)}. Lower "
                f"max_new_tokens to at most {max(room, 0)} (the paper uses 128), or use fewer or smaller images."
            )

    def _lengths(self, generated: torch.Tensor) -> list[int]:
        """Per row: generated tokens up to and including the first EOS (all of them if none)."""
        is_eos = torch.isin(generated, torch.tensor(self.eos_token_ids))
        first = torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, torch.full((generated.shape[0],), generated.shape[1]))
        return first.tolist()

