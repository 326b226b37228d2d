"""ThinkDiff-CLIP's vision encoder: BLIP-2's EVA ViT-g tower, its preprocessing, and the token recipe.

The reference (ThinkDiff `BlipVisionT5DecoderForConditionalGeneration`) runs transformers'
`Blip2VisionModel` of `Salesforce/blip2-flan-t5-xxl` and takes its `last_hidden_state`: the output of
the 39 ViT blocks after `post_layernorm` (transformers' name for LAVIS's `ln_vision`; LAVIS's EVA ViT-g
itself ends without a norm, BLIP-2 applies `ln_vision` on top). From those 1 + 16x16 tokens it keeps
CLS, bilinearly resizes the 16x16 patch grid to 8x8 (`vision_downsample_factor` 2,
`align_corners=False`) and flattens: 65 tokens of width 1408 per image.

The weights are read from a BLIP-2 folder, a converted vision file or a Hub id by `vision_files`.
Preprocessing is BLIP-2's eval processor (224x224 bicubic resize, CLIP mean/std) through
transformers' PIL image processor, so torchvision is not needed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from transformers import Blip2VisionModel

from .devices import compute_device, resolve_dtype
from .hub import is_hub_id
from .images import ImageInput, as_pil_list
from .processors import blip_pil_image_processor
from .tokens import CLIP_RECIPE, ThinkDiffTokens
from .vision_files import VisionWeights, download_vision_files, read_vision_weights

DOWNSAMPLE_FACTOR = 2


def clip_recipe_tokens(last_hidden_state: torch.Tensor, downsample_factor: int = DOWNSAMPLE_FACTOR) -> torch.Tensor:
    """ViT output `[N, 1 + h*w, D]` -> `[N, 1 + (h/f)*(w/f), D]`: CLS, then the bilinearly shrunk patch grid.

    Exactly the reference: square grid, `F.interpolate(bilinear, align_corners=False)`, row-major
    flatten, CLS first. 16x16 patches -> 65 tokens for factor 2.
    """
    cls, patches = last_hidden_state[:, :1], last_hidden_state[:, 1:]
    side = int(round(patches.shape[1] ** 0.5))
    if side * side != patches.shape[1] or side % downsample_factor:
        raise ValueError(
            f"Expected 1 CLS + a square grid of patches divisible by {downsample_factor}; got {patches.shape[1]} patch "
            f"tokens. The vision tower must see {side}x{side}-patch images of its configured image_size."
        )
    grid = patches.reshape(patches.shape[0], side, side, patches.shape[-1]).permute(0, 3, 1, 2)
    small = side // downsample_factor
    grid = F.interpolate(grid, size=(small, small), mode="bilinear", align_corners=False)
    return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(patches.shape[0], small * small, -1)], dim=1)


def build_vision_model(weights: VisionWeights) -> Blip2VisionModel:
    """A `Blip2VisionModel` that adopts `weights`' tensors (built on the meta device: no second copy)."""
    with torch.device("meta"):
        model = Blip2VisionModel(weights.config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in weights.tensors.items()}
    problems = [f"missing {k}" for k in expected if k not in found][:5]
    problems += [f"unexpected {k}" for k in found if k not in expected][:5]
    problems += [f"{k} has shape {found[k]}, expected {expected[k]}" for k in expected if k in found and found[k] != expected[k]][:5]
    if problems:
        raise ValueError(
            f"The vision tensors of {weights.model_id} do not fit its config (hidden {weights.config.hidden_size}, "
            f"{weights.config.num_hidden_layers} layers): {'; '.join(problems)}. The file is damaged or not a BLIP-2 "
            f"vision tower; re-download or re-convert it."
        )
    model.load_state_dict(weights.tensors, assign=True)
    return model.eval().requires_grad_(False)


class VisionEncoder:
    """BLIP-2's vision tower and image processor: images -> ThinkDiff-CLIP tokens (`CLIP_RECIPE`)."""

    def __init__(self, model: Blip2VisionModel, image_processor, model_id: str,
                 downsample_factor: int = DOWNSAMPLE_FACTOR) -> None:
        self.model = model
        self.image_processor = image_processor
        self.model_id = model_id
        self.downsample_factor = downsample_factor

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], dtype: str | torch.dtype = "auto",
                        device: torch.device | str | None = None) -> "VisionEncoder":
        """Load from a BLIP-2 folder, a converted vision file, or a BLIP-2 Hub id (e.g. `Salesforce/blip2-flan-t5-xxl`;
        only the vision files are downloaded). Stays on the CPU unless `device` is given.

        `dtype` "auto" is bf16 on CUDA (what the reference ran), fp16 on MPS, fp32 on CPU.
        """
        target = compute_device(device)
        local = Path(path).expanduser()
        hub_id = str(path) if not local.exists() and is_hub_id(str(path)) else None
        weights = read_vision_weights(download_vision_files(hub_id) if hub_id else local, device=device,
                                      dtype=resolve_dtype(dtype, target))
        return cls(build_vision_model(weights), blip_pil_image_processor(weights.processor_settings), hub_id or weights.model_id)

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def tokens_per_image(self) -> int:
        side = self.model.config.image_size // self.model.config.patch_size // self.downsample_factor
        return 1 + side * side

    @property
    def device(self) -> torch.device:
        return self.model.post_layernorm.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.post_layernorm.weight.dtype

    def preprocess(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """`[N, 3, S, S]` float pixel values (BLIP-2 eval processing) for N images.

        Images are processed concurrently: the bicubic resize of a photo (PIL, which releases the GIL)
        costs more than the real tower's forward on a GPU, so a batch should not resize one by one.
        """
        pictures = as_pil_list(images)
        if not pictures:
            raise ValueError("No images to encode: connect at least one image.")
        if len(pictures) == 1:
            return self._pixel_values(pictures[0])
        with ThreadPoolExecutor(max_workers=min(len(pictures), os.cpu_count() or 1)) as pool:
            return torch.cat(list(pool.map(self._pixel_values, pictures)))

    def _pixel_values(self, picture: Image.Image) -> torch.Tensor:
        return self.image_processor(images=[picture], return_tensors="pt")["pixel_values"]

    @torch.no_grad()
    def encode_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`[N, 3, S, S]` preprocessed images -> recipe tokens `[N, 65, D]` on the tower's device.

        Training preprocesses in its data workers and calls this in the training process.
        """
        hidden = self.model(pixel_values=pixel_values.to(device=self.device, dtype=self.dtype)).last_hidden_state
        return clip_recipe_tokens(hidden, self.downsample_factor)

    def encode_each(self, images: Sequence[ImageInput]) -> ThinkDiffTokens:
        """One forward over all images; features `[N, 65, D]`, one row per image (training, per-image use)."""
        return ThinkDiffTokens(self.encode_pixels(self.preprocess(images)).cpu(), self.model_id, CLIP_RECIPE)

    def encode(self, images: Sequence[ImageInput]) -> ThinkDiffTokens:
        """The images' tokens in order in one row, `[1, N*65, D]`: what FLUX conditioning prepends to the prompt."""
        each = self.encode_each(images)
        return ThinkDiffTokens(each.features.reshape(1, -1, each.hidden_size), self.model_id, CLIP_RECIPE)
