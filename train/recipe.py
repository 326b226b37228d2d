"""What each ThinkDiff variant trains on: turning stored samples into (aligner input, decoder target).

ThinkDiff-LVLM ("random masking", paper.md): for each sample of T generated tokens draw a split
point s uniformly in [1, min(T-1, max_split)]; the aligner sees the features of tokens [:s]; the
frozen T5 decoder must predict the text of tokens [s:], decoded with the VLM's tokenizer (special
tokens skipped) and re-tokenised with T5's (EOS appended, at most `max_target_tokens`), pad
positions ignored (-100). This follows the reference's collater and forward exactly.

ThinkDiff-CLIP (caption split at a word boundary, T5-encoded prefix after the image tokens, the
vision encoder of `thinkdiff_core.vision` in the loop) is a later addition: a batch builder of its
own beside `LvlmBatches`, the T5 encoder kept (`load_decoder(keep_encoder=True)`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from .data import FeatureSample

IGNORE_INDEX = -100
VARIANTS = ("lvlm", "clip")

CLIP_NOT_YET = (
    "The ThinkDiff-CLIP training recipe (variant: clip: BLIP-2 vision tokens from thinkdiff_core.vision plus a "
    "T5-encoded caption prefix) is not wired into train.align yet; it is a later addition to this tool. "
    "Train the LVLM variant now (model.variant: lvlm, features from `python -m train.precompute`)."
)


@dataclass
class LvlmBatches:
    """The LVLM variant's batch builder: random split of each sample's generated tokens."""

    vlm_tokenizer: object
    t5_tokenizer: object
    max_split: int = 128
    max_target_tokens: int = 128
    keep_prefix: bool = False
    """Also decode the text of tokens [:s] (what the aligner saw), for showing held-out examples."""

    @staticmethod
    def usable(sample: FeatureSample) -> bool:
        """A split needs at least one token on each side."""
        return sample.length >= 2

    def split_point(self, length: int, rng: random.Random) -> int:
        return rng.randint(1, min(length - 1, self.max_split))

    def targets(self, token_ids: list[list[int]]) -> tuple[list[str], torch.Tensor]:
        """Texts of the held-back tokens and their T5 labels (pads = -100)."""
        texts = self.vlm_tokenizer.batch_decode(token_ids, skip_special_tokens=True)
        tokens = self.t5_tokenizer(texts, padding="longest", truncation=True, max_length=self.max_target_tokens,
                                   return_tensors="pt")
        return texts, tokens["input_ids"].masked_fill(tokens["input_ids"] == self.t5_tokenizer.pad_token_id, IGNORE_INDEX)

    def __call__(self, samples: list[FeatureSample], rng: random.Random) -> dict:
        splits = [self.split_point(s.length, rng) for s in samples]
        width, hidden = max(splits), samples[0].features.shape[-1]
        features = torch.zeros(len(samples), width, hidden, dtype=samples[0].features.dtype)
        for row, (sample, split) in enumerate(zip(samples, splits)):
            features[row, :split] = sample.features[:split]
        texts, labels = self.targets([s.token_ids[split:].tolist() for s, split in zip(samples, splits)])
        batch = {"features": features, "labels": labels, "splits": splits, "targets": texts,
                 "keys": [s.key for s in samples]}
        if self.keep_prefix:
            batch["prefixes"] = self.vlm_tokenizer.batch_decode(
                [s.token_ids[:split].tolist() for s, split in zip(samples, splits)], skip_special_tokens=True)
        return batch


def feature_mask(batch: dict, device: torch.device | str = "cpu") -> torch.Tensor:
    """1 for the first `splits[b]` positions of row b, 0 for the padding after them.

    Batches carry the split points rather than the mask (and the labels rather than the decoder
    mask, which is `labels != -100`): fewer tensors to pass from the loader workers.
    """
    width = batch["features"].shape[1]
    splits = torch.tensor(batch["splits"], device=device)
    return (torch.arange(width, device=device)[None] < splits[:, None]).long()


def check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"model.variant must be one of {VARIANTS}, got {variant!r}.")
    if variant == "clip":
        raise NotImplementedError(CLIP_NOT_YET)
