"""What the ThinkDiff nodes do, without ComfyUI: the node classes add only schemas and ComfyUI's hooks.

Each function takes ComfyUI's values as they arrive in `execute` (IMAGE tensors, the Autogrow dict,
multiline text, CONDITIONING lists) and calls the library; the progress and cancel hooks are plain
callables so the nodes, the benchmark and the tests pass the same plumbing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch

from ..thinkdiff_core import (GenerationSettings, LoadedAligner, ThinkDiffTokens, VisionLanguageModel, build_prompt,
    merge_conditioning, parse_words)
from ..thinkdiff_core.images import as_pil_list, limit_pixels
from ..thinkdiff_core.memory import WorkingMemory, request_memory
from ..thinkdiff_core.vision import VisionEncoder

_TRAILING_NUMBER = re.compile(r"(\d+)$")


def ordered_images(slots: Mapping[str, torch.Tensor | None]) -> list[torch.Tensor]:
    """The connected IMAGE tensors of a growing list (`image0`, `image1`, ... `image10`) in slot order."""
    def slot_number(name: str) -> int:
        match = _TRAILING_NUMBER.search(name)
        return int(match.group(1)) if match else -1

    return [slots[name] for name in sorted(slots, key=slot_number) if slots[name] is not None]


def reason(vlm: VisionLanguageModel, images: Mapping[str, torch.Tensor | None], words: str, preset: str,
           custom_instruction: str, settings: GenerationSettings, on_token: Callable[[int, int], None] | None = None,
           max_pixels: int = 0, make_room: Callable[[WorkingMemory], None] | None = None) -> ThinkDiffTokens:
    """The Reason node: pictures from the connected slots (each shrunk to `max_pixels`, 0: the model's own limit),
    the preset's prompt, one generation. `make_room` gets the request's working-memory estimate first (the node
    refuses there or has ComfyUI load the VLM with that much room)."""
    pictures = [limit_pixels(picture, max_pixels) for picture in as_pil_list(ordered_images(images))]
    prompt = build_prompt(preset, pictures, parse_words(words), custom_instruction)
    if make_room is not None:
        make_room(request_memory(vlm, [prompt], settings.max_new_tokens))
    return vlm.generate([prompt], settings, on_token=on_token)


def encode_images(encoder: VisionEncoder, images: Mapping[str, torch.Tensor | None]) -> ThinkDiffTokens:
    """The Encode Images node: the connected slots' pictures in order (a batch counts as its pictures), one row."""
    return encoder.encode(ordered_images(images))


def condition(aligner: LoadedAligner, tokens: ThinkDiffTokens, base: list, mode: str,
              allow_other_vlm: bool = False, target: str = "auto", strength: float = 1.0,
              token_budget: int = 0) -> list:
    """The Conditioning node: aligned tokens merged into the base conditioning for `target` (sizes and VLM family
    checked by the aligner; `allow_other_vlm` lets another family's tokens through, with a warning)."""
    return merge_conditioning(base, aligner(tokens, allow_other_vlm), mode, target=target, strength=strength,
                              token_budget=token_budget)
