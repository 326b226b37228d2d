"""Prompts for the VLM: an interleaved sequence of texts and images opened by an instruction.

The CoBSAT reasoning preset reproduces the reference prompt exactly (paper.md): the instruction,
then "Word i: <label>, " before image i (from the second shot on prefixed by a blank line), then the
query "\n\nWord N+1: <label>, ". Rendered with the Qwen chat template and `add_vision_id=True`, the
images appear as "Picture i: <|vision_start|>...".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from PIL import Image

SYSTEM_PROMPT = "You are a helpful assistant."

COBSAT_INSTRUCTION = (
    "I give you several words and pictures. First, please analyse what the next picture is. Then give me a "
    "detailed diffusion prompt to describe the next picture. Please only provide me the detailed prompt and "
    "start the answer with 'Create an image'.\n\n"
)

COMPOSE_INSTRUCTION = (
    "I give you several pictures and words. Please give me a detailed diffusion prompt to describe one new "
    "picture that combines the pictures as the words ask. Please only provide me the detailed prompt and start "
    "the answer with 'Create an image'.\n\n"
)

PRESETS = ("cobsat_reasoning", "compose", "custom")

Segment = Union[str, Image.Image]


@dataclass
class Prompt:
    """Texts and images in the order the VLM reads them, after a system prompt."""

    segments: list[Segment]
    system: str = SYSTEM_PROMPT
    vision_ids: bool = True
    """Label images "Picture i:" (Qwen's `add_vision_id`): the CoBSAT reference prompt does; the reference
    training-data precompute (one image, one brief instruction) does not."""

    @property
    def images(self) -> list[Image.Image]:
        return [s for s in self.segments if isinstance(s, Image.Image)]

    def messages(self) -> list[dict]:
        """Chat messages in the transformers multimodal format (images as placeholders)."""
        content = [{"type": "image"} if isinstance(s, Image.Image) else {"type": "text", "text": s} for s in self.segments]
        return [{"role": "system", "content": self.system}, {"role": "user", "content": content}]


def cobsat_prompt(images: list[Image.Image], words: list[str], instruction: str = COBSAT_INSTRUCTION) -> Prompt:
    """The reference in-context reasoning prompt: one word per image, then the word to reason about."""
    if not images:
        raise ValueError("The CoBSAT reasoning prompt needs at least one image with its word.")
    if len(words) != len(images) + 1:
        raise ValueError(
            f"The CoBSAT reasoning prompt needs one word per image plus the word to reason about: "
            f"{len(images) + 1} words for {len(images)} images, got {len(words)} ({words}). "
            f"Give one word per line, the query word last."
        )
    segments: list[Segment] = [instruction]
    for index, (word, image) in enumerate(zip(words, images)):
        separator = "" if index == 0 else "\n\n"
        segments += [f"{separator}Word {index + 1}: {word}, ", image]
    segments.append(f"\n\nWord {len(images) + 1}: {words[-1]}, ")
    return Prompt(segments)


def compose_prompt(images: list[Image.Image], words: list[str], instruction: str = COMPOSE_INSTRUCTION) -> Prompt:
    """Images with optional labels, then an optional final request, after `instruction`.

    `words` may be empty, one label per image, or one label per image plus a final request.
    """
    if not images:
        raise ValueError("A composition prompt needs at least one image.")
    if len(words) not in (0, len(images), len(images) + 1):
        raise ValueError(
            f"Got {len(words)} words for {len(images)} images: give none, one label per image ({len(images)}), "
            f"or one label per image plus a final request ({len(images) + 1})."
        )
    segments: list[Segment] = [instruction]
    for index, image in enumerate(images):
        separator = "" if index == 0 else "\n\n"
        label = f"{words[index]}: " if words else ""
        segments += [f"{separator}{label}", image]
    if len(words) == len(images) + 1:
        segments.append(f"\n\n{words[-1]}")
    return Prompt([s for s in segments if not isinstance(s, str) or s])


def build_prompt(preset: str, images: list[Image.Image], words: list[str], custom_instruction: str = "") -> Prompt:
    """The prompt for a preset name: `cobsat_reasoning`, `compose`, or `custom` (your instruction)."""
    blank = [index + 1 for index, word in enumerate(words) if not word.strip()]
    if blank:
        raise ValueError(f"Word {blank[0]} of {len(words)} is empty ({words}); every word needs text (one word per line, "
                         f"blank lines are skipped).")
    if preset == "cobsat_reasoning":
        return cobsat_prompt(images, words)
    if preset == "compose":
        return compose_prompt(images, words)
    if preset == "custom":
        if not custom_instruction.strip():
            raise ValueError("The custom preset needs an instruction: write it in custom_instruction.")
        return compose_prompt(images, words, custom_instruction.rstrip("\n") + "\n\n")
    raise ValueError(f"Unknown prompt preset {preset!r}; choose one of {PRESETS}.")


def parse_words(text: str) -> list[str]:
    """Words from a multiline widget: one per line, blank lines ignored, surrounding spaces trimmed."""
    return [line.strip() for line in text.splitlines() if line.strip()]
