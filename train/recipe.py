"""What each ThinkDiff variant trains on: turning stored samples into (aligner input, decoder target).

ThinkDiff-LVLM ("random masking", paper.md): for each sample of T generated tokens draw a split
point s uniformly in [1, min(T-1, max_split)]; the aligner sees the features of tokens [:s]; the
frozen T5 decoder must predict the text of tokens [s:], decoded with the VLM's tokenizer (special
tokens skipped) and re-tokenised with T5's (EOS appended, at most `max_target_tokens`), pad
positions ignored (-100). This follows the reference's collater and forward exactly.
The paper's ablations change only what the aligner sees: `features` "input" (the prompt tokens'
states instead of tokens [:s]) or "both" (prompt tokens, then tokens [:s]); `masking` "none" (no
split: the aligner sees all T tokens and the decoder must reproduce all of their text).

ThinkDiff-CLIP (the reference's `BlipVisionT5DecoderForConditionalGeneration.forward`): each caption
is cleaned as BLIP's `blip_caption` processor does, then split at a random word boundary; the frozen
T5 encoder reads the first part (at most `max_prefix_tokens`), its output goes AFTER the aligned
vision tokens of the image, and the decoder must predict the second part (at most
`max_target_tokens`, pads -100). Images are preprocessed here, in the data workers; the vision
tower and the T5 encoder run in the training process (`decoder.encoder_states`).

Each builder also names its data: the shards of a source (`shards`), how a shard is read (`read`) and
a raw sample decoded (`decode`), and which samples it can use (`usable`).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import ClassVar

import torch

from thinkdiff_core.variants import FEATURE_SOURCES

from .data import (CaptionedImage, FeatureSample, decode_captioned_image, decode_feature_sample, expand_shards,
                   image_units, tar_samples, unit_records)

IGNORE_INDEX = -100
MASKINGS = ("random", "none")
"""`data.masking`: the paper's random split, or its no-masking ablation."""
CAPTION_MAX_WORDS = 50
"""`blip_caption`'s default `max_words`, which the reference's CLIP config keeps."""
_CAPTION_PUNCTUATION = re.compile(r'[.!"()*#:;~]')
_WHITESPACE_RUNS = re.compile(r"\s{2,}")


def t5_labels(tokenizer, texts: list[str], max_tokens: int) -> torch.Tensor:
    """T5 token ids of `texts` (EOS appended, at most `max_tokens`), right-padded with -100."""
    ids = tokenizer(texts, padding="longest", truncation=True, max_length=max_tokens, return_tensors="pt")["input_ids"]
    return ids.masked_fill(ids == tokenizer.pad_token_id, IGNORE_INDEX)


def clean_caption(caption: str, max_words: int = CAPTION_MAX_WORDS) -> str:
    """BLIP's `blip_caption` processor: lower case; `.!"()*#:;~` become spaces; runs of two or more
    whitespace characters become one space; trailing newline and outer spaces stripped; at most
    `max_words` space-separated words. (A lone tab or newline stays, as in the reference.)"""
    caption = _WHITESPACE_RUNS.sub(" ", _CAPTION_PUNCTUATION.sub(" ", caption.lower()))
    caption = caption.rstrip("\n").strip(" ")
    words = caption.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else caption


def split_caption(caption: str, rng: random.Random) -> tuple[int, str, str]:
    """The reference's `random_split_string`: split on single spaces, draw s uniformly in [1, n-1] and return
    (s, words [:s], words [s:]). A caption of one word (or none) cannot be split: (0, "", caption), so the
    T5 encoder reads only its EOS and the decoder predicts the whole caption."""
    words = caption.split(" ")
    if len(words) <= 1:
        return 0, "", caption
    split = rng.randint(1, len(words) - 1)
    return split, " ".join(words[:split]), " ".join(words[split:])


