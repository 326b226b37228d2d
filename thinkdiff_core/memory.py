"""The working memory a VLM generation needs beyond its weights, and whether weights plus that fit a budget.

ComfyUI frees room for a model's weights but, unless told, keeps only a small margin for the computation
itself; a 7B VLM's KV cache and vision activations can be gigabytes (Comfy-Org/ComfyUI#12867 shows the
out-of-memory that follows). The estimate counts, in the compute dtype:

- the KV cache: keys and values of every layer for the prompt plus `max_new_tokens`;
- the vision tower's activations over all images' patches (one block's at a time, SDPA's fused kernels
  keep attention linear in the patch count), and the pixel input;
- the language model's prefill activations (one layer's hidden, attention and MLP states over the prompt)
  and the next-token logits (in fp32);
- the capture buffer (`[batch, max_new_tokens, hidden]`).

It is an upper estimate from the config's shapes, not a measurement; bench/vlm_precision.py --gpu compares
it with the measured peak.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .precision import QUANTIZED, Precision, WeightCensus, folder_census, gib, half_dtype, resolve_precision
from .prompts import Prompt

FIT_MARGIN = 1.05
"""The estimate is padded by this factor before comparing with a budget (allocator fragmentation)."""

TYPICAL_PROMPT_TOKENS = 1024
TYPICAL_IMAGE_PATCHES = (1024, 1024, 1024)
"""What `auto` plans for before any request is known: a CoBSAT-sized prompt with three ~0.2-megapixel images."""


@dataclass(frozen=True)
class WorkingMemory:
    """Bytes a generation needs beyond the weights, by what holds them."""

    kv_cache: int
    vision: int
    language: int
    capture: int

    @property
    def total(self) -> int:
        return self.kv_cache + self.vision + self.language + self.capture

    def __str__(self) -> str:
        return (f"{gib(self.total)} (KV cache {gib(self.kv_cache)}, vision {gib(self.vision)}, "
                f"language {gib(self.language)}, capture {gib(self.capture)})")


def generation_memory(config, *, batch: int, prompt_tokens: int, image_patches: Sequence[int], max_new_tokens: int,
                      dtype: torch.dtype) -> WorkingMemory:
    """The working memory of generating `max_new_tokens` for `batch` prompts padded to `prompt_tokens`, with
    images of `image_patches` vision patches each (before the 2x2 merge), from a Qwen-VL config's shapes."""
    text = getattr(config, "text_config", config)
    vision = config.vision_config
    size = torch.empty((), dtype=dtype).element_size()
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    positions = prompt_tokens + max_new_tokens
    kv_cache = 2 * text.num_hidden_layers * batch * kv_heads * head_dim * positions * size

    width = getattr(vision, "embed_dim", None) or vision.hidden_size
    mlp = getattr(vision, "intermediate_size", None) or int(width * getattr(vision, "mlp_ratio", 4))
    patch_values = getattr(vision, "in_channels", 3) * vision.temporal_patch_size * vision.patch_size ** 2
    patches = sum(image_patches)
    # one block's states (residual, norm, q/k/v, attention out) and its MLP, plus the pixels in fp32 and cast
    vision_bytes = patches * ((6 * width + 2 * mlp) * size + patch_values * (4 + size)) if patches else 0

    hidden, intermediate = text.hidden_size, text.intermediate_size
    # one layer's residual, norm, q/k/v/o and gated MLP over the whole prompt, and fp32 logits with a softmax copy
    attention = hidden * 3 + heads * head_dim * 2 + kv_heads * head_dim * 2
    language = batch * prompt_tokens * (attention + 3 * intermediate) * size + 3 * batch * text.vocab_size * 4
    capture = batch * max_new_tokens * hidden * size
    return WorkingMemory(kv_cache, vision_bytes, language, capture)


def typical_generation_memory(config, dtype: torch.dtype, max_new_tokens: int = 128) -> WorkingMemory:
    """The working memory `auto` plans for before a request is known (`TYPICAL_*`)."""
    return generation_memory(config, batch=1, prompt_tokens=TYPICAL_PROMPT_TOKENS, image_patches=TYPICAL_IMAGE_PATCHES,
                             max_new_tokens=max_new_tokens, dtype=dtype)


def choose_precision(name: str | torch.dtype | Precision, folder, device: torch.device, trust_remote_code: bool = False,
                     device_bytes: int | None = None) -> Precision:
    """`name` resolved for the VLM in `folder` on `device`: `auto` on a GPU weighs the folder's weights (built on the
    meta device) plus a typical generation's working memory against the card (`device_bytes`, default its total)."""
    if name != "auto" or device.type != "cuda":
        return resolve_precision(name, device)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    working = typical_generation_memory(config, half_dtype(device)).total
    return resolve_precision("auto", device, folder_census(folder, trust_remote_code), working, device_bytes)


def request_memory(vlm, prompts: Sequence[Prompt], max_new_tokens: int) -> WorkingMemory:
    """The working memory of `vlm.generate(prompts)`, from the prompts' token and patch counts (tokenising
    the text and sizing the images, without preprocessing any pixels)."""
    processor = vlm.image_processor
    merge = processor.merge_size ** 2
    lengths, patches = [], []
    for prompt in prompts:
        text = vlm.tokenizer(vlm.render(prompt), add_special_tokens=False)["input_ids"]
        sizes = [processor.get_number_of_image_patches(image.height, image.width, {}) for image in prompt.images]
        patches += sizes
        lengths.append(len(text) + sum(n // merge - 1 for n in sizes))
    return generation_memory(vlm.model.config, batch=len(prompts), prompt_tokens=max(lengths), image_patches=patches,
                             max_new_tokens=max_new_tokens, dtype=vlm.precision.compute)


def fit_error(model_bytes: int, working: WorkingMemory, budget: int, precision: Precision,
              census: WeightCensus) -> str | None:
    """None if weights plus working memory fit `budget` bytes (all else offloaded); else a message naming both
    sizes and the precisions that would fit (or what to shrink when none would)."""
    need = (model_bytes + working.total) * FIT_MARGIN
    if need <= budget:
        return None
    candidates = [Precision(name, precision.compute) for name in QUANTIZED if name != precision.weights]
    fitting = [p for p in candidates if (census.bytes(p) + working.total) * FIT_MARGIN <= budget]
    names = [p.weights for p in fitting]
    advice = (f"Load the VLM in {', '.join(names[:-1]) + ' or ' if len(names) > 1 else ''}{names[-1]} "
              f"({', '.join(f'{p.weights}: {gib(census.bytes(p))} of weights' for p in fitting)})"
              if fitting else
              "No precision fits: lower max_new_tokens, the number or size of the images (max_pixels), or run on the CPU")
    return (f"The VLM needs {gib(model_bytes)} for its {precision} weights plus {working} of working memory for this "
            f"generation, but the device has {gib(budget)} even with every other model offloaded. {advice}.")
