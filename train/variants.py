"""The two training variants, one object each: what `train.align`, `train.evaluate` and the demo need to
know about a variant, so none of them branches on its name.

A variant owns its frozen parts (the T5 proxy, with its encoder and BLIP-2 tower for CLIP), the
aligner's input size and metadata, what its training data must be, its provenance key and its batch
builder (`train.recipe`). The names are the library's (`thinkdiff_core.variants.SOURCES`, which also
holds the token recipes the pipeline reads); a third variant is one more class here, registered in
`VARIANTS` under its library name.
"""

from __future__ import annotations

from typing import ClassVar

from transformers import AutoTokenizer

from thinkdiff_core.checkpoint import AlignerInfo
from thinkdiff_core.tokens import CLIP_RECIPE, LVLM_RECIPE
from thinkdiff_core.variants import SOURCES

from .data import VLM_TOKENIZER_DIR, read_manifest
from .decoder import ProxyDecoder, load_decoder
from .recipe import ClipBatches, LvlmBatches


def vlm_tokenizer_for(spec: str, override: str | None):
    """The tokenizer that decodes stored token ids: `override`, else the copy saved beside the features."""
    if override:
        return AutoTokenizer.from_pretrained(override)
    return AutoTokenizer.from_pretrained(f"{read_manifest(spec)['folder']}/{VLM_TOKENIZER_DIR}")


class LvlmVariant:
    """ThinkDiff-LVLM: precomputed VLM features (`train.precompute`), decoder without its encoder."""

    name: ClassVar[str] = SOURCES["lvlm"].variant
    provenance_key: ClassVar[str] = "vlm"
    inputs: ClassVar[str] = "features"
    """What the aligner reads, and what to evaluate it with (for error messages)."""
    input_model: ClassVar[str] = "VLM features"
    reference_target_tokens: ClassVar[int] = 128
    """T5 tokens per target in the reference recipe (its `max_txt_len` is 32 for CLIP)."""
    batches_class: ClassVar[type] = LvlmBatches

    @staticmethod
    def load_decoder(decoder: str, vision_encoder: str | None, **kwargs) -> ProxyDecoder:
        return load_decoder(decoder, keep_encoder=False, vision_encoder=None, **kwargs)

    @staticmethod
    def batches(decoder: ProxyDecoder, data: str, vlm_tokenizer: str | None, max_split: int,
                max_prefix_tokens: int, max_target_tokens: int, features: str | None = None,
                masking: str = "random") -> LvlmBatches:
        """`features` null: what `train.precompute --features` recorded; input or both need shards that hold
        the prompt tokens' states."""
        stored = read_manifest(data).get("settings", {}).get("features", "generated")
        features = features or stored
        if features != "generated" and stored == "generated":
            raise ValueError(f"{data} holds generated-token features only, but features={features!r} needs the prompt "
                             f"tokens' states: precompute with `python -m train.precompute --features {features}` "
                             f"(or both), or set data.features to generated.")
        return LvlmBatches(vlm_tokenizer_for(data, vlm_tokenizer), decoder.tokenizer, max_split, max_target_tokens,
                           features=features, masking=masking)

    @staticmethod
    def check_data(data: str) -> dict:
        """The features' manifest, refusing other token recipes (before anything large loads)."""
        manifest = read_manifest(data)
        if manifest.get("token_recipe") != LVLM_RECIPE:
            raise ValueError(f"{data} holds {manifest.get('token_recipe')!r} features; the LVLM variant "
                             f"trains on {LVLM_RECIPE!r} features from `python -m train.precompute`.")
        return manifest

    @classmethod
    def aligner_source(cls, decoder: ProxyDecoder, data: str) -> tuple[AlignerInfo, int]:
        """The aligner's metadata and input size, from the features' manifest."""
        manifest = cls.check_data(data)
        return AlignerInfo(manifest["source_model_id"], LVLM_RECIPE), int(manifest["hidden_size"])

    @staticmethod
    def input_size(decoder: ProxyDecoder, batch: dict) -> int:
        """The width of the stored features (held-out evaluation measures it on a batch)."""
        return batch["features"].shape[-1]


class ClipVariant:
    """ThinkDiff-CLIP: images with captions; the frozen BLIP-2 tower and T5 encoder run in the training process."""

    name: ClassVar[str] = SOURCES["clip"].variant
    provenance_key: ClassVar[str] = "vision_encoder"
    inputs: ClassVar[str] = "vision tokens"
    input_model: ClassVar[str] = "vision encoder"
    reference_target_tokens: ClassVar[int] = 32
    batches_class: ClassVar[type] = ClipBatches

    @staticmethod
    def load_decoder(decoder: str, vision_encoder: str | None, **kwargs) -> ProxyDecoder:
        return load_decoder(decoder, keep_encoder=True, vision_encoder=vision_encoder, **kwargs)

    @staticmethod
    def batches(decoder: ProxyDecoder, data: str, vlm_tokenizer: str | None, max_split: int,
                max_prefix_tokens: int, max_target_tokens: int, features: str | None = None,
                masking: str = "random") -> ClipBatches:
        """Uses the image processor of the tower `decoder` carries. The LVLM ablations have no CLIP meaning."""
        if features is not None or masking != "random":
            raise ValueError(f"data.features and data.masking are ThinkDiff-LVLM ablations; the CLIP variant splits "
                             f"captions (got features={features!r}, masking={masking!r}).")
        return ClipBatches(decoder.tokenizer, decoder.vision.image_processor, max_prefix_tokens, max_target_tokens)

    @staticmethod
    def check_data(data: str) -> None:
        """Images are opened by the data workers: nothing to check before the tower loads."""

    @staticmethod
    def aligner_source(decoder: ProxyDecoder, data: str) -> tuple[AlignerInfo, int]:
        """The aligner reads the tower's tokens: its input size is the tower's width."""
        return AlignerInfo(decoder.vision.model_id, CLIP_RECIPE), decoder.vision.hidden_size

    @staticmethod
    def input_size(decoder: ProxyDecoder, batch: dict) -> int:
        return decoder.vision.hidden_size


TrainingVariant = LvlmVariant | ClipVariant
VARIANTS: dict[str, type[TrainingVariant]] = {v.name: v for v in (LvlmVariant, ClipVariant)}


def training_variant(name: str) -> type[TrainingVariant]:
    """The variant called `name`, or a user error naming the choices."""
    if name not in VARIANTS:
        raise ValueError(f"model.variant must be one of {tuple(VARIANTS)}, got {name!r}.")
    return VARIANTS[name]