@dataclass
class LvlmBatches:
    """The LVLM variant's batch builder: random split of each sample's generated tokens."""

    vlm_tokenizer: object
    t5_tokenizer: object
    max_split: int = 128
    max_target_tokens: int = 128
    keep_prefix: bool = False
    """Also decode the text of tokens [:s] (what the aligner saw), for showing held-out examples."""
    features: str = "generated"
    """`FEATURE_SOURCES`: generated tokens [:s], the prompt's tokens, or both (prompt first)."""
    masking: str = "random"
    """`MASKINGS`: a random split s, or none (s = T: all tokens seen, all tokens' text as the target)."""

    SEEN: ClassVar[str] = "aligner saw (tokens [:s])"
    """What `prefixes` holds, as a column title of the printed examples."""
    read = staticmethod(tar_samples)
    decode = staticmethod(decode_feature_sample)

    @staticmethod
    def shards(spec: str, what: str) -> list[str]:
        """Feature shards written by `train.precompute`."""
        return expand_shards(spec, what)

    @staticmethod
    def usable(sample: FeatureSample) -> bool:
        """A split needs at least one token on each side."""
        return sample.length >= 2

    @property
    def recorded(self) -> dict:
        """What the exported aligner's provenance records, so the pipeline feeds it what it saw."""
        return {"features": self.features, "masking": self.masking}

    def __post_init__(self) -> None:
        if self.features not in FEATURE_SOURCES:
            raise ValueError(f"features must be one of {FEATURE_SOURCES}, got {self.features!r}.")
        if self.masking not in MASKINGS:
            raise ValueError(f"data.masking must be one of {MASKINGS}, got {self.masking!r}.")

    def split_point(self, length: int, rng: random.Random) -> int:
        return rng.randint(1, min(length - 1, self.max_split)) if self.masking == "random" else length

    def aligner_input(self, sample: FeatureSample, split: int) -> torch.Tensor:
        """The features the aligner sees for a sample split at `split`."""
        seen = sample.features[:split]
        if self.features == "generated":
            return seen
        if sample.input_features is None:
            raise ValueError(f"sample {sample.key} has no prompt-token features; features={self.features!r} needs "
                             f"shards written by `train.precompute --features {self.features}`.")
        return sample.input_features if self.features == "input" else torch.cat([sample.input_features, seen])

    def targets(self, token_ids: list[list[int]]) -> tuple[list[str], torch.Tensor]:
        """Texts of the held-back tokens and their T5 labels (pads = -100)."""
        texts = self.vlm_tokenizer.batch_decode(token_ids, skip_special_tokens=True)
        return texts, t5_labels(self.t5_tokenizer, texts, self.max_target_tokens)

    def __call__(self, samples: list[FeatureSample], rng: random.Random) -> dict:
        splits = [self.split_point(s.length, rng) for s in samples]
        seen = [self.aligner_input(s, split) for s, split in zip(samples, splits)]
        width, hidden = max(len(rows) for rows in seen), samples[0].features.shape[-1]
        features = torch.zeros(len(samples), width, hidden, dtype=samples[0].features.dtype)
        for row, rows in enumerate(seen):
            features[row, :len(rows)] = rows
        start = [split if self.masking == "random" else 0 for split in splits]
        texts, labels = self.targets([s.token_ids[first:].tolist() for s, first in zip(samples, start)])
        batch = {"features": features, "labels": labels, "splits": [len(rows) for rows in seen], "targets": texts,
                 "keys": [s.key for s in samples]}
        if self.keep_prefix:
            batch["prefixes"] = self.vlm_tokenizer.batch_decode(
                [s.token_ids[:split].tolist() for s, split in zip(samples, splits)], skip_special_tokens=True)
        return batch


@dataclass
class ClipBatches:
    """The CLIP variant's batch builder: BLIP-2 pixel values, and each caption split at a random word boundary.

    A batch holds `pixel_values` [B, 3, S, S] (BLIP-2's processing: the reference's `blip2_image_train`
    is the same 224x224 bicubic resize and CLIP mean/std as its eval processor, no augmentation),
    `prefix_ids` / `prefix_mask` (T5 tokens of each caption's first part, EOS appended, padded),
    `labels` (T5 tokens of the rest, pads -100), `splits` (words in the first part), `targets`.
    """

    t5_tokenizer: object
    image_processor: object
    """BLIP-2's image processor (`VisionEncoder.image_processor`): picklable, no model weights."""
    max_prefix_tokens: int = 32
    max_target_tokens: int = 32
    max_words: int = CAPTION_MAX_WORDS
    keep_prefix: bool = False
    """Also return the first parts' text (`prefixes`), for showing held-out examples."""

    SEEN: ClassVar[str] = "image + caption start (T5 encoder)"
    recorded: ClassVar[dict] = {}
    """Nothing beyond the recipe for the aligner's provenance (the LVLM ablations are not CLIP's)."""
    read = staticmethod(unit_records)
    decode = staticmethod(decode_captioned_image)

    @staticmethod
    def shards(spec: str, what: str) -> list:
        """An image source: CC-SBU/LAION tar shards, or a folder of images with captions.jsonl."""
        return image_units(spec, what=what)

    @staticmethod
    def usable(sample: CaptionedImage) -> bool:
        """An image that opened, with a caption (the reference's pipeline drops samples without one)."""
        return sample.image is not None and sample.caption is not None

    def __call__(self, samples: list[CaptionedImage], rng: random.Random) -> dict:
        parts = [split_caption(clean_caption(s.caption, self.max_words), rng) for s in samples]
        prefixes, targets = [p[1] for p in parts], [p[2] for p in parts]
        prefix = self.t5_tokenizer(prefixes, padding="longest", truncation=True, max_length=self.max_prefix_tokens,
                                   return_tensors="pt")
        pixel_values = self.image_processor(images=[s.image for s in samples], return_tensors="pt")["pixel_values"]
        batch = {"pixel_values": pixel_values, "prefix_ids": prefix["input_ids"],
                 "prefix_mask": prefix["attention_mask"], "labels": t5_labels(self.t5_tokenizer, targets, self.max_target_tokens),
                 "splits": [p[0] for p in parts], "targets": targets, "keys": [s.key for s in samples]}
        if self.keep_prefix:
            batch["prefixes"] = prefixes
        return batch


def feature_mask(batch: dict, device: torch.device | str = "cpu") -> torch.Tensor:
    """1 for the first `splits[b]` positions of row b, 0 for the padding after them.

    Batches carry the split points rather than the mask (and the labels rather than the decoder
    mask, which is `labels != -100`): fewer tensors to pass from the loader workers.
    """
    width = batch["features"].shape[1]
    splits = torch.tensor(batch["splits"], device=device)
    return (torch.arange(width, device=device)[None] < splits[:, None]).long()

